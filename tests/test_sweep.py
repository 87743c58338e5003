"""Layer sweeps: every method at every layer, best layer chosen on the source's validation split only."""

from dataclasses import replace

import numpy as np
import pytest

from common import UserError
from probes.commands import best_layer_rows, parse_methods, parse_sweep_layers, sweep_command
from probes.sources import StoreSource
from common.metrics import Metrics
from probes.sweep import CSV_COLUMNS, VALIDATION, SweepConfig, SweepRow, best_layers, read_csv, run_sweep
from synthetic import planted, write_stores

LAYERS = (0, 1, 2, 3, 4)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Train (and its test split) carry a strong signal at layer 1 and a weak one at layer 3; the eval
    store carries it at layer 3 only. A sweep that peeked at the eval store would pick layer 3; the
    choice on the source's validation split is layer 1.
    """
    root = tmp_path_factory.mktemp("sweep")
    source_signal = {1: 6.0, 3: 1.5}
    train = planted(seed=0, layers=LAYERS, strength=source_signal)
    test = planted(seed=1, split="test", layers=LAYERS, strength=source_signal, direction=train.direction)
    shifted = planted(seed=2, dataset="shifted", split="test", layers=LAYERS, signal_layers=(3,), strength=6.0,
                      direction=train.direction)
    return {name: write_stores(data, root) for name, data in [("train", train), ("test", test), ("shifted", shifted)]}


def test_sweep_rows_and_best_layer_from_validation_only(stores):
    methods = parse_methods("mms,lat,ccs,cra,logreg")
    train = StoreSource(stores["train"]["plain"])
    evals = [("source test", train.test_split()), ("eval", StoreSource(stores["shifted"]["plain"]))]
    result = run_sweep(train, evals, methods, list(LAYERS), SweepConfig(n_bootstrap=0))
    assert len(result.rows) == len(methods) * len(LAYERS) * 3
    assert result.eval_names == ["planted/train validation", "planted/test", "shifted/test"]
    assert {b.method: b.layer for b in result.best} == {m.method: 1 for m in methods}
    for best in result.best:
        assert best.validation_accuracy > 0.95
    by_key = {(r.method, r.layer, r.eval): r for r in result.rows}
    for method in ("mms", "cra", "logreg"):
        # The eval store is best at layer 3, yet that never moved the choice.
        eval_accuracy = {layer: by_key[(method, layer, "shifted/test")].accuracy for layer in LAYERS}
        assert max(eval_accuracy, key=eval_accuracy.get) == 3
        assert eval_accuracy[1] < 0.75
        assert by_key[(method, 1, "planted/test")].accuracy > 0.95
    assert {r.fitted_on for r in result.rows} == {"train-70%"}


def validation_row(method: str, layer: int, accuracy: float, se: float | None = None, pairs: int = 100) -> SweepRow:
    metrics = Metrics(accuracy, None, None, None, None, None, pairs, None, se)
    return SweepRow.scored(method, layer, f"planted/train {VALIDATION}", VALIDATION, metrics, 1.0, "train-70%", 0.0)


def test_chance_baseline_takes_the_middle_layer_not_the_luckiest():
    accuracy = {0: 0.9, 1: 0.5, 2: 0.4, 3: 0.6, 4: 0.55}  # layer 0 looks best on validation
    methods = parse_methods("mms,random")
    rows = [validation_row(m.method, layer, a) for m in methods for layer, a in accuracy.items()]
    best = {b.method: (b.layer, b.validation_accuracy) for b in best_layers(rows, methods)}
    assert best == {"mms": (0, 0.9), "random": (2, 0.4)}


def test_validation_split_is_carved_from_train_examples(stores):
    train = StoreSource(stores["train"]["plain"])
    result = run_sweep(train, [], parse_methods("mms"), [1], SweepConfig(n_bootstrap=0, val_fraction=0.25))
    (row,) = result.rows
    assert row.role == "validation"
    assert row.n_examples == 30  # 25% of the 120 training examples
    assert row.n_pairs == 60


def test_refit_uses_all_training_data(stores):
    train = StoreSource(stores["train"]["plain"])
    evals = [("eval", StoreSource(stores["shifted"]["plain"]))]
    result = run_sweep(train, evals, parse_methods("mms"), [1], SweepConfig(n_bootstrap=0, refit=True))
    assert [r.fitted_on for r in result.rows] == ["train-70%", "train"]


def test_sweep_command_writes_csv_and_png(stores, tmp_path):
    result, csv_path, png_path = sweep_command(parse_methods("mms,logreg"), stores["train"]["plain"], (stores["shifted"]["plain"],),
                                               tmp_path / "out", "0,1:2", SweepConfig(n_bootstrap=20))
    rows = read_csv(csv_path)
    assert csv_path.read_text().splitlines()[0].split(",") == CSV_COLUMNS
    assert len(rows) == 2 * 3 * 3  # methods x layers x (validation, source test, eval)
    assert sorted({r.layer for r in rows}) == [0, 1, 2]
    assert all(0 <= r.accuracy <= 1 and r.accuracy_ci_low <= r.accuracy + 1e-9 for r in rows)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png_path.stat().st_size > 10_000
    best = best_layer_rows(result)
    assert [b["method"] for b in best] == ["mms", "logreg"]
    assert best[0]["best_layer"] == 1 and "shifted/test" in best[0] and "planted/test" in best[0]


def test_sweep_is_deterministic(stores):
    def run():
        train = StoreSource(stores["train"]["plain"])
        return run_sweep(train, [], parse_methods("lat,ccs,logreg"), [1, 2], SweepConfig(n_bootstrap=50)).rows

    first, second = run(), run()
    for a, b in zip(first, second):
        assert replace(a, fit_seconds=0) == replace(b, fit_seconds=0)


def test_sweep_refuses_methods_without_layers_and_bad_layers(stores, tmp_path):
    with pytest.raises(UserError, match="lat-stim choose their own"):
        sweep_command(parse_methods("mms,lat-stim"), stores["train"]["plain"], (), tmp_path)
    with pytest.raises(UserError, match="layer 9 is out of range"):
        sweep_command(parse_methods("mms"), stores["train"]["plain"], (), tmp_path, "0,9")
    assert parse_sweep_layers("all", [0, 1, 2]) == [0, 1, 2]
    assert parse_sweep_layers("all", [0, 10, 20]) == [0, 10, 20]
    assert parse_sweep_layers("0,20", [0, 10, 20]) == [0, 20]
    with pytest.raises(UserError, match="layer 1 is not in the training stores"):
        parse_sweep_layers("0:2", [0, 2])


def test_sweep_checks_views_of_every_store_before_fitting(stores, tmp_path):
    plain_only = planted(seed=5, dataset="plain_only", split="test", views=("plain",), layers=LAYERS)
    urls = write_stores(plain_only, tmp_path)
    with pytest.raises(UserError, match="plain_only/test: missing view"):
        sweep_command(parse_methods("mms,cra"), stores["train"]["plain"], (urls["plain"],), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_sweep_scores_match_single_fits(stores):
    """A sweep row equals what fitting that method on the same split gives."""
    from probes import make_probe
    from probes.labels import split_by_example

    train = StoreSource(stores["train"]["plain"])
    shifted = StoreSource(stores["shifted"]["plain"])
    result = run_sweep(train, [("eval", shifted)], parse_methods("cra"), [1], SweepConfig(n_bootstrap=0))
    fit_rows, _ = split_by_example(train.labels, 0.3, 0)
    probe = make_probe("cra", 1).fit(train.subset(fit_rows))
    expected = probe.score(shifted, n_bootstrap=0)
    row = next(r for r in result.rows if r.eval == "shifted/test")
    assert np.isclose(row.accuracy, expected.accuracy) and np.isclose(row.brier, expected.brier)


def test_near_ties_resolve_to_the_middle_layer_within_one_standard_error():
    methods = parse_methods("mms")

    def rows(accuracy, se=0.02, pairs=150):
        return [validation_row("mms", layer, a, se, pairs) for layer, a in enumerate(accuracy)]

    # best 0.81 at layer 1; layers 1-4 are within 0.02 of it: the middle of 1..4 is layer 3, not the argmax
    (best,) = best_layers(rows([0.5, 0.81, 0.80, 0.795, 0.80, 0.6]), methods)
    assert (best.layer, best.near_ties, best.validation_pairs, best.small_validation) == (3, (1, 2, 3, 4), 150, False)
    assert best.validation_accuracy == 0.795
    # a clear winner stays the winner; without a standard error only exact ties are near-ties
    (best,) = best_layers(rows([0.5, 0.6, 0.9, 0.6], se=0.01, pairs=30), methods)
    assert (best.layer, best.near_ties, best.small_validation) == (2, (2,), True)
    assert "30 pairs SMALL" in best.describe()
    (best,) = best_layers(rows([0.7, 0.8, 0.8, 0.6], se=None), methods)
    assert (best.layer, best.near_ties) == (2, (1, 2))  # the deeper of two middles, as for the chance baseline
