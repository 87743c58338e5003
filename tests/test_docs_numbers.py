"""Numbers the docs quote from an example run are the run's own: each is followed by a marker naming where it
comes from, and this test reads it there.

A marker is an HTML comment (invisible on the site) right after the number:

    0.499<!--from example-compare/compare.csv kind=mean method=ccs run=smollm2-135m statistic=generalization_accuracy high-->
    1,044<!--from example-genies200-smollm2/run.json phase_seconds.extraction-->

``FILE`` is under docs/. A CSV marker's ``key=value`` words pick exactly one row and its last word is the column;
a JSON marker's rest is a dotted path. The quoted number must equal the value rounded to the quoted digits
(thousands separators allowed); ``count:`` before a CSV column counts the rows picked instead (``count:rows``).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from conftest import REPO

DOCS = REPO / "docs"
MARKED = re.compile(r"(?P<number>-?\d[\d,]*(?:\.\d+)?)<!--from (?P<where>[^>]*?)-->")
PAGES_WITH_RUN_NUMBERS = ("compare.md",)  # pages whose prose quotes example runs: every such number is marked


def source_value(where: str, docs: Path = DOCS) -> float:
    """The value a marker names (a UserError-free AssertionError naming the marker when it names none)."""
    path, rest = where.split(maxsplit=1)
    file = docs / path
    assert file.is_file(), f"marker names {path}, which is not under docs/"
    if file.suffix == ".json":  # the rest is one dotted path (its keys may hold spaces)
        value = json.loads(file.read_text())
        for part in rest.split("."):
            value = value[part]
        return float(value)
    *filters, column = rest.split()
    wanted = dict(word.split("=", 1) for word in filters)
    with file.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if all(row.get(k) == v for k, v in wanted.items())]
    if column.startswith("count:"):
        return float(len(rows))
    assert len(rows) == 1, f"{where}: picks {len(rows)} rows, not one"
    return float(rows[0][column])


def mismatches(text: str, docs: Path = DOCS) -> list[str]:
    """Every marked number of ``text`` that differs from its source, as 'quoted != value (marker)'."""
    found = []
    for match in MARKED.finditer(text):
        quoted = match["number"].replace(",", "")
        digits = len(quoted.split(".")[1]) if "." in quoted else 0
        value = source_value(match["where"], docs)
        if round(value, digits) != float(quoted) and f"{value:.{digits}f}" != quoted:
            found.append(f"{match['number']} != {value!r} ({match['where']})")
    return found


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_every_marked_number_equals_its_run(page):
    assert mismatches((DOCS / page).read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("page", PAGES_WITH_RUN_NUMBERS)
def test_the_pages_that_quote_runs_mark_their_numbers(page):
    assert len(MARKED.findall((DOCS / page).read_text(encoding="utf-8"))) >= 10


def test_a_quoted_number_that_differs_from_its_run_fails(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps({"phase_seconds": {"extraction": 1044.3}}))
    (tmp_path / "run" / "table.csv").write_text("method,estimate\nmms,0.4944\nlat,0.48\n")
    good = ("1,044<!--from run/run.json phase_seconds.extraction--> s; mms 0.49<!--from run/table.csv method=mms "
            "estimate-->; 2<!--from run/table.csv count:rows--> methods")
    assert mismatches(good, tmp_path) == []
    assert mismatches("0.50<!--from run/table.csv method=mms estimate-->", tmp_path) == [
        "0.50 != 0.4944 (run/table.csv method=mms estimate)"]
    assert mismatches("1,045<!--from run/run.json phase_seconds.extraction-->", tmp_path)
    with pytest.raises(AssertionError, match="picks 2 rows"):
        mismatches("0.5<!--from run/table.csv estimate-->", tmp_path)


def test_the_compare_table_quoted_in_compare_md_is_the_one_compare_csv_holds():
    """The terminal's table of `genies compare` in docs/compare.md, cell by cell against example-compare/compare.csv."""
    text = (DOCS / "compare.md").read_text(encoding="utf-8")
    block = text.split("The terminal's part of `genies compare`", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    header, *lines = block.strip().splitlines()
    assert header.split()[:3] == ["method", "n", "pearson_r"] and len(lines) >= 8
    with (DOCS / "example-compare" / "compare.csv").open(newline="") as handle:
        pairs = {(r["method"], r["statistic"]): r for r in csv.DictReader(handle) if r["kind"] == "pair"}
    columns = {"pearson_r": ("pearson_r", "estimate"), "r_low": ("pearson_r", "low"), "r_high": ("pearson_r", "high"),
               "mean_a": ("mean_a", "estimate"), "mean_b": ("mean_b", "estimate"),
               "difference": ("mean_difference_b_minus_a", "estimate"),
               "difference_low": ("mean_difference_b_minus_a", "low"),
               "difference_high": ("mean_difference_b_minus_a", "high")}
    for line in lines:
        cells = dict(zip(header.split(), line.split()))
        for column, (statistic, field) in columns.items():
            quoted = cells[column]
            value = float(pairs[(cells["method"], statistic)][field])
            assert f"{value:.{len(quoted.split('.')[1])}f}" == quoted, (cells["method"], column, quoted, value)
