"""Every result comes from the data it claims: data files edited after extraction are noticed by
`probes fit`, `probes sweep` and `genies run` (which redoes exactly what the edit invalidates);
probes and reward models are replaced whole or not at all, even under SIGKILL."""

import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from common import UserError
from cli import actstore, finetune, probes
from conftest import REPO, example, write_distribution
from genies.evaluations import load_evaluation
from genies.plan import RunConfig
from genies.runner import run_benchmark
from test_bad_input import fails
from test_genies_runner import SHIFTS, arithmetic
from test_reliability import subprocess_env

EXAMPLES = [example(f"Question {i}?\n### Response:\n", {f"right {i}": 1.0, f"wrong answer {i}": 0.0}) for i in range(6)]


def flip_labels(path):
    """The same prompts and responses, another response preferred: the store's labels are now wrong."""
    data = json.loads(path.read_text())
    for item in data:
        texts = list(item["responses"])
        best = [item["responses"][t] for t in texts].index(1.0)
        item["responses"] = {text: float(i == (best + 1) % len(texts)) for i, text in enumerate(texts)}
    path.write_text(json.dumps(data))


# ----------------------------------------------------------------------------- probes


@pytest.fixture
def extracted(tmp_path):
    data = write_distribution(tmp_path / "data", "good", train=EXAMPLES, test=EXAMPLES)
    args = ["extract", "--model", "tiny-random", "--dataset", "good", "--data-dir", str(data), "--out",
            str(tmp_path / "s"), "--layers", "0,2", "--no-progress"]
    assert CliRunner().invoke(actstore, args).exit_code == 0
    return {"data": data, "train": str(tmp_path / "s" / "tiny-random" / "good" / "train.plain.zarr"), "tmp": tmp_path}


def test_probes_refuse_stores_whose_data_file_changed(extracted):
    train = extracted["train"]
    assert CliRunner().invoke(probes, ["fit", "--method", "mms", "--layer", "2", "--train", train,
                                       "--bootstrap", "0"]).exit_code == 0
    flip_labels(extracted["data"] / "distributions" / "good" / "train.json")
    changed = ("train.plain.zarr: the data file", "good/train.json changed since this store was extracted", "--overwrite")
    fails(probes, ["fit", "--method", "mms", "--layer", "2", "--train", train, "--bootstrap", "0"], *changed)
    fails(probes, ["sweep", "--methods", "mms", "--layers", "0,2", "--train", train, "--out", extracted["tmp"] / "sw"],
          *changed)
    assert not (extracted["tmp"] / "sw" / "sweep.csv").exists()


def test_probes_use_the_stores_own_labels_where_the_data_file_is_absent(extracted):
    """A laptop with only the stores: nothing to compare, the labels copied at extraction are used."""
    before = CliRunner().invoke(probes, ["fit", "--method", "mms", "--layer", "2", "--train", extracted["train"],
                                         "--bootstrap", "0", "--json"])
    shutil.rmtree(extracted["data"])
    after = CliRunner().invoke(probes, ["fit", "--method", "mms", "--layer", "2", "--train", extracted["train"],
                                        "--bootstrap", "0", "--json"])
    assert after.exit_code == 0, after.output
    assert json.loads(after.output) == json.loads(before.output)


# ----------------------------------------------------------------------------- genies run


def make_benchmark(root):
    for name, (offset, wrong_by) in {"easy": (1, 1), "hard": (40, 7), "trap": (3, 2), "ref": (5, 3)}.items():
        write_distribution(root / "data", name, arithmetic(14, offset, wrong_by), arithmetic(10, offset + 100, wrong_by))
    (root / "shifts.json").write_text(json.dumps(SHIFTS))


def run(root, out="run", stores="stores"):
    config = RunConfig(model="tiny-random", shifts=str(root / "shifts.json"), methods=("zero-shot", "mms"), layer=2,
                       data_dir=str(root / "data"), store_root=str(root / stores), out=root / out)
    lines = []
    return run_benchmark(config, log=lines.append), lines


def rows_by_key(summary):
    return {(r.source, r.target, r.method): r for r in summary.rows}


def test_genies_run_redoes_exactly_what_an_edited_data_file_invalidates(tmp_path):
    make_benchmark(tmp_path)
    first, _ = run(tmp_path)
    evaluations = sorted((tmp_path / "run" / "evaluations").rglob("*.json"))
    assert all(json.loads(p.read_text())["data"] for p in evaluations)  # each records its data fingerprints

    flip_labels(tmp_path / "data" / "distributions" / "hard" / "test.json")
    second, lines = run(tmp_path)
    assert second.stores_extracted == 1  # hard/test's plain store, extracted again over the stale one
    assert any("the data file of hard/test changed" in line for line in lines)
    assert second.fits_run == 0  # no fit reads hard/test
    # tested on hard/test: zero-shot, mms from easy, and the TTC methods trained on hard (mms, lat, logreg)
    assert second.evaluations_run == 5
    before, after = rows_by_key(first), rows_by_key(second)
    for method in ("mms", "zero-shot"):
        assert after[("easy", "hard", method)] != before[("easy", "hard", method)]
        assert after[("easy", "trap", method)] == before[("easy", "trap", method)]

    flip_labels(tmp_path / "data" / "distributions" / "easy" / "train.json")
    third, _ = run(tmp_path)
    assert third.stores_extracted == 1 and third.fits_run == 1  # easy/train and the mms fit on it
    # the same numbers as runs from scratch on the data as it is now
    assert second.rows != third.rows
    assert third.rows == run(tmp_path, out="fresh-run", stores="fresh-stores")[0].rows


def test_genies_run_redoes_a_fit_directory_left_incomplete(tmp_path):
    make_benchmark(tmp_path)
    first, _ = run(tmp_path)
    fit = tmp_path / "run" / "fits" / "mms" / "layer2" / "easy"
    (fit / "probe.json").unlink()
    (fit / "complete.json").unlink()
    for evaluation in (tmp_path / "run" / "evaluations" / "mms" / "layer2" / "easy").glob("*.json"):
        evaluation.unlink()  # as if killed after the fit directory appeared and before its evaluations
    again, _ = run(tmp_path)
    assert again.fits_run == 1 and (fit / "complete.json").is_file()
    assert again.rows == first.rows


# ----------------------------------------------------------------------------- SIGKILL while saving


def killed_while_sealing(cli_name, args, tmp_path):
    died = subprocess.run([sys.executable, str(REPO / "tests" / "kill_driver.py"), *map(str, args)], cwd=REPO,
                          env=subprocess_env(KILL_AT="seal", KILL_CLI=cli_name), capture_output=True, text=True,
                          timeout=300)
    assert died.returncode == -9 and "killed at seal" in died.stderr, died.stderr


def test_probe_fit_killed_while_saving_leaves_the_previous_probe_whole(extracted, tmp_path):
    out = tmp_path / "probe"
    fit = ["fit", "--method", "mms", "--layer", "2", "--train", extracted["train"], "--bootstrap", "0"]
    assert CliRunner().invoke(probes, [*fit, "--out", str(out)]).exit_code == 0
    evaluated = CliRunner().invoke(probes, ["eval", str(out), "--eval", extracted["train"], "--json", "--bootstrap", "0"])
    killed_while_sealing("probes", [fit[0], "--method", "logreg", *fit[3:], "--out", out], tmp_path)  # killed
    again = CliRunner().invoke(probes, ["eval", str(out), "--eval", extracted["train"], "--json", "--bootstrap", "0"])
    assert again.exit_code == 0 and again.output == evaluated.output  # still the mms probe, whole
    assert json.loads((out / "probe.json").read_text())["method"] == "mms"


def test_finetune_train_killed_while_saving_leaves_the_previous_model_whole(tmp_path):
    data = write_distribution(tmp_path / "data", "easy", arithmetic(8, 1, 1), arithmetic(4, 50, 1))
    out = tmp_path / "rm"
    train = ["train", "--method", "lora", "--model", "tiny-random", "--dataset", "easy", "--data-dir", str(data),
             "--out", str(out), "--batch-size", "4", "--precision", "fp32"]
    assert CliRunner().invoke(finetune, [*train, "--steps", "2"]).exit_code == 0
    evaluate = ["eval", str(out), "--dataset", "easy", "--data-dir", str(data), "--json"]
    before = CliRunner().invoke(finetune, evaluate)
    assert before.exit_code == 0, before.output
    record = json.loads((out / "finetune.json").read_text())
    killed_while_sealing("finetune", [*train, "--steps", "3", "--seed", "1"], tmp_path)
    after = CliRunner().invoke(finetune, evaluate)
    assert after.exit_code == 0 and after.output == before.output
    assert json.loads((out / "finetune.json").read_text()) == record  # the old config with the old adapter and head

    (out / "head.safetensors").write_bytes(b"\0" * 8)  # a damaged copy
    fails(finetune, evaluate, "head.safetensors changed after it was saved")


def test_rerun_after_a_kill_between_fits_keeps_every_methods_sweep_rows(tmp_path):
    make_benchmark(tmp_path)
    config = RunConfig(model="tiny-random", shifts=str(tmp_path / "shifts.json"), methods=("zero-shot", "mms", "logreg"),
                       data_dir=str(tmp_path / "data"), store_root=str(tmp_path / "stores"), out=tmp_path / "run")
    first = run_benchmark(config, log=lambda line: None)
    sweep = tmp_path / "run" / "sweeps" / "easy.csv"
    rows = without_timings(sweep)
    # as if killed after the mms fit on easy was saved and before the logreg one was
    shutil.rmtree(tmp_path / "run" / "fits" / "logreg" / "layer-best-1se" / "easy")
    shutil.rmtree(tmp_path / "run" / "evaluations" / "logreg" / "layer-best-1se" / "easy")
    again = run_benchmark(config, log=lambda line: None)
    assert again.fits_run == 1 and again.rows == first.rows
    assert without_timings(sweep) == rows


def without_timings(path):
    from dataclasses import replace

    from probes.sweep import read_csv

    return sorted(repr(replace(row, fit_seconds=0.0)) for row in read_csv(path))


def test_genies_run_recomputes_an_edited_evaluation(tmp_path):
    make_benchmark(tmp_path)
    first, _ = run(tmp_path)
    path = tmp_path / "run" / "evaluations" / "mms" / "layer2" / "easy" / "hard.json"
    record = json.loads(path.read_text())
    record["accuracy"] = 1.0
    path.write_text(json.dumps(record))
    with pytest.raises(UserError, match="changed since it was saved"):
        load_evaluation(path)
    again, _ = run(tmp_path)
    assert again.evaluations_run == 1 and again.rows == first.rows


def test_genies_run_neither_reuses_a_store_nor_a_fit_that_is_not_what_its_place_says(tmp_path):
    make_benchmark(tmp_path)
    first, _ = run(tmp_path)
    stores = tmp_path / "stores" / "tiny-random"
    shutil.rmtree(stores / "trap" / "test.plain.zarr")
    shutil.copytree(stores / "hard" / "test.plain.zarr", stores / "trap" / "test.plain.zarr")
    shutil.rmtree(tmp_path / "run" / "evaluations")
    again, _ = run(tmp_path)  # another file's fingerprint: extracted again
    assert again.stores_extracted == 1 and again.rows == first.rows

    layer3 = RunConfig(model="tiny-random", shifts=str(tmp_path / "shifts.json"), methods=("zero-shot", "mms"), layer=3,
                       data_dir=str(tmp_path / "data"), store_root=str(tmp_path / "stores"), out=tmp_path / "run3")
    run_benchmark(layer3, log=lambda line: None)  # another RUN_DIR: a run directory holds one layer rule
    fits = tmp_path / "run" / "fits" / "mms"
    shutil.rmtree(fits / "layer2" / "easy")
    shutil.copytree(tmp_path / "run3" / "fits" / "mms" / "layer3" / "easy", fits / "layer2" / "easy")
    shutil.rmtree(tmp_path / "run" / "evaluations" / "mms" / "layer2")
    refit, _ = run(tmp_path)  # the fit records the other run's settings: not this run's, fitted again
    assert refit.fits_run == 1 and refit.rows == first.rows


def test_runner_sources_refuse_a_store_whose_metadata_contradicts_its_place(extracted, tmp_path):
    from genies.steps import Sources

    config = RunConfig(model="tiny-random", store_root=str(tmp_path / "s"), out=tmp_path / "run")
    assert Sources(config).get("good", "train", ("plain",)).meta["dataset"] == "good"
    shutil.copytree(tmp_path / "s" / "tiny-random" / "good", tmp_path / "s" / "tiny-random" / "other")
    with pytest.raises(UserError, match="holds dataset 'good', but its location says 'other'"):
        Sources(config).get("other", "train", ("plain",))


def test_genies_run_command_after_a_data_edit(tmp_path):
    from cli import genies

    make_benchmark(tmp_path)
    args = ["run", "--model", "tiny-random", "--shifts", str(tmp_path / "shifts.json"), "--methods", "zero-shot,mms",
            "--layer", "2", "--data-dir", str(tmp_path / "data"), "--store-root", str(tmp_path / "stores"),
            "--out", str(tmp_path / "run")]
    assert CliRunner().invoke(genies, args).exit_code == 0
    results = (tmp_path / "run" / "results.csv").read_text()
    flip_labels(tmp_path / "data" / "distributions" / "trap" / "test.json")
    again = CliRunner().invoke(genies, args)
    assert again.exit_code == 0, again.output
    assert "the data file of trap/test changed" in again.output and "reused everything" not in again.output
    assert (tmp_path / "run" / "results.csv").read_text() != results
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["data_fingerprints"]["trap/test"].startswith("sha256:")


def test_genies_run_does_not_reuse_a_store_made_with_other_settings(tmp_path):
    """A store at the runner's place, extracted by hand with only some layers, is refused, not swept."""
    make_benchmark(tmp_path)
    by_hand = ["extract", "--model", "tiny-random", "--dataset", "easy", "--split", "train", "--data-dir",
               str(tmp_path / "data"), "--out", str(tmp_path / "stores"), "--layers", "0,2", "--no-progress"]
    assert CliRunner().invoke(actstore, by_hand).exit_code == 0
    with pytest.raises(UserError, match=r"train.plain.zarr: holds an extraction made with other settings \(layers: "
                                        r"stored \[0, 2\], this run \[0, 1, 2, 3, 4\]\); use another --store-root"):
        run(tmp_path)


def test_report_refuses_a_results_csv_edited_after_the_run(tmp_path):
    from cli import genies

    make_benchmark(tmp_path)
    run(tmp_path)
    assert CliRunner().invoke(genies, ["report", str(tmp_path / "run")]).exit_code == 0
    results = tmp_path / "run" / "results.csv"
    results.write_text(results.read_text().replace("0.", "0.9", 1))
    fails(genies, ["report", str(tmp_path / "run")], "results.csv: changed since `genies run` wrote it")
    fails(genies, ["compare", str(tmp_path / "run"), str(tmp_path / "run")], "results.csv: changed since")
    (tmp_path / "run" / "run.json").unlink()  # outcomes.json still vouches for the results it was written with
    fails(genies, ["report", str(tmp_path / "run")], "results.csv: changed since", "outcomes.json")
    fails(genies, ["compare", str(tmp_path / "run"), str(tmp_path / "run")], "results.csv: changed since")
    (tmp_path / "run" / "outcomes.json").unlink()  # nothing vouches for it now
    fails(genies, ["report", str(tmp_path / "run")], "results.csv: no record of the run vouches for it")
    run(tmp_path)  # the same run again rewrites it from its finished evaluations
    assert CliRunner().invoke(genies, ["report", str(tmp_path / "run")]).exit_code == 0
    (tmp_path / "run" / "run.json").unlink()  # an unedited results.csv: shown, with what could not be checked
    shown = CliRunner().invoke(genies, ["report", str(tmp_path / "run")])
    assert shown.exit_code == 0, shown.output
    assert "not checked: " in shown.output and "run.json is missing" in shown.output
    compared = CliRunner().invoke(genies, ["compare", str(tmp_path / "run"), str(tmp_path / "run")])
    assert compared.exit_code == 0, compared.output
    assert "compared with itself" in compared.output and "run.json is missing" in compared.output
