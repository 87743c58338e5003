"""`genies run` end to end with the tiny random model on tiny generated GENIES-format data."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest

import actstore.engine.extraction
import actstore.models.loading
import genies.report
import genies.steps
from common import UserError
from conftest import write_distribution
from genies.plan import RunConfig
from genies.runner import run_benchmark
from probes.sweep import VALIDATION, read_csv

METHODS = ("zero-shot", "mms", "logreg", "random")
SHIFTS = [
    {"source": "easy", "target": "hard", "label": "extreme", "category": "difficulty"},
    {"source": "easy", "target": "trap", "target_reference": "ref", "label": "probing", "category": "unwanted_personas"},
]


def arithmetic(n: int, offset: int, wrong_by: int) -> list[dict]:
    return [{"prompt": f"What is {i + offset} + {i}?\n### Response:\n",
             "responses": {f"{2 * i + offset}": 1.0, f"{2 * i + offset + wrong_by}": 0.0, "I do not know.": 0.0}}
            for i in range(n)]


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    root = tmp_path_factory.mktemp("genies-run")
    for name, (offset, wrong_by) in {"easy": (1, 1), "hard": (40, 7), "trap": (3, 2), "ref": (5, 3)}.items():
        write_distribution(root / "data", name, arithmetic(14, offset, wrong_by), arithmetic(10, offset + 100, wrong_by))
    manifest = root / "shifts.json"
    manifest.write_text(json.dumps(SHIFTS))
    return root, manifest


def config_for(benchmark, **overrides) -> RunConfig:
    root, manifest = benchmark
    settings = dict(model="tiny-random", shifts=str(manifest), methods=METHODS, layer="best", data_dir=str(root / "data"),
                    store_root=str(root / "stores"), out=root / "run")
    return RunConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def first_run(benchmark):
    return run_benchmark(config_for(benchmark), command="genies run (test)", log=lambda line: None)


def test_run_writes_one_row_per_shift_and_method_and_a_report(first_run):
    assert first_run.model_loads == 1
    assert first_run.stores_extracted > 0 and first_run.fits_run > 0 and first_run.evaluations_run > 0
    with first_run.results_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((r["source"], r["target"], r["method"]) for r in rows) == sorted(
        (s["source"], s["target"], m) for s in SHIFTS for m in METHODS)
    for row in rows:
        for column in ("generalization_accuracy", "source_accuracy", "zero_shot_accuracy", "target_tuned_capability",
                       "auroc", "brier", "rms_calibration_error"):
            assert 0.0 <= float(row[column]) <= 1.0, (column, row)
        assert row["target_tuned_method"] != "random"  # a chance baseline is never the TTC
    report = (first_run.run_dir / "report.md").read_text()
    assert "genies run (test)" in report and "easy -> trap [ref ref]" in report
    assert (first_run.run_dir / "generalization_vs_zero_shot.png").stat().st_size > 0


def test_report_from_the_rows_held_is_the_one_rebuilt_from_results_csv(first_run):
    written = (first_run.run_dir / "report.md").read_bytes()
    assert genies.report.write_report(first_run.run_dir).path.read_bytes() == written


def test_zero_shot_has_differential_elicitation_exactly_zero(first_run):
    zero_shot = [r for r in first_run.rows if r.method == "zero-shot"]
    assert len(zero_shot) == len(SHIFTS)
    assert all(r.differential_elicitation == 0.0 and r.generalization_accuracy == r.zero_shot_accuracy for r in zero_shot)
    for row in first_run.rows:
        assert row.elicitation == pytest.approx(row.generalization_accuracy / row.target_tuned_capability)


def test_best_layer_is_chosen_on_source_validation_only(first_run):
    sweep = read_csv(first_run.run_dir / "sweeps" / "easy.csv")
    assert sweep and {r.role for r in sweep} == {VALIDATION}
    assert {r.eval for r in sweep} == {"easy/train validation"}
    from probes import make_probe
    from probes.sweep import best_layers

    for method in ("mms", "logreg", "random"):
        candidates = [r for r in sweep if r.method == method]
        (best,) = best_layers(candidates, [make_probe(method)])  # the stated rule, on the saved validation rows
        assert sorted(r.layer for r in candidates) == [1, 2, 3, 4]  # tiny-random's blocks; the embeddings are constant
        expected = 3 if method == "random" else best.layer  # the chance baseline takes the middle layer
        assert {r.layer for r in first_run.rows if r.method == method and r.source == "easy"} == {expected}
    assert {(c.method, c.training) for c in first_run.chosen_layers} >= {("mms", "easy"), ("mms", "hard"), ("mms", "ref")}


def test_rows_carry_relative_depth_and_the_run_its_model_name_and_sweep_plots(first_run):
    """depth = layer / n_layers in every row with a layer (tiny-random: 4 blocks); one sweep plot per training set,
    linked from the report; run.json names the model shortly and records its layer count."""
    with first_run.results_path.open() as handle:
        rows = list(csv.DictReader(handle))
    layered = [r for r in rows if r["layer"]]
    assert layered and all(float(r["depth"]) == int(r["layer"]) / 4 and r["n_layers"] == "4" for r in layered)
    assert all(r["depth"] == "" for r in rows if not r["layer"])
    info = json.loads((first_run.run_dir / "run.json").read_text())
    assert info["model_name"] == "tiny-random" and info["n_layers"] == 4
    report = (first_run.run_dir / "report.md").read_text()
    assert report.startswith("# GENIES run report: tiny-random")
    for training in ("easy", "hard", "ref"):
        plot = first_run.run_dir / "sweeps" / f"{training}.png"
        assert plot.stat().st_size > 10_000 and f"(sweeps/{training}.png)" in report
    assert "## Target-tuned capability (what DE and El divide by)" in report


def test_a_relative_depth_picks_the_layer_at_that_depth(benchmark, first_run):
    root, _ = benchmark
    summary = run_benchmark(config_for(benchmark, methods=("zero-shot", "mms"), layer=0.5, out=root / "run-depth",
                                       model_name="tiny"), log=lambda line: None)
    assert summary.stores_extracted == 0  # the first run's stores
    mms = [r for r in summary.rows if r.method == "mms"]
    assert {r.layer for r in mms} == {2} and {r.depth for r in mms} == {0.5}
    assert (root / "run-depth" / "fits" / "mms" / "depth0.5").is_dir()
    assert json.loads((root / "run-depth" / "run.json").read_text())["model_name"] == "tiny"


def test_second_identical_run_reuses_everything_without_the_model(benchmark, first_run, monkeypatch):
    def no_model_work(*args, **kwargs):
        raise AssertionError("the second run did model work")

    monkeypatch.setattr(actstore.models.loading, "load_model", no_model_work)
    monkeypatch.setattr(actstore.engine.extraction, "extract", no_model_work)
    monkeypatch.setattr(genies.steps, "make_probe", no_model_work)

    def reread(*args, **kwargs):
        raise AssertionError("genies run re-read the results.csv it had just written")

    monkeypatch.setattr(genies.report, "load_run", reread)
    lines = []
    again = run_benchmark(config_for(benchmark), command="genies run (test)", log=lines.append)
    assert again.reused_everything and again.model_loads == 0
    assert any("reused everything" in line for line in lines)
    assert again.rows == first_run.rows
    info = json.loads((again.run_dir / "run.json").read_text())
    assert [h["model_loads"] for h in info["history"]] == [1, 0]
    assert info["computed_with"] == {"attention": ["sdpa"], "live_training": []}  # what the reused stores were made with
    assert "run 2 (" in (again.run_dir / "report.md").read_text()


def test_cli_run_prints_the_summary_table(benchmark, first_run):
    from click.testing import CliRunner

    from cli import genies

    root, manifest = benchmark
    args = ["run", "--model", "tiny-random", "--shifts", str(manifest), "--methods", ",".join(METHODS),
            "--data-dir", str(root / "data"), "--store-root", str(root / "stores"), "--out", str(root / "run")]
    result = CliRunner().invoke(genies, args)
    assert result.exit_code == 0, result.output
    assert "everything is done already" in result.output
    assert all(method in result.output for method in METHODS) and "report.md" in result.output
    refused = CliRunner().invoke(genies, [*args, "--layer", "top"])
    assert refused.exit_code == 2 and "--layer must be a layer number or 'best'" in refused.output


def test_fixed_layer_with_mixed_target_examples(benchmark, first_run):
    root, _ = benchmark
    summary = run_benchmark(config_for(benchmark, methods=("zero-shot", "mms"), layer=2, mix_target=3,
                                       out=root / "run-layer2-mixed"), log=lambda line: None)
    assert summary.stores_extracted == 1  # trap's training split; every other store is reused
    mms = [r for r in summary.rows if r.method == "mms"]
    assert len(mms) == len(SHIFTS) and {r.layer for r in mms} == {2}
    fits = {p.name for p in (summary.run_dir / "fits" / "mms" / "layer2").iterdir()}
    trained_on = {"easy+3xhard", "easy+3xtrap", "hard", "ref"}
    assert fits == trained_on | {f"{name}.refits" for name in trained_on}


def test_run_dir_of_other_settings_is_refused(benchmark, first_run):
    with pytest.raises(UserError, match="different settings"):
        run_benchmark(config_for(benchmark, limit=5), log=lambda line: None)
    results = (first_run.run_dir / "results.csv").read_bytes()
    for setting, value in (("layer", 2), ("mix_target", 3)):  # they change every probe's number
        with pytest.raises(UserError, match=rf"made with different settings: {setting} .* \(now {value!r}\)"):
            run_benchmark(config_for(benchmark, **{setting: value}), log=lambda line: None)
    assert (first_run.run_dir / "results.csv").read_bytes() == results


def test_shifts_demo_defaults_to_demo_data():
    from genies.runner import resolve_config

    assert resolve_config(RunConfig(model="m", shifts="demo")).data_dir == "demo"
    assert resolve_config(RunConfig(model="m", shifts="demo", data_dir="x")).data_dir == "x"
    assert resolve_config(RunConfig(model="m")).data_dir is None


def test_live_methods_run_through_the_runner_and_are_reused(benchmark, monkeypatch):
    """lora and few-shot go through finetune, on the one model the run loaded for extraction; a second run
    trains and evaluates nothing."""
    root, _ = benchmark
    config = config_for(benchmark, methods=("zero-shot", "lora", "few-shot"), out=root / "live-run")
    real_load, loads = actstore.models.loading.load_model, []
    monkeypatch.setattr(actstore.models.loading, "load_model", lambda spec: loads.append(spec) or real_load(spec))
    first = run_benchmark(config, command="genies run (live)", log=lambda line: None)
    assert first.model_loads == 1 and len(loads) == 1
    assert first.fits_run > 0 and list((root / "live-run").rglob("head.safetensors"))  # lora really trained
    rows = {(r.source, r.target, r.method): r for r in first.rows}
    assert {m for _, _, m in rows} == {"zero-shot", "lora", "few-shot"}
    assert len(rows) == 3 * len(SHIFTS)
    for row in rows.values():
        assert 0.0 <= row.generalization_accuracy <= 1.0 and 0.0 <= row.source_accuracy <= 1.0
    assert {r.interval_covers for r in rows.values() if r.method == "lora"} == {
        "test examples only (the fit is not repeated)"}
    assert (root / "live-run" / "results.csv").is_file()
    report = (root / "live-run" / "report.md").read_text()
    assert "- lora: LoRA r 64, alpha 16, dropout 0.1 on q_proj/v_proj, lr 0.0002," in report
    assert "- few-shot: 4 shots from the source's train split, drawn per test example" in report
    again = run_benchmark(config, command="genies run (live)", log=lambda line: None)
    assert again.model_loads == 0 and again.fits_run == 0 and again.evaluations_run == 0
    assert [r.generalization_accuracy for r in again.rows] == [r.generalization_accuracy for r in first.rows]
    # another --attention and --train-layout reuse everything: run.json says what it was computed with, not the request
    relabelled = run_benchmark(replace(config, attention="eager", train_layout="per-process"),
                               command="genies run (live, eager)", log=lambda line: None)
    assert relabelled.model_loads == 0 and relabelled.fits_run == 0 and relabelled.evaluations_run == 0
    info = json.loads((root / "live-run" / "run.json").read_text())
    assert info["attention_requested"] == "eager"
    assert info["computed_with"] == {"attention": ["sdpa"], "live_training": ["one process"]}


def test_contrast_methods_extract_yes_no_views_and_score(benchmark):
    """ccs and cra need the yes/no views: the runner extracts them and scores every shift."""
    root, _ = benchmark
    summary = run_benchmark(config_for(benchmark, methods=("zero-shot", "ccs", "cra"), layer=2, out=root / "contrast"),
                            command="genies run (contrast)", log=lambda line: None)
    assert sorted({r.method for r in summary.rows}) == ["ccs", "cra", "zero-shot"]
    assert list((root / "stores").rglob("train.yes.zarr")) and list((root / "stores").rglob("test.no.zarr"))
    for row in summary.rows:
        assert 0.0 <= row.generalization_accuracy <= 1.0
        assert row.layer == (None if row.method == "zero-shot" else 2)


def _without_run_lines(text: str) -> list[str]:
    """report.md minus what differs between two runs of one command: start times, wall times, the run directory."""
    return [line for line in text.splitlines() if not line.startswith(("- run ", "- run directory"))]


def test_identical_runs_give_identical_reports_and_old_evaluations_are_recomputed(benchmark, first_run):
    """The bootstrap is seeded: two run directories of the same command get the same report.md and
    results.csv. An evaluation file without per-example outcomes (written before they were kept) is redone."""
    root, _ = benchmark
    first, again = (run_benchmark(config_for(benchmark, out=root / name), command="genies run (test)",
                                  log=lambda line: None) for name in ("run-a", "run-b"))
    first_report = (first.run_dir / "report.md").read_text()
    assert "| mms | 2 | " in first_report and "Which differences are resolved" in first_report
    assert "rows kept per-example outcomes" not in first_report  # every row kept them
    assert "## Layer selection" in first_report and "layer choices rest on fewer than 100 validation pairs" in first_report
    assert _without_run_lines((again.run_dir / "report.md").read_text()) == _without_run_lines(first_report)
    assert (again.run_dir / "results.csv").read_bytes() == (first.run_dir / "results.csv").read_bytes()

    evaluation = next((again.run_dir / "evaluations" / "mms").rglob("hard.json"))
    record = json.loads(evaluation.read_text())
    del record["outcomes"]
    evaluation.write_text(json.dumps(record))
    redone = run_benchmark(config_for(benchmark, out=root / "run-b"), command="genies run (test)",
                           log=lambda line: None)
    assert redone.evaluations_run == 1 and redone.model_loads == 0
    assert "outcomes" in json.loads(evaluation.read_text())


def test_layer_choices_report_their_validation_size_and_warn_when_small(first_run):
    """The tiny benchmark's sources have 14 training examples: about 4 validation examples, far below the minimum."""
    from probes.sweep import MIN_VALIDATION_PAIRS

    mms = [r for r in first_run.rows if r.method == "mms"]
    assert all(r.validation_pairs is not None and 0 < r.validation_pairs < MIN_VALIDATION_PAIRS for r in mms)
    assert all(r.validation_pairs is None for r in first_run.rows if r.method in ("zero-shot", "random"))
    assert first_run.report.layer_warnings and "mms trained on easy" in first_run.report.layer_warnings[0]
    assert all(c.validation_pairs == mms[0].validation_pairs for c in first_run.chosen_layers
               if c.training == "easy" and c.method != "random")


def test_lat_stim_1_runs_from_the_plain_stores(benchmark, first_run):
    """The paper's lat_stim_1 reads the plain view only: no new extraction, a paper column, no layer."""
    root, _ = benchmark
    summary = run_benchmark(config_for(benchmark, methods=("zero-shot", "lat-stim-1"), out=root / "lat-stim-1"),
                            log=lambda line: None)
    assert summary.stores_extracted == 0 and summary.model_loads == 0
    rows = [r for r in summary.rows if r.method == "lat-stim-1"]
    assert len(rows) == len(SHIFTS) and all(r.layer is None for r in rows)
    mms_pairs = {r.source: r.validation_pairs for r in first_run.rows if r.method == "mms"}
    assert all(r.validation_pairs == mms_pairs[r.source] for r in rows)  # its top-k layers: the same split
    assert "| lat-stim-1 | lat_stim_1 | yes |" in (summary.run_dir / "report.md").read_text()


def test_named_compute_dtype_refuses_stores_of_another_and_reports_its_own(benchmark, first_run, monkeypatch):
    """With --compute-dtype named, stores computed in another dtype are refused in one line before any model work
    (auto reuses them); in a store root of its own the run extracts in that dtype and its report says so."""
    root, _ = benchmark
    made_in = json.loads(next((root / "stores").rglob("zarr.json")).read_text())["attributes"]["identity"]["compute_dtype"]
    other = "float32" if made_in == "bfloat16" else "bfloat16"
    assert f"- compute dtype: {made_in} for all " in (first_run.run_dir / "report.md").read_text()

    def no_model_work(*args, **kwargs):
        raise AssertionError("a refused run did model work")

    monkeypatch.setattr(actstore.models.loading, "load_model", no_model_work)
    with pytest.raises(UserError, match=rf"holds an extraction made with other settings \(compute_dtype: stored "
                                        rf"'{made_in}', this run '{other}'\); use another --store-root"):
        run_benchmark(config_for(benchmark, compute_dtype=other, out=root / "other-dtype"), log=lambda line: None)
    with pytest.raises(UserError, match=rf"compute_dtype 'auto' \(now '{other}'\)"):
        run_benchmark(config_for(benchmark, compute_dtype=other), log=lambda line: None)
    monkeypatch.undo()

    summary = run_benchmark(config_for(benchmark, methods=("zero-shot", "mms"), compute_dtype=other,
                                       store_root=str(root / f"stores-{other}"), out=root / "other-dtype"),
                            log=lambda line: None)
    stores = list((root / f"stores-{other}").rglob("*.plain.zarr"))
    assert summary.stores_extracted == len(stores) > 0
    assert {json.loads((s / "zarr.json").read_text())["attributes"]["identity"]["compute_dtype"] for s in stores} == {other}
    assert f"- compute dtype: {other} for all " in (summary.run_dir / "report.md").read_text()


def test_float16_compute_is_for_extraction_only():
    with pytest.raises(UserError, match="--compute-dtype float16 is for extraction only"):
        RunConfig(model="tiny-random", methods=("zero-shot", "lora"), compute_dtype="float16")
    RunConfig(model="tiny-random", methods=("zero-shot", "mms", "few-shot"), compute_dtype="float16")
    assert RunConfig(model="tiny-random", compute_dtype="float32").training_precision == "fp32"
    assert RunConfig(model="tiny-random", compute_dtype="bfloat16").training_precision == "bf16"


def test_live_training_takes_the_runs_steps_pass_budget_and_precision(tmp_path, monkeypatch):
    import finetune.train
    from genies.plan import FitStep, TrainingSet

    seen = []

    class Trained:
        steps, total_seconds = 1, 0.0

        def mean_loss(self, which):
            return 0.5

    monkeypatch.setattr(finetune.train, "train_reward_model", lambda config, **kwargs: seen.append(config) or Trained())
    config = RunConfig(model="tiny-random", methods=("lora",), train_max_tokens=1024, train_steps=3,
                       compute_dtype="float32", out=tmp_path / "run")
    step = FitStep("lora", TrainingSet("easy"), tmp_path / "run" / "fits" / "lora" / "easy", False)
    genies.steps.train_live(config, [step], tmp_path / "mixed", model=type("Model", (), {"get": lambda self: None})(),
                            log=lambda line: None)
    assert [(c.max_tokens, c.steps, c.precision, c.dataset) for c in seen] == [(1024, 3, "fp32", "easy")]
    with pytest.raises(UserError, match="--train-max-tokens must be at least 1"):
        RunConfig(model="tiny-random", train_max_tokens=0)


def test_a_run_dir_made_before_a_setting_existed_refuses_another_value_of_it(tmp_path):
    """run.json without compute_dtype / train_steps was made with their defaults: another value is refused."""
    from genies.plan import check_reusable

    recorded = {"model": "tiny-random", "limit": None, "seed": 0, "data_dir": None}
    check_reusable(recorded, RunConfig(model="tiny-random", out=tmp_path, train_replicates=0))
    for setting, value in (("compute_dtype", "float32"), ("train_steps", 30), ("prompt_format", "chat"),
                           ("train_replicates", 8)):
        with pytest.raises(UserError, match=rf"made with different settings: {setting} .* \(now {value!r}\)"):
            check_reusable(recorded, RunConfig(model="tiny-random", out=tmp_path,
                                               **{"train_replicates": 0, setting: value}))
    check_reusable({}, RunConfig(model="other", out=tmp_path))  # a new run directory


def test_without_run_json_the_files_of_other_settings_are_never_reused(benchmark, tmp_path):
    """Fits and evaluations record the settings that made them: a RUN_DIR whose run.json is gone does
    not pass off its limit-5 numbers as a limit-8 run (they are computed again)."""
    methods = ("zero-shot", "mms")
    old = run_benchmark(config_for(benchmark, methods=methods, limit=5, out=tmp_path / "run"), log=lambda line: None)
    (tmp_path / "run" / "run.json").unlink()
    again = run_benchmark(config_for(benchmark, methods=methods, limit=8, out=tmp_path / "run"), log=lambda line: None)
    fresh = run_benchmark(config_for(benchmark, methods=methods, limit=8, out=tmp_path / "fresh"), log=lambda line: None)
    assert again.evaluations_run == old.evaluations_run and again.fits_run == old.fits_run  # nothing reused
    assert again.rows == fresh.rows != old.rows
    (tmp_path / "run" / "run.json").unlink()
    same = run_benchmark(config_for(benchmark, methods=methods, limit=8, out=tmp_path / "run"), log=lambda line: None)
    assert same.evaluations_run == 0 and same.rows == fresh.rows  # the same settings: every file reused


def test_no_prompt_reuse_gives_the_same_results_within_float_rounding(benchmark, first_run):
    """The prefix tree is the default engine; --no-prompt-reuse runs every sequence whole (own stores, so nothing
    is reused): every number of results.csv agrees within 1e-6 (the tree's values equal the whole sequences' up to
    float32 rounding, far below anything a pair comparison or a statistic resolves)."""
    root, _ = benchmark
    whole = run_benchmark(config_for(benchmark, prompt_reuse=False, store_root=str(root / "stores-whole"),
                                     out=root / "run-whole"), log=lambda line: None)
    assert whole.stores_extracted == first_run.stores_extracted > 0

    def rows(summary):
        with summary.results_path.open() as handle:
            return {(r["source"], r["target"], r["method"]): r for r in csv.DictReader(handle)}

    tree, plain = rows(first_run), rows(whole)
    assert tree.keys() == plain.keys()
    compared = 0
    for key, row in tree.items():
        for column, value in row.items():
            try:
                a, b = float(value), float(plain[key][column])
            except ValueError:
                continue
            assert abs(a - b) <= 1e-6 or (a != a and b != b), (key, column, value, plain[key][column])
            compared += 1
    assert compared > 50


def test_de_and_el_do_not_change_with_the_methods_asked_for(benchmark, first_run):
    """The target-tuned capability comes from the fixed --ttc-methods: a run of fewer methods plans their reference
    fits itself, and the methods both runs share get the same TTC, DE and El."""
    root, _ = benchmark
    fewer = run_benchmark(config_for(benchmark, methods=("mms", "logreg"), out=root / "run-fewer"),
                          command="genies run (fewer)", log=lambda line: None)
    every = {(r.source, r.target, r.method): r for r in first_run.rows}
    for row in fewer.rows:
        same = every[(row.source, row.target, row.method)]
        assert (row.target_tuned_method, row.target_tuned_capability) == (same.target_tuned_method,
                                                                          same.target_tuned_capability)
        assert row.differential_elicitation == same.differential_elicitation and row.elicitation == same.elicitation
    for candidate in ("lat",):  # not asked for, fitted on the reference all the same
        assert list((root / "run-fewer" / "fits" / candidate).rglob("ref")), candidate
    text = (root / "run-fewer" / "report.md").read_text()
    assert ("of a fixed set, the same whatever `--methods` asks for (`--ttc-methods`: zero-shot, mms, lat, logreg)"
            in text)
    with pytest.raises(UserError, match="--ttc-methods: random: give methods that measure a capability"):
        config_for(benchmark, ttc_methods=("mms", "random"))


def test_head_based_methods_run_from_per_head_stores_beside_the_residual_ones(benchmark, tmp_path):
    """The paper's mms and cra read the top attention heads: a run asking for them extracts its stores with
    per-head outputs, and every method of the run reads those stores."""
    config = config_for(benchmark, methods=("mms-heads", "cra-heads", "mms"), ttc_methods=("mms",), layer=2,
                        store_root=str(tmp_path / "stores"), out=tmp_path / "run")
    assert config.store_site == "heads"
    result = run_benchmark(config, command="genies run (test)", log=lambda line: None)
    stores = sorted(p.name for p in (tmp_path / "stores").rglob("*.zarr"))
    assert stores and all(".heads." in name for name in stores)
    assert {"train.heads.plain.zarr", "train.heads.yes.zarr", "train.heads.no.zarr"} <= set(stores)
    rows = {(row.method, row.shift) for row in result.rows}
    assert {method for method, _ in rows} == {"mms-heads", "cra-heads", "mms"} and len(rows) == 3 * len(SHIFTS)
    fit = json.loads(next((tmp_path / "run").rglob("mms-heads/**/probe.json")).read_text())
    assert fit["scorer"] == "cosine" and fit["scorer_config"]["feature"]["site"] == "heads"
    report = (tmp_path / "run" / "report.md").read_text()
    assert "mms-heads" in report and "cra-heads" in report


def test_fitted_methods_are_refitted_and_random_is_the_mean_of_its_directions(first_run):
    """The default --train-replicates: 8 sealed refits per probe fit, each with its own seed, scored on every test
    split; random's 32 directions; rows say what their intervals hold, and random's contain chance."""
    from common.atomic import is_complete, read_marker
    from genies.evaluations import read_row_evaluations
    from genies.plan import CHANCE_DIRECTIONS, DEFAULT_TRAIN_REPLICATES
    from genies.refits import refit_paths
    from probes.estimator import load_probe

    found = read_row_evaluations(first_run.run_dir)
    refits_moved = False
    for (_, _, method), evaluations in found.items():
        generalization = evaluations.generalization
        if method == "zero-shot":
            assert generalization.refit_outcomes is None
            continue
        directions = method == "random"
        expected = CHANCE_DIRECTIONS - 1 if directions else DEFAULT_TRAIN_REPLICATES
        assert len(generalization.refit_outcomes) == expected
        assert generalization.refits == ("directions" if directions else "refits")
        accuracies = [o.accuracy for o in generalization.refit_outcomes]
        if directions:
            assert generalization.accuracy == pytest.approx(np.mean([generalization.outcomes.accuracy, *accuracies]))
        else:
            assert generalization.accuracy == generalization.outcomes.accuracy
            refits_moved |= len(set(accuracies)) > 1
    assert refits_moved  # refits on other training draws and seeds do not all land on one accuracy

    paths = refit_paths(first_run.run_dir / "fits" / "logreg" / "layer-best-1se" / "easy", DEFAULT_TRAIN_REPLICATES)
    assert [read_marker(path)["refit"] for path in paths if is_complete(path)] == list(range(1, len(paths) + 1))
    random_fit = first_run.run_dir / "fits" / "random" / "layer-middle" / "easy"
    seeds = {load_probe(path).seed for path in [random_fit, *refit_paths(random_fit, CHANCE_DIRECTIONS - 1)]}
    assert len(seeds) == CHANCE_DIRECTIONS

    rows = [r for r in first_run.rows]
    for row in rows:
        if row.method == "random":
            assert row.interval_covers == f"test examples + {CHANCE_DIRECTIONS} random directions"
            assert row.generalization_accuracy_low <= 0.5 <= row.generalization_accuracy_high
        elif row.method != "zero-shot":
            assert row.interval_covers == f"test examples + {DEFAULT_TRAIN_REPLICATES} refits on resampled training data"
    with first_run.results_path.open() as handle:
        assert {r["interval_covers"] for r in csv.DictReader(handle) if r["method"] == "zero-shot"} == {"test examples"}
    assert "refits on resampled training data (mms, logreg)" in (first_run.run_dir / "report.md").read_text()


def test_live_replicates_retrain_on_resampled_training_examples(benchmark):
    """--live-replicates 2: each lora fit is trained twice more, on its training examples drawn with replacement
    and other seeds, and every evaluation scores the retrainings too."""
    from common.atomic import is_complete
    from distributions.split_file import read_examples
    from genies.evaluations import read_row_evaluations
    from genies.refits import refit_paths

    root, _ = benchmark
    summary = run_benchmark(config_for(benchmark, methods=("zero-shot", "lora"), live_replicates=2, train_steps=4,
                                       out=root / "live-replicates"), log=lambda line: None)
    lora = [r for r in summary.rows if r.method == "lora"]
    assert {r.interval_covers for r in lora} == {"test examples + 2 refits on resampled training data"}
    for (_, _, method), found in read_row_evaluations(summary.run_dir).items():
        if method == "lora":
            assert len(found.generalization.refit_outcomes) == 2 and found.generalization.refits == "refits"
    fit = summary.run_dir / "fits" / "lora" / "easy"
    assert all(is_complete(path) and (path / "finetune.json").is_file() for path in refit_paths(fit, 2))
    drawn, _ = read_examples(summary.run_dir / "mixed-data" / "distributions" / "easy.refit1" / "train.json")
    original, _ = read_examples(root / "data" / "distributions" / "easy" / "train.json")
    prompts = [e["prompt"] for e in drawn]
    assert len(drawn) == len(original) and set(prompts) < {e["prompt"] for e in original}  # with replacement
