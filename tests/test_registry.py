"""The method registry (the registry package) and the scikit-learn estimator shape of every probe."""

import numpy as np
import pytest
from sklearn.base import clone

import registry
from common import UserError
from probes import CCS, CRA, LAT, MMS, CRAHeads, LatStim, LogReg, MMSHeads, RandomDirection, ZeroShot, load_probe, make_probe
from common.metrics import Metrics
from registry import Kind
from synthetic import planted

LAYER = 2
ESTIMATORS = {"mms": MMS(layer=LAYER), "lat": LAT(layer=LAYER, seed=3), "lat-stim": LatStim(top_k=2),
              "lat-stim-1": LatStim(view="plain", top_k=2), "ccs": CCS(layer=LAYER, restarts=4),
              "cra": CRA(layer=LAYER, alpha=0.5), "logreg": LogReg(layer=LAYER, C=0.3),
              "random": RandomDirection(layer=LAYER, seed=1), "zero-shot": ZeroShot(),
              "mms-heads": MMSHeads(top_k=2), "cra-heads": CRAHeads(top_k=2)}


@pytest.fixture(scope="module")
def data():
    kwargs = dict(strength=6.0, signal_layers=(1, 2, 3), n_heads=4, signal_heads=((2, 1), (3, 3)))
    train = planted(seed=0, **kwargs)
    return train, planted(seed=1, split="test", direction=train.direction, **kwargs)


def test_every_store_method_has_an_estimator_here():
    assert set(ESTIMATORS) == set(registry.store_methods())
    assert all(type(ESTIMATORS[name]) is registry.get(name).estimator for name in ESTIMATORS)


@pytest.mark.parametrize("method", sorted(ESTIMATORS))
def test_every_probe_fits_through_clone_and_get_params(method, data):
    train, test = data
    prototype = ESTIMATORS[method]
    params = prototype.get_params()
    copy = clone(prototype)
    assert copy is not prototype and copy.get_params() == params and copy.method == method
    fitted = copy.fit(train.source())
    assert fitted is copy and not hasattr(prototype, "fitted_")  # clone left the prototype unfitted
    assert fitted.fitted.params == params and fitted.get_params() == params
    metrics = fitted.score(test.source(), n_bootstrap=0)
    assert isinstance(metrics, Metrics)
    assert fitted.decision_function(test.source()).shape == (len(test.labels.is_best),)
    if method not in ("random", "zero-shot"):  # the planted direction is found; chance and log-likelihoods are not
        assert metrics.accuracy > 0.95
    # a refit from the same parameters is the same probe
    again = type(prototype)(**params).fit(train.source())
    np.testing.assert_array_equal(again.decision_function(test.source()), fitted.decision_function(test.source()))
    assert again.temperature_ == fitted.temperature_


def test_set_params_and_clone_change_only_the_unfitted(data):
    train, _ = data
    probe = LAT(layer=1).set_params(layer=LAYER, seed=5)
    assert probe.get_params() == {"layer": LAYER, "normalize": "center", "seed": 5}
    probe.fit(train.source())
    with pytest.raises(UserError, match="a fitted lat probe is immutable"):
        probe.set_params(seed=6)
    with pytest.raises(UserError, match="immutable"):
        probe.layer = 3
    first = probe.fitted_
    probe.fit(train.source())  # fitting again starts afresh (scikit-learn's contract), same parameters
    assert probe.fitted_ is not first
    np.testing.assert_array_equal(probe.decision_function(train.source()), first.score(train.source()))
    other = clone(probe).set_params(layer=3)
    assert other.get_params()["layer"] == 3 and probe.layer == LAYER and not hasattr(other, "fitted_")
    with pytest.raises(UserError, match="not fitted yet"):
        other.decision_function(train.source())


def test_saved_probe_loads_as_the_same_estimator(data, tmp_path):
    train, test = data
    probe = LatStim(view="plain", top_k=2, seed=2).fit(train.source())
    probe.save(tmp_path / "p", notes={"validation_pairs": 12})
    loaded = load_probe(tmp_path / "p")
    assert type(loaded) is LatStim and loaded.method == "lat-stim-1" and loaded.get_params() == probe.get_params()
    assert loaded.notes_ == {"validation_pairs": 12}
    np.testing.assert_array_equal(loaded.decision_function(test.source()), probe.decision_function(test.source()))


def test_sources_can_be_paths_stores_or_lists_of_views(tmp_path):
    from actstore import open_store
    from synthetic import write_stores

    urls = write_stores(planted(seed=4, layers=(0, 1, 2)), tmp_path)
    by_path = MMS(layer=1).fit(urls["plain"]).decision_function(urls["plain"])
    by_store = MMS(layer=1).fit(open_store(urls["plain"])).decision_function([open_store(urls["plain"])])
    by_views = CRA(layer=1).fit([urls["yes"], urls["no"]])
    np.testing.assert_array_equal(by_path, by_store)
    assert by_views.trained_on_["dataset"] == "planted"
    with pytest.raises(UserError, match="cannot read activations from int"):
        MMS(layer=1).fit(3)


def test_make_probe_takes_only_the_options_a_method_has():
    assert make_probe("ccs", 3, seed=2, alpha=0.5, top_k=4).get_params() == CCS(layer=3, seed=2).get_params()
    assert make_probe("lat-stim-1", top_k=4).get_params() == {"view": "plain", "top_k": 4, "val_fraction": 0.3, "seed": 0}
    with pytest.raises(UserError, match="lat-stim chooses its own layers"):
        make_probe("lat-stim", 3)
    with pytest.raises(UserError, match=r"unknown method 'lora' \(choose from ccs, cra"):
        make_probe("lora", 3)


def test_kinds_and_what_reads_them():
    kinds = {name: spec.kind for name, spec in registry.all_methods().items()}
    assert {n for n, k in kinds.items() if k is Kind.LIVE_TRAINED} == {"lora", "prompt-tuning"}
    assert {n for n, k in kinds.items() if k is Kind.LIVE_UNTRAINED} == {"few-shot"}
    assert {n for n, k in kinds.items() if k is Kind.STORE_BASELINE} == {"zero-shot"}
    assert set(registry.benchmark_methods()) == set(kinds)  # per-head methods too: their runs extract heads
    assert [n for n, s in registry.all_methods().items() if not s.counts_as_capability] == ["random"]
    assert {n for n, s in registry.all_methods().items() if s.takes_layer} == {"mms", "lat", "ccs", "cra", "logreg",
                                                                                "random"}
    assert registry.names(lambda s: s.base_model_baseline) == ("zero-shot", "few-shot")
    with pytest.raises(UserError, match="unknown method 'pca'"):
        registry.get("pca")


def test_live_methods_train_with_their_registered_learning_rate():
    from finetune.train import TrainConfig

    rates = {m: TrainConfig(method=m, model="tiny-random", dataset="toy").resolved_learning_rate
             for m in ("lora", "prompt-tuning")}
    assert rates == {"lora": 2e-4, "prompt-tuning": 5.2e-3}  # the paper's settings
    assert TrainConfig(method="lora", model="tiny-random", dataset="toy", learning_rate=0.1).resolved_learning_rate == 0.1


def test_method_sets_paper_and_all():
    # the paper's head-based mms and cra, each beside the residual-stream method that stands in for it
    paper = ("zero-shot", "few-shot", "lora", "prompt-tuning", "mms-heads", "mms", "lat-stim-1", "lat-stim",
             "cra-heads", "cra", "ccs")
    assert registry.expand_methods("paper") == paper
    assert registry.expand_methods("all") == paper + ("lat", "logreg", "random") == registry.expand_methods("paper,lat,all")
    assert registry.expand_methods("mms, zero-shot,mms") == ("mms", "zero-shot")
    # every method `genies run` runs either has the paper's column (the same method) or says why not
    counterparts = registry.paper_counterparts()
    assert all((m in counterparts) != bool(registry.get(m).paper_note) for m in registry.benchmark_methods())
    assert {counterparts[m] for m in paper if m in counterparts} == {
        "zero_shot", "few_shot", "lora_fine_tuning", "prompt_tuning", "mms", "lat_stim_1", "lat_stim_2", "cra"}
    assert list(counterparts) == ["zero-shot", "few-shot", "lora", "prompt-tuning", "mms-heads", "lat-stim-1",
                                  "lat-stim", "cra-heads"]
    # a method that only stands in for the paper's says why its numbers are not the paper's
    assert "chooses its sign on the target" in registry.get("ccs").paper_note
