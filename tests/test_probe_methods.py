"""Every method against independent computations on synthetic activations with a planted direction."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import registry
from probes import make_probe
from probes.methods.ccs import CCS, ccs_losses, train_ccs
from common.metrics import pair_margins
from synthetic import planted

LAYER = 2


@pytest.fixture(scope="module")
def train():
    return planted(seed=0, strength=6.0, signal_layers=(1, 2, 3), n_heads=4, signal_heads=((2, 1), (3, 3)))


@pytest.fixture(scope="module")
def test(train):
    return planted(seed=1, split="test", strength=6.0, signal_layers=(1, 2, 3), n_heads=4,
                   signal_heads=((2, 1), (3, 3)), direction=train.direction)


def cosine(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# The means-based methods average the noise away; logreg (L2, standardized) and CCS (unsupervised,
# L2) also fit some of the noise in 24 dimensions from 360 sequences.
@pytest.mark.parametrize("method, min_cosine", [("mms", 0.98), ("lat", 0.98), ("cra", 0.98), ("logreg", 0.9),
                                                ("ccs", 0.9)])
def test_recovers_planted_direction(method, min_cosine, train, test):
    probe = make_probe(method, LAYER).fit(train.source())
    assert probe.score(test.source(), n_bootstrap=0).accuracy > 0.97
    assert cosine(probe.scorer_.raw_direction(), train.direction) > min_cosine


@pytest.mark.parametrize("method", ["mms", "lat", "logreg", "cra", "ccs"])
def test_no_signal_layer_gives_chance(method, train, test):
    probe = make_probe(method, 0).fit(train.source())  # layer 0 carries no planted signal
    assert abs(probe.score(test.source(), n_bootstrap=0).accuracy - 0.5) < 0.12


def test_mms_is_difference_of_means(train):
    probe = make_probe("mms", LAYER).fit(train.source())
    x = train.residual["plain"][LAYER].astype(np.float64)
    best = train.score == 1.0
    by_hand = x[best].mean(axis=0) - x[~best].mean(axis=0)
    np.testing.assert_allclose(probe.scorer_.raw_direction(), by_hand, rtol=1e-4, atol=1e-4)
    scores = probe.decision_function(train.source())
    np.testing.assert_allclose(scores, (x - x.mean(axis=0)) @ by_hand, rtol=1e-3, atol=1e-3)


def test_cra_is_mass_mean_of_contrast(train):
    probe = make_probe("cra", LAYER, alpha=0.5).fit(train.source())
    c = train.residual["yes"][LAYER].astype(np.float64) - 0.5 * train.residual["no"][LAYER]
    best = train.score == 1.0
    np.testing.assert_allclose(probe.scorer_.raw_direction(), c[best].mean(0) - c[~best].mean(0), rtol=1e-4, atol=1e-4)


def test_logreg_matches_sklearn_fitted_directly(train):
    probe = make_probe("logreg", LAYER, C=0.3).fit(train.source())
    x = train.residual["plain"][LAYER].astype(np.float64)
    z = (x - x.mean(0)) / x.std(0)
    best_of_example = {int(e): i for i, e in enumerate(train.example) if train.score[i] == 1.0}
    other = np.flatnonzero(train.score != 1.0)
    best = np.array([best_of_example[int(train.example[i])] for i in other])
    d = z[best] - z[other]
    reference = LogisticRegression(C=0.3, fit_intercept=False, max_iter=1000)
    reference.fit(np.vstack([d, -d]), np.r_[np.ones(len(d)), np.zeros(len(d))])
    np.testing.assert_allclose(probe.scorer_.direction, reference.coef_[0], rtol=1e-3, atol=1e-4)
    # score(best) - score(other) is the fitted logit of each pair.
    margins = pair_margins(probe.decision_function(train.source()), train.example, train.score == 1.0)
    np.testing.assert_allclose(margins, reference.decision_function(d), rtol=1e-3, atol=1e-3)


def test_lat_is_first_principal_component_of_differences(train):
    probe = make_probe("lat", LAYER).fit(train.source())
    x = train.residual["plain"][LAYER].astype(np.float64)
    best, other = train.labels.pairs
    orientation = np.random.default_rng(0).choice([-1.0, 1.0], size=len(best))
    d = (x[best] - x[other]) * orientation[:, None]
    _, _, vt = np.linalg.svd(d - d.mean(0), full_matrices=False)
    assert abs(cosine(probe.scorer_.raw_direction(), vt[0])) > 0.9999
    # Sign comes from the training labels: the preferred response scores higher on most pairs.
    assert (train.labels.margins(probe.decision_function(train.source())) > 0).mean() > 0.9


def test_ccs_reaches_high_accuracy_without_labels(train, test):
    """The CCS optimisation sees only the yes/no activations; labels only pick the final sign."""
    from probes.normalize import Normalizer

    source = train.source()
    yes, no = source.residual("yes", LAYER), source.residual("no", LAYER)
    weight, bias, loss = train_ccs(Normalizer.fit(yes, "standardize")(yes), Normalizer.fit(no, "standardize")(no))
    assert loss < 0.25  # below the uninformative p = 1/2 solution
    z_yes = Normalizer.fit(yes, "standardize")(yes)
    z_no = Normalizer.fit(no, "standardize")(no)
    credence = 0.5 * (1 / (1 + np.exp(-(z_yes @ weight + bias))) + 1 - 1 / (1 + np.exp(-(z_no @ weight + bias))))
    truth = train.score == 1.0
    agreement = ((credence > 0.5) == truth).mean()
    assert max(agreement, 1 - agreement) > 0.95  # up to the sign, which CCS cannot know
    probe = make_probe("ccs", LAYER).fit(source)
    assert probe.score(test.source(), n_bootstrap=0).accuracy > 0.97


def test_ccs_sign_uses_training_labels_only(train, test):
    probe = make_probe("ccs", LAYER).fit(train.source())
    flipped = planted(seed=1, split="test", strength=-6.0, signal_layers=(1, 2, 3), direction=train.direction)
    # The eval set's labels are the opposite way round; the probe keeps its training sign and fails there.
    assert probe.score(flipped.source(), n_bootstrap=0).accuracy < 0.05


def straightforward_ccs(yes, no, config):
    """The CCS fit written out directly: scipy's L-BFGS-B on the restarts' summed loss, gradient by autograd
    in float64; the restart of lowest loss."""
    import torch
    from scipy.optimize import minimize

    n, d = yes.shape
    restarts = config.restarts
    stacked = torch.from_numpy(np.concatenate([yes, no]).astype(np.float64))

    def losses(theta):
        p = torch.sigmoid(stacked @ theta[: d * restarts].reshape(d, restarts) + theta[d * restarts:])
        return ((p[:n] + p[n:] - 1) ** 2).mean(0) + (torch.minimum(p[:n], p[n:]) ** 2).mean(0)

    def value_and_gradient(values):
        theta = torch.tensor(values, requires_grad=True)
        total = losses(theta).sum() + 0.5 * config.l2 * (theta[: d * restarts] ** 2).sum()
        total.backward()
        return total.item(), theta.grad.numpy()

    bound = 1 / np.sqrt(d)
    start = np.random.default_rng(config.seed).uniform(-bound, bound, d * restarts + restarts)
    found = minimize(value_and_gradient, start, jac=True, method="L-BFGS-B",
                     options={"maxiter": config.max_iter, "ftol": 1e-7}).x
    best = int(losses(torch.from_numpy(found)).argmin())
    return found[: d * restarts].reshape(d, restarts)[:, best], found[d * restarts + best], \
        float(losses(torch.from_numpy(found))[best])


@pytest.mark.parametrize("layer", [0, 2])
def test_ccs_matches_a_straightforward_fit(layer, train, test):
    """Same restarts, objective and selection as the direct version: the chosen loss within 1e-6 relative,
    the same direction and the same accuracy (layer 0 has no signal: a harder, flatter problem)."""
    from probes.normalize import Normalizer
    from probes.scorers import CCSScorer

    source = train.source()
    raw_yes, raw_no = source.residual("yes", layer), source.residual("no", layer)
    normalize_yes, normalize_no = Normalizer.fit(raw_yes, "standardize"), Normalizer.fit(raw_no, "standardize")
    yes, no = normalize_yes(raw_yes), normalize_no(raw_no)
    weight, bias, loss = train_ccs(yes, no)
    reference_weight, reference_bias, reference_loss = straightforward_ccs(yes, no, CCS())
    assert loss == pytest.approx(reference_loss, rel=1e-6)
    assert cosine(weight, reference_weight) > 0.9999
    accuracies = []
    for w, b in ((weight, bias), (reference_weight.astype(np.float32), float(reference_bias))):
        scorer = CCSScorer(layer, normalize_yes, normalize_no, w, b, 1.0)
        accuracies.append([pair_accuracy(scorer.score(s), s.labels) for s in (source, test.source())])
    assert accuracies[0] == accuracies[1]


def pair_accuracy(scores, labels):
    margins = labels.margins(scores)
    return float(((margins > 0) + 0.5 * (margins == 0)).mean())


def test_ccs_loss_formula():
    p_yes, p_no = np.array([[0.9], [0.2]]), np.array([[0.1], [0.7]])
    expected = np.mean([(0.9 - 0.9) ** 2, (0.2 - 0.3) ** 2]) + np.mean([0.1**2, 0.2**2])
    assert ccs_losses(p_yes, p_no)[0] == pytest.approx(expected)


def test_random_is_chance_over_many_seeds(train, test):
    accuracies = [make_probe("random", LAYER, seed=s).fit(train.source()).score(test.source(), n_bootstrap=0).accuracy for s in range(40)]
    assert abs(np.mean(accuracies) - 0.5) < 0.06
    assert np.std(accuracies) > 0.05  # genuinely random directions, not one fixed guess
    again = make_probe("random", LAYER, seed=3).fit(train.source())
    np.testing.assert_array_equal(again.scorer_.direction, make_probe("random", LAYER, seed=3).fit(train.source()).scorer_.direction)


def test_zero_shot_scores_are_the_stored_loglik(train):
    probe = make_probe("zero-shot").fit(train.source())
    np.testing.assert_array_equal(probe.decision_function(train.source()), train.loglik)


@pytest.mark.parametrize("method,view", [("lat-stim", "stim"), ("lat-stim-1", "plain")])
def test_lat_stim_picks_signal_layers_and_scores_by_cosine(method, view, train, test):
    probe = make_probe(method, top_k=2).fit(train.source())
    assert probe.scorer_.feature.view == view
    assert len(probe.scorer_.sites) == 2
    assert {layer for layer, _ in probe.scorer_.sites} <= {1, 2, 3}
    assert probe.score(test.source(), n_bootstrap=0).accuracy > 0.97
    scores = probe.decision_function(test.source())
    assert np.abs(scores).max() <= 1.0 + 1e-6  # a mean of cosines


@pytest.mark.parametrize("method", ["mms-heads", "cra-heads"])
def test_head_wise_variants_select_planted_heads(method, train, test):
    probe = make_probe(method, top_k=2).fit(train.source())
    assert sorted(probe.scorer_.sites) == [(2, 1), (3, 3)]
    assert probe.score(test.source(), n_bootstrap=0).accuracy > 0.97


def test_normalization_is_fitted_on_training_data_only(train, test):
    probe = make_probe("logreg", LAYER).fit(train.source())
    x = train.residual["plain"][LAYER]
    np.testing.assert_allclose(probe.scorer_.normalizer.mean, x.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(probe.scorer_.normalizer.scale, x.std(0), rtol=1e-4)
    before = probe.scorer_.normalizer.mean.copy()
    probe.score(test.source(), n_bootstrap=0)
    np.testing.assert_array_equal(probe.scorer_.normalizer.mean, before)


@pytest.mark.parametrize("method", registry.store_methods())
def test_every_method_is_deterministic(method, train):
    layer = LAYER if registry.get(method).takes_layer else None
    a = make_probe(method, layer, top_k=3).fit(train.source()).decision_function(train.source())
    b = make_probe(method, layer, top_k=3).fit(train.source()).decision_function(train.source())
    np.testing.assert_array_equal(a, b)


def test_temperature_is_fitted_on_training_margins(train):
    from common.metrics import fit_temperature

    for method in ("mms", "lat", "ccs"):
        probe = make_probe(method, LAYER).fit(train.source())
        assert probe.temperature_ == pytest.approx(fit_temperature(train.labels.margins(probe.decision_function(train.source()))))
    # Score differences that are logits already keep their scale.
    assert make_probe("logreg", LAYER).fit(train.source()).temperature_ == 1.0
    assert make_probe("zero-shot").fit(train.source()).temperature_ == 1.0


@pytest.mark.parametrize("settings, message", [
    (dict(restarts=0), "CCS restarts must be a finite number at least 1, got 0"),
    (dict(max_iter=0), "CCS max_iter must be"),
    (dict(l2=float("nan")), "CCS l2 must be a finite number at least 0, got nan"),
])
def test_ccs_settings_that_cannot_fit_are_one_line_errors(settings, message):
    from common import UserError
    from probes.methods.ccs import train_ccs

    x = np.random.default_rng(0).normal(size=(8, 3))
    with pytest.raises(UserError, match=message):
        train_ccs(x, -x, **settings)
