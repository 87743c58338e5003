"""Stores by name, "no store here" with suggestions, and stores as pandas / xarray objects."""

import numpy as np
import pytest
from click.testing import CliRunner

from actstore import open_store
from common import UserError
from cli import actstore, probes
from conftest import example, write_distribution
from test_bad_input import fails

EXAMPLES = [example(f"Question {i}?\n### Response:\n", {f"right {i}": 1.0, f"wrong answer {i}": 0.0, "Pass.": 0.0})
            for i in range(5)]


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    root = tmp_path_factory.mktemp("named")
    data = write_distribution(root / "data", "good", train=EXAMPLES, test=EXAMPLES)
    args = ["extract", "--model", "tiny-random", "--dataset", "good", "--data-dir", str(data), "--out", str(root / "s"),
            "--layers", "0,2,4", "--limit", "4", "--views", "plain,yes,no", "--block-size", "4", "--no-progress"]
    result = CliRunner().invoke(actstore, args)
    assert result.exit_code == 0, result.output
    return {"root": str(root / "s"), "url": f"{root}/s/tiny-random/good/train.plain.zarr"}


def test_probes_and_info_take_store_names(extracted):
    named = ["--store-root", extracted["root"], "--limit", "4"]
    by_name = CliRunner().invoke(probes, ["fit", "--method", "ccs", "--layer", "2", "--train", "tiny-random/good/train/yes",
                                          "--eval", "tiny-random/good/test", "--bootstrap", "0", "--json", *named])
    by_path = CliRunner().invoke(probes, ["fit", "--method", "ccs", "--layer", "2", "--train",
                                          extracted["url"].replace(".plain.", ".yes."), "--eval",
                                          extracted["url"].replace("train.", "test."), "--bootstrap", "0", "--json"])
    assert by_name.exit_code == 0, by_name.output
    assert by_name.output == by_path.output
    info = CliRunner().invoke(actstore, ["info", "tiny-random/good/test/no", *named])
    assert info.exit_code == 0 and "test.no.zarr" in info.output, info.output


def test_no_store_here_names_the_closest_ones(extracted):
    fails(probes, ["fit", "--method", "mms", "--layer", "2", "--train", "tiny-random/god/train",
                          "--store-root", extracted["root"], "--bootstrap", "0"],
                 "train.plain.zarr: no activation store here", "closest under", "tiny-random/good/train.plain.zarr")
    fails(actstore, ["info", "tiny-random/goood/test/yes", "--store-root", extracted["root"], "--limit", "4"],
          "no activation store here", "tiny-random/good/test.yes.zarr")


def test_store_as_frame_and_xarray_with_texts(extracted):
    store = open_store(extracted["url"])
    frame = store.frame()
    assert len(frame) == 12 and list(frame["prompt_text"][:3]) == [EXAMPLES[0]["prompt"]] * 3
    assert list(frame["response_text"][:3]) == list(EXAMPLES[0]["responses"])
    assert frame["is_best"].sum() == 4 and (frame["loglik"] < 0).all()
    array = store.to_xarray(layers=[2, 4])
    assert array.dims == ("sequence", "layer", "hidden") and array.shape == (12, 2, 64)
    np.testing.assert_array_equal(array.sel(layer=4).values, store.activations(4))
    assert list(array["response_text"].values[:2]) == ["right 0", "wrong answer 0"]
    assert array.attrs["dataset"] == "good" and array.attrs["model"] == "tiny-random"
    best = array.where(array.is_best, drop=True)
    assert best.sizes["sequence"] == 4


def test_damaged_text_chunk_is_caught(extracted, tmp_path):
    import shutil

    copy = tmp_path / "train.limit4.plain.zarr"
    shutil.copytree(extracted["url"], copy)
    (copy / "response_text" / "c" / "1").unlink()
    with pytest.raises(UserError, match="array response_text block 1"):
        open_store(str(copy)).frame()


def test_missing_notebook_package_is_one_line(extracted, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "xarray", None)  # what an environment without xarray imports
    with pytest.raises(UserError, match=r"needs xarray, which is not installed: pip install 'genies-toolkit\[notebook\]'"):
        open_store(extracted["url"]).to_xarray()
