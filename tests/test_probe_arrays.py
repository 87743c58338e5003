"""Probes as real scikit-learn estimators on arrays: fit(X, y, groups), pipelines, model selection."""

import warnings

import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

import registry
from actstore.store import open_store
from actstore.store.notebook import xy_order
from probes import MMS, LogReg, make_probe, xy
from probes.arrays import ArrayInputError, NotFitted
from synthetic import planted, write_stores

LAYER = 2
SHAPE = dict(strength=1.2, n_heads=3, head_dim=4, signal_heads=((2, 0), (3, 2)))
PARAMS = {"ccs": {"restarts": 2}, "lat-stim": {"top_k": 2}, "lat-stim-1": {"top_k": 2}, "mms-heads": {"top_k": 2},
          "cra-heads": {"top_k": 2}}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    train = planted(seed=0, **SHAPE)
    test = planted(seed=1, split="test", direction=train.direction, **SHAPE)
    return write_stores(train, root), write_stores(test, root)


def test_cross_val_score_of_a_pipeline_with_group_folds(stores):
    train, _ = stores
    X, y, groups = open_store(train["plain"]).xy(LAYER)
    folds = GroupKFold(5)
    accuracy = cross_val_score(make_pipeline(StandardScaler(), MMS(normalize="none")), X, y, groups=groups, cv=folds)
    # each fold by hand: the store's own pairing (explicit groups) on the standardized training rows
    expected = []
    for fit_rows, held_rows in folds.split(X, y, groups):
        scaler = StandardScaler().fit(X[fit_rows])
        probe = MMS(normalize="none").fit(scaler.transform(X[fit_rows]), y[fit_rows], groups=groups[fit_rows])
        expected.append(probe.score(scaler.transform(X[held_rows]), y[held_rows], groups[held_rows]))
    np.testing.assert_allclose(accuracy, expected)
    assert 0.6 < accuracy.mean() < 1.0  # a real signal, not a solved problem: a wrong pairing would show


def test_grid_search_over_a_method_parameter(stores):
    train, test = stores
    X, y, groups = open_store(train["plain"]).xy(LAYER)
    grid = {"C": [1e-4, 1.0]}
    search = GridSearchCV(LogReg(), grid, cv=GroupKFold(4)).fit(X, y, groups=groups)
    by_hand = {c: cross_val_score(LogReg(C=c), X, y, groups=groups, cv=GroupKFold(4)).mean() for c in grid["C"]}
    assert search.best_params_["C"] == max(by_hand, key=by_hand.get)
    assert search.best_score_ == pytest.approx(max(by_hand.values()))
    X_test, y_test, groups_test = open_store(test["plain"]).xy(LAYER)
    refit = LogReg(C=search.best_params_["C"]).fit(X, y, groups=groups)
    assert search.score(X_test, y_test) == pytest.approx(refit.score(X_test, y_test, groups_test))


@pytest.mark.parametrize("method", sorted(registry.store_methods()))
def test_arrays_from_stores_fit_the_probe_the_stores_fit(method, stores):
    """Every method: fit on xy's arrays, score arrays == fit on the stores, score the stores."""
    train, test = stores
    layer = LAYER if registry.get(method).takes_layer else None
    on_stores = make_probe(method, layer, **PARAMS.get(method, {})).fit(train["plain"])
    # in the stores' row order (xy's order, put back), so that order-sensitive optimizers (ccs) see the same rows
    X, y, groups = xy(train["plain"], method, layer)
    back = np.argsort(_xy_rows(train["plain"], groups, y))
    on_arrays = make_probe(method, layer, **PARAMS.get(method, {})).fit(X[back], y[back], groups=groups[back])
    X_test, y_test, groups_test = xy(test["plain"], method, layer)
    np.testing.assert_allclose(on_arrays.decision_function(X_test),
                               on_stores.decision_function(test["plain"])[_xy_rows(test["plain"], groups_test, y_test)],
                               rtol=1e-5, atol=1e-6)
    assert on_arrays.temperature_ == pytest.approx(on_stores.temperature_, rel=1e-5)
    accuracy = on_stores.score(test["plain"], n_bootstrap=0).accuracy
    assert on_arrays.score(X_test, y_test, groups_test) == pytest.approx(accuracy)
    assert on_arrays.score(X_test, y_test) == pytest.approx(accuracy)  # the row order stands in for groups


def _xy_rows(url, groups, y):
    """Which store row each of xy's rows is (xy: each example's rows together, its preferred response first)."""
    sequences = open_store(url).sequences()
    order = xy_order(sequences["example"], sequences["score"] == 1.0)
    assert np.array_equal(sequences["example"][order], groups) and np.array_equal(sequences["score"][order], y)
    assert y[0] == 1.0 and all(y[groups == g][0] == 1.0 for g in np.unique(groups))
    return order


def test_groups_reach_fit_and_score_through_metadata_routing(stores):
    """With routing on, rows in any order: the estimator pairs by the groups it is given."""
    train, _ = stores
    X, y, groups = open_store(train["plain"]).xy(LAYER)
    ordered = cross_val_score(MMS(), X, y, groups=groups, cv=GroupKFold(5))
    shuffle = np.random.default_rng(0).permutation(len(y))
    with sklearn.config_context(enable_metadata_routing=True):
        routed = cross_val_score(MMS(), X[shuffle], y[shuffle], params={"groups": groups[shuffle]}, cv=GroupKFold(5))
    np.testing.assert_allclose(np.sort(routed), np.sort(ordered))


def test_predict_marks_each_examples_top_row(stores):
    train, _ = stores
    X, y, groups = open_store(train["plain"]).xy(LAYER)
    probe = MMS().fit(X, y, groups=groups)
    predicted, scores = probe.predict(X, groups), probe.decision_function(X)
    assert set(predicted) == {0, 1} and all(predicted[groups == g].sum() == 1 for g in np.unique(groups))
    top = np.array([np.argmax(np.where(groups == g, scores, -np.inf)) for g in groups])
    assert np.array_equal(np.flatnonzero(predicted), np.unique(top))
    assert (predicted == y).mean() > 0.5


def test_wrong_shapes_and_labels_are_one_line_without_the_array():
    rng = np.random.default_rng(0)
    X, y, groups = rng.normal(size=(8, 5)), np.tile([1.0, 0.0], 4), np.repeat(np.arange(4), 2)
    cases = [(X[0], y, groups, "shape (sequences, width), got shape (5,)"),
             (X[:, :, None], y, groups, "got shape (8, 5, 1)"),
             (X, y[:5], groups, "y has 5 values for 8 rows"),
             (X, y * 2, groups, "y must be 1.0 (preferred) or 0.0"),
             (X, y[::-1], None, "without groups, rows must start each example with its preferred"),
             (X, np.ones(8), groups, "has 2 best responses")]
    for bad_x, bad_y, bad_groups, message in cases:
        with pytest.raises(ArrayInputError) as raised:
            MMS().fit(bad_x, bad_y, groups=bad_groups)
        assert message in str(raised.value) and "\n" not in str(raised.value) and "[[" not in str(raised.value)
    fitted = MMS().fit(X, y, groups=groups)
    with pytest.raises(ArrayInputError, match="X has width 3, but the probe was fitted on width 5"):
        fitted.decision_function(X[:, :3])
    with pytest.raises(ArrayInputError, match="predict needs groups"):
        fitted.predict(X)
    with pytest.raises(NotFitted, match="not fitted yet"):
        MMS().decision_function(X)
    with pytest.raises(ArrayInputError, match="views side by side"):
        make_probe("cra", None).fit(rng.normal(size=(8, 5)), y, groups=groups)


def test_clone_of_a_fitted_probe_is_unfitted_and_refits_the_same(stores):
    train, _ = stores
    X, y, groups = open_store(train["plain"]).xy(LAYER)
    fitted = LogReg(C=0.5).fit(X, y, groups=groups)
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params() and getattr(copy, "fitted_", None) is None
    np.testing.assert_array_equal(copy.fit(X, y, groups=groups).decision_function(X), fitted.decision_function(X))
    narrower = fitted.fit(X[:, :8], y, groups=groups)  # fitting again, on other features, starts afresh
    assert narrower.n_features_in_ == 8 and narrower.decision_function(X[:, :8]).shape == (len(y),)


# The checks that assume labels of any classification task (y in {0, 1, 2}, per-row predictions without
# groups); a preference probe takes one preferred response per example and predicts within an example.
INAPPLICABLE = ("check_fit_score_takes_y", "check_estimators_overwrite_params", "check_dont_overwrite_parameters",
                "check_estimators_fit_returns_self", "check_readonly_memmap_input", "check_n_features_in_after_fitting",
                "check_positive_only_tag_during_fit", "check_estimators_dtypes", "check_dtype_object",
                "check_pipeline_consistency", "check_estimators_nan_inf", "check_estimators_pickle",
                "check_f_contiguous_array_estimator", "check_methods_sample_order_invariance",
                "check_methods_subset_invariance", "check_fit2d_1sample", "check_fit2d_1feature", "check_dict_unchanged",
                "check_fit_idempotent", "check_n_features_in", "check_fit2d_predict1d")


@pytest.mark.parametrize("estimator", [MMS(), LogReg()], ids=["mms", "logreg"])
def test_scikit_learn_checks_that_apply(estimator):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(estimator, on_fail=None,
                                  expected_failed_checks={name: "labels are preferences within an example"
                                                          for name in INAPPLICABLE})
    failed = [result["check_name"] for result in results if result["status"] == "failed"]
    passed = {result["check_name"] for result in results if result["status"] == "passed"}
    assert not failed
    assert {"check_get_params_invariance", "check_set_params", "check_no_attributes_set_in_init",
            "check_estimators_empty_data_messages", "check_complex_data", "check_estimators_unfitted",
            "check_estimator_sparse_array", "check_parameters_default_constructible"} <= passed
