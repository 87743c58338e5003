"""A layer that is the same vector for every sequence (layer 0 at the last token: the embedding of the same
token) is left out of sweeps and layer choice, and a fit asked for there is refused in one line."""

import csv

import numpy as np
import pytest
from click.testing import CliRunner

from cli import actstore, probes
from conftest import example, write_distribution
from probes.constant_layers import is_constant
from test_bad_input import fails

EXAMPLES = [example(f"Name a colour number {i}.\n### Response:\n", {f"red {i}": 1.0, f"blue {i}": 0.0})
            for i in range(10)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    base = tmp_path_factory.mktemp("constant")
    data = write_distribution(base / "data", "colours", train=EXAMPLES)
    result = CliRunner().invoke(actstore, ["extract", "--model", "tiny-random", "--dataset", "colours", "--split",
                                           "train", "--data-dir", str(data), "--out", str(base / "s"),
                                           "--no-progress"])
    assert result.exit_code == 0, result.output
    return base / "s" / "tiny-random" / "colours" / "train.plain.zarr"


def test_layer_0_at_the_last_token_is_constant_and_the_others_are_not(store):
    from actstore.store import open_store

    opened = open_store(str(store))
    assert is_constant(opened.activations(0))
    assert not any(is_constant(opened.activations(layer)) for layer in opened.meta["layers"][1:])


def test_a_sweep_leaves_the_constant_layer_out_and_says_so(store, tmp_path):
    result = CliRunner().invoke(probes, ["sweep", "--methods", "mms,logreg", "--train", str(store), "--out",
                                         str(tmp_path / "sweep")])
    assert result.exit_code == 0, result.output
    with (tmp_path / "sweep" / "sweep.csv").open() as handle:
        layers = {int(row["layer"]) for row in csv.DictReader(handle)}
    assert 0 not in layers and layers  # the other layers are swept, and one of them is chosen
    assert "layer(s) 0 left out: the same vector for every training sequence" in result.output


def test_a_fit_at_a_constant_layer_is_refused(store):
    fails(probes, ["fit", "--method", "mms", "--layer", "0", "--train", store],
          "layer 0 is the same vector for every sequence")


def test_near_constant_rows_are_constant_and_small_real_spread_is_not():
    rng = np.random.default_rng(0)
    row = rng.standard_normal(64)
    assert is_constant(np.tile(row, (20, 1)))
    assert is_constant(np.tile(row, (20, 1)) + 1e-9 * rng.standard_normal((20, 64)))  # float rounding
    assert not is_constant(np.tile(row, (20, 1)) + 1e-2 * rng.standard_normal((20, 64)))
    assert not is_constant(row[None, :])  # one sequence: nothing to tell
