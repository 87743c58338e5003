import pytest

from common import UserError
from genies.plan import (DoneChecks, RunConfig, TrainingSet, build_plan, check_reusable, needed_evaluations,
                         training_set_for)
from manifests import Shift

SHIFTS = [
    Shift("easy", "hard", "extreme", "difficulty"),
    Shift("easy", "trap", "probing", "unwanted_personas", target_reference="ref"),
]


def nothing_done() -> DoneChecks:
    return DoneChecks(store_complete=lambda url: False, path_exists=lambda path: False)


def test_needed_evaluations_cover_generalization_source_zero_shot_and_ttc():
    needed = needed_evaluations(SHIFTS, ["zero-shot", "mms", "random"])
    as_names = {(m, t.name if t else "", d) for m, t, d in needed}
    assert len(needed) == len(as_names)  # deduplicated
    assert {("mms", "easy", "hard"), ("mms", "easy", "trap"), ("mms", "easy", "easy")} <= as_names
    assert {("zero-shot", "", "hard"), ("zero-shot", "", "trap"), ("zero-shot", "", "easy"), ("zero-shot", "", "ref")} <= as_names
    # TTC: the fixed candidates (default zero-shot, mms, lat, logreg), trained and tested on each reference,
    # whatever methods were asked for; never the chance baseline
    assert {("mms", "hard", "hard"), ("mms", "ref", "ref"), ("lat", "hard", "hard"), ("logreg", "ref", "ref")} <= as_names
    assert not any(m == "random" and t == d and t in ("hard", "ref") for m, t, d in as_names)
    # 4 zero-shot (hard, trap, easy, ref) + mms (easy->hard, easy->trap, easy, hard, ref) + random (hard, trap, easy)
    # + lat and logreg on the two references
    assert len(needed) == 4 + 5 + 3 + 4
    assert len(needed_evaluations(SHIFTS, ["zero-shot", "mms", "random"], ttc_methods=("zero-shot", "mms"))) == 4 + 5 + 3


def test_fresh_plan_lists_every_store_and_fit(tmp_path):
    config = RunConfig(model="tiny-random", methods=("zero-shot", "ccs", "lora"), layer=3, limit=10, out=tmp_path,
                       store_root=str(tmp_path / "stores"), ttc_methods=("zero-shot", "ccs", "lora"))
    plan = build_plan(config, SHIFTS, nothing_done())
    stores = {(s.dataset, s.split, s.view) for s in plan.stores}
    assert {("easy", "train", "yes"), ("easy", "train", "no"), ("ref", "train", "yes"), ("hard", "test", "no"),
            ("trap", "test", "plain"), ("ref", "test", "plain")} <= stores
    assert not any(s.split == "train" and s.view == "plain" for s in plan.stores)  # zero-shot and lora need none
    assert all(s.url.endswith(f"/{s.split}.{s.view}.zarr") and "/tiny-random/" in s.url for s in plan.stores)
    fits = {(f.method, f.training.name, f.live) for f in plan.fits}
    assert fits == {("ccs", "easy", False), ("ccs", "hard", False), ("ccs", "ref", False),
                    ("lora", "easy", True), ("lora", "hard", True), ("lora", "ref", True)}
    assert all("layer3" in str(f.path) for f in plan.fits if f.method == "ccs")
    assert all("layer" not in str(f.path) for f in plan.fits if f.method == "lora")
    assert plan.needs_model
    assert any("fit ccs on easy" in line for line in plan.summary_lines())


def test_second_plan_reuses_everything_and_needs_no_model(tmp_path):
    config = RunConfig(model="tiny-random", methods=("zero-shot", "mms", "lora"), out=tmp_path)
    first = build_plan(config, SHIFTS, nothing_done())
    written = {e.path for e in first.evaluations} | {f.path for f in first.fits}
    second = build_plan(config, SHIFTS, DoneChecks(store_complete=lambda url: False, path_exists=written.__contains__))
    assert second.evaluations and all(e.done for e in second.evaluations)
    assert second.stores == [] and second.fits == []  # done evaluations need neither stores nor fits
    assert not second.needs_model
    assert "no model work" in second.summary_lines()[-1]


def test_random_under_layer_best_is_cached_apart_from_chosen_layers(tmp_path):
    best = build_plan(RunConfig(model="m", methods=("mms", "random"), out=tmp_path, ttc_methods=("mms",)), SHIFTS,
                      nothing_done())
    tags = {f.method: f.path.parent.name for f in best.fits}
    assert tags == {"mms": "layer-best-1se", "random": "layer-middle"}
    fixed = build_plan(RunConfig(model="m", methods=("random",), layer=4, out=tmp_path, ttc_methods=("zero-shot",)),
                       SHIFTS, nothing_done())
    assert {f.path.parent.name for f in fixed.fits} == {"layer4"}


def test_done_fits_and_stores_are_reused(tmp_path):
    config = RunConfig(model="m", methods=("zero-shot", "mms"), out=tmp_path)
    first = build_plan(config, SHIFTS, nothing_done())
    fits = {f.path for f in first.fits}
    urls = {s.url for s in first.stores}
    again = build_plan(config, SHIFTS, DoneChecks(store_complete=urls.__contains__, path_exists=fits.__contains__))
    assert all(f.done for f in again.fits) and not again.fits_to_run
    assert not any(s.split == "train" for s in again.stores)  # fitted probes need no training stores
    assert again.stores and not again.stores_to_extract
    assert again.evaluations_to_run and not again.needs_model  # probe scoring reads stores only


def test_mix_target_trains_on_source_plus_target_examples(tmp_path):
    assert training_set_for(SHIFTS[0], 0) == TrainingSet("easy")
    assert training_set_for(SHIFTS[0], 5).name == "easy+5xhard"
    config = RunConfig(model="m", methods=("zero-shot", "mms"), out=tmp_path, mix_target=5)
    plan = build_plan(config, SHIFTS, nothing_done())
    names = {f.training.name for f in plan.fits}
    assert names == {"easy+5xhard", "easy+5xtrap", "hard", "ref"}  # TTC is never mixed
    assert ("trap", "train", "plain") in {(s.dataset, s.split, s.view) for s in plan.stores}
    assert any(e.trained_on == "easy+5xtrap" and e.tested_on == "easy" for e in plan.evaluations)


def test_run_config_and_settings_checks(tmp_path):
    with pytest.raises(UserError, match="unknown method"):
        RunConfig(model="m", methods=("mms", "pca"))
    with pytest.raises(UserError, match="--layer"):
        RunConfig(model="m", layer="top")
    with pytest.raises(UserError, match="--mix-target"):
        RunConfig(model="m", mix_target=-1)
    with pytest.raises(UserError, match="--train-replicates: 0, or at least 2"):
        RunConfig(model="m", train_replicates=1)
    config = RunConfig(model="m", limit=100, out=tmp_path)
    check_reusable({"model": "m", "limit": 100, "train_replicates": 8}, config)
    with pytest.raises(UserError, match=r"limit 50 \(now 100\)"):
        check_reusable({"model": "m", "limit": 50, "train_replicates": 8}, config)
    with pytest.raises(UserError, match=r"train_replicates 0 \(now 8\)"):  # a run made before refits: none
        check_reusable({"model": "m", "limit": 100}, config)


def test_evaluation_cache_round_trip_and_done_checks(tmp_path):
    from genies.evaluations import evaluation_from_metrics, filesystem_checks, load_evaluation, save_evaluation
    from genies.generalization import Evaluation
    from common.metrics import compute_metrics, example_outcomes

    margins, pair_example = [1.0, 0.0, -2.0, 3.0], [0, 0, 1, 2]
    metrics = compute_metrics(margins, n_bootstrap=0)
    evaluation = evaluation_from_metrics("mms", "easy", "hard", metrics, layer=7,
                                         outcomes=example_outcomes(margins, pair_example), validation_pairs=40)
    assert evaluation.accuracy == pytest.approx((1 + 0.5 + 0 + 1) / 4) and evaluation.layer == 7
    path = save_evaluation(tmp_path / "e" / "hard.json", evaluation)
    assert load_evaluation(path) == evaluation and load_evaluation(path).outcomes.pairs.tolist() == [2, 1, 1]
    nan_auroc = Evaluation("zero-shot", "", "hard", 0.5, auroc=float("nan"))
    assert load_evaluation(save_evaluation(tmp_path / "z.json", nan_auroc)).auroc is None
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="bad.json: not a saved evaluation"):
        load_evaluation(tmp_path / "bad.json")
    checks = filesystem_checks()
    assert checks.path_exists(path) and not checks.path_exists(tmp_path / "nope.json")
    assert not checks.path_exists(tmp_path / "z.json")  # kept no per-example outcomes: to be recomputed
    assert not checks.store_complete(str(tmp_path / "no-store.plain.zarr"))


def test_plan_store_urls_follow_actstore_layout(tmp_path):
    from actstore.store.locations import store_url

    config = RunConfig(model="tiny-random", methods=("zero-shot",), limit=5, store_root=str(tmp_path), out=tmp_path / "run",
                       ttc_methods=("zero-shot",))
    plan = build_plan(config, SHIFTS[:1], nothing_done())
    assert {s.url for s in plan.stores} == {store_url(tmp_path, "tiny-random", d, "test", "plain")
                                            for d in ("easy", "hard")}
    default = build_plan(RunConfig(model="m", methods=("zero-shot",)), SHIFTS[:1], nothing_done())
    assert not any(s.url.startswith("None") for s in default.stores)
