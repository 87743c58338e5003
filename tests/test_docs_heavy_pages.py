"""The docs test's heaviest pages (tests/test_docs.py runs the others): every block runs as written."""

import pytest

import test_docs


@pytest.mark.parametrize("page", test_docs.page_params(test_docs.HEAVY_PAGES))
def test_the_heavy_pages_code_runs_as_written(page, tmp_path, monkeypatch, request):
    assert test_docs.runnable(page)
    test_docs.run_page_as_written(page, tmp_path, monkeypatch, request)
