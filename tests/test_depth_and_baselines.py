"""Relative depth, the target-tuned capability's eligibility, degenerate fits, and short model names."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from common import UserError
from common.metrics import fit_degeneracy, fit_temperature, score_degeneracy
from genies.generalization import ZERO_SHOT, Evaluation, rows_with_evaluations
from conftest import write_vouched_results
from manifests import Shift

SHIFT = Shift("src", "tgt", "extreme", "difficulty", target_reference="ref")


def evaluations(accuracy_on_reference: dict[str, float], layer: int = 12, **overrides) -> list[Evaluation]:
    """What the runner would have for one shift: each method on the target and source, zero-shot, and every
    method trained and tested on the reference."""
    found = [Evaluation(ZERO_SHOT, "", "tgt", 0.5), Evaluation(ZERO_SHOT, "", "src", 0.6),
             Evaluation(ZERO_SHOT, "", "ref", accuracy_on_reference[ZERO_SHOT])]
    for method in ("mms", "lora"):
        extra = overrides.get(method, {})
        found += [Evaluation(method, "src", "tgt", 0.6, layer=layer if method == "mms" else None, **extra),
                  Evaluation(method, "src", "src", 0.8, layer=layer if method == "mms" else None, **extra),
                  Evaluation(method, "ref", "ref", accuracy_on_reference[method], **extra)]
    return found


def test_relative_depth_is_layer_over_n_layers_in_rows_and_results_csv(tmp_path):
    from genies.results_csv import COLUMNS, read_results, write_results

    rows = [row for row, _ in rows_with_evaluations([SHIFT], evaluations({ZERO_SHOT: 0.5, "mms": 0.9, "lora": 0.7}),
                                                    [ZERO_SHOT, "mms"], n_layers=30)]
    mms = next(r for r in rows if r.method == "mms")
    assert mms.layer == 12 and mms.n_layers == 30 and mms.depth == pytest.approx(12 / 30)
    assert next(r for r in rows if r.method == ZERO_SHOT).depth is None  # no layer, no depth
    assert COLUMNS[COLUMNS.index("layer") + 1] == "depth"
    write_results(tmp_path / "results.csv", rows)
    assert read_results(tmp_path / "results.csv") == rows


def test_layer_takes_an_integer_layer_or_a_relative_depth_and_refuses_ambiguous_values(tmp_path):
    from cli import genies
    from genies.plan import RunConfig, depth_layer, layer_choice

    assert layer_choice("12") == 12 and layer_choice("0") == 0 and layer_choice("0.6") == 0.6
    assert layer_choice("best") == "best"
    for ambiguous in ("1.0", "0.0", "2.5", "-0.3"):
        with pytest.raises(UserError, match=f"--layer {ambiguous} is ambiguous"):
            layer_choice(ambiguous)
    assert depth_layer(0.6, 30) == 18 and depth_layer(0.6, 18) == 11 and depth_layer(0.99, 4) == 4
    for shallow in (0.1, 0.01, 1e-9):  # a block's output, never the embeddings (constant at the last token)
        assert depth_layer(shallow, 4) == 1 and depth_layer(shallow, 2) == 1
    assert RunConfig(model="tiny-random", out=tmp_path, layer=0.5).layer_tag == "depth0.5"
    result = CliRunner().invoke(genies, ["run", "--model", "tiny-random", "--out", str(tmp_path), "--layer", "1.0"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "is ambiguous" in result.output
    help_text = " ".join(CliRunner().invoke(genies, ["run", "--help"]).output.split())
    assert "an integer is a layer number" in help_text and "a decimal strictly between 0 and 1 is a relative depth" \
        in help_text and "--model-name" in help_text


def sealed_fit(directory, losses):
    """A live fit's run directory as finetune leaves it: sealed, its record keeping the per-step losses."""
    from common.atomic import atomic_directory
    from finetune.checkpoint import FORMAT, RECORD_FILE

    with atomic_directory(directory) as staging:
        (staging / RECORD_FILE).write_text(json.dumps({"format": FORMAT, "model": "tiny-random", "model_id": "t",
                                                       "settings": {}, "result": {"losses": losses}}))


def test_an_untrained_live_method_is_never_the_target_tuned_capability(tmp_path):
    from genies.baselines import live_training_reasons
    from genies.report import ttc_lines

    sealed_fit(tmp_path / "fits" / "lora" / "ref", [0.693, 0.693, 0.692, 0.693, 0.691])
    sealed_fit(tmp_path / "fits" / "lora" / "src", [0.69, 0.5, 0.3, 0.2, 0.1])
    reasons = live_training_reasons(tmp_path / "fits", ["lora"])
    assert set(reasons) == {("lora", "ref")} and reasons[("lora", "ref")].startswith("barely trained: final training")
    # lora is the most accurate on the reference, by chance: it must not be what DE divides by
    found = evaluations({ZERO_SHOT: 0.55, "mms": 0.8, "lora": 0.95})
    rows = [row for row, _ in rows_with_evaluations([SHIFT], found, [ZERO_SHOT, "mms", "lora"],
                                                    ineligible=lambda e: reasons.get((e.method, e.trained_on)))]
    assert {r.target_tuned_method for r in rows} == {"mms"} and {r.target_tuned_capability for r in rows} == {0.8}
    assert rows[0].target_tuned_excluded.startswith("lora (barely trained: final training loss 0.691")
    text = "\n".join(ttc_lines(rows))
    assert "| ref | mms | 0.800 | best accuracy among the eligible methods | lora (barely trained" in text
    # zero-shot more accurate than every eligible trained method: it is the TTC, and nothing was disqualified
    rows = [row for row, _ in rows_with_evaluations([SHIFT], evaluations({ZERO_SHOT: 0.99, "mms": 0.8, "lora": 0.95}),
                                                    ineligible=lambda e: reasons.get((e.method, e.trained_on)))]
    text = "\n".join(ttc_lines(rows))
    assert "| ref | zero-shot | 0.990 | zero-shot (untrained) was more accurate than every eligible trained" in text
    assert "No trained method qualifies" not in text
    # when no trained method qualifies, the report says so (zero-shot is then the TTC)
    rows = [row for row, _ in rows_with_evaluations([SHIFT], evaluations({ZERO_SHOT: 0.55, "mms": 0.5, "lora": 0.95},
                                                                         mms={"degenerate": "constant scores"}),
                                                    ineligible=lambda e: reasons.get((e.method, e.trained_on)))]
    assert {r.target_tuned_method for r in rows} == {ZERO_SHOT}
    assert "**No trained method qualifies as the TTC on 1 reference(s)** (ref)" in "\n".join(ttc_lines(rows))


def test_degenerate_fits_are_recognised_from_their_margins():
    assert fit_degeneracy(np.zeros(10)).startswith("constant scores")
    assert fit_degeneracy(np.array([-1.0, 0.5, -0.2])).startswith("no separation of its training pairs")
    assert fit_temperature(np.array([-1.0, 0.5, -0.2])) == pytest.approx(1e6)  # the bound it names
    assert fit_degeneracy(np.array([1.0, 0.5, -0.2])) is None
    assert score_degeneracy(np.array([0.0, 0.0]), 1.0).startswith("constant scores")
    assert score_degeneracy(np.array([1.0, -2.0]), 2e9).startswith("calibration temperature at its bound")
    assert score_degeneracy(np.array([1.0, -2.0]), fit_temperature(np.array([1.0, 2.0, -0.5]))) is None


def test_a_planted_degenerate_fit_is_flagged_in_the_probe_results_csv_and_report(tmp_path):
    from genies.report import report_from_rows
    from genies.results_csv import load_run
    from probes.estimator import DEGENERATE_NOTE, make_probe
    from synthetic import planted

    data = planted(n_examples=30, layers=(0, 1), signal_layers=(1,), views=("plain",))
    per_example = np.random.default_rng(1).standard_normal((30, data.residual["plain"][0].shape[1]))
    data.residual["plain"][0] = np.repeat(per_example, 3, axis=0)  # layer 0: a prompt's responses alike
    flat = make_probe("mms", 0).fit(data.source())
    assert flat.notes_[DEGENERATE_NOTE].startswith("constant scores on its training pairs")
    assert DEGENERATE_NOTE not in make_probe("mms", 1).fit(data.source()).notes_

    found = evaluations({ZERO_SHOT: 0.5, "mms": 0.5, "lora": 0.7},
                        mms={"degenerate": flat.notes_[DEGENERATE_NOTE]})
    rows = [row for row, _ in rows_with_evaluations([SHIFT], found, [ZERO_SHOT, "mms"], n_layers=30)]
    write_vouched_results(tmp_path, rows, model="tiny-random")
    mms = next(r for r in load_run(tmp_path) if r.method == "mms")
    assert mms.degenerate.startswith("constant scores on its training pairs")
    report = report_from_rows(tmp_path, rows, None, n_bootstrap=100)
    text = report.path.read_text()
    assert "## Degenerate fits" in text and "**Warning: 1 fit(s) are degenerate.**" in text
    shift_row = next(line for line in text.splitlines() if line.startswith("| 1 | src -> tgt") and "| mms |" in line)
    assert "**degenerate**" in shift_row and "0.600" not in shift_row  # never shown as an ordinary number
    assert report.fit_warnings == ["mms trained on src: degenerate fit (constant scores on its training pairs (every "
                                   "pair tied)); its accuracies are not results"]


def test_short_model_names_never_a_long_path(tmp_path):
    from common.model_names import model_name
    from genies.plan import RunConfig

    assert model_name("smollm2-135m") == "smollm2-135m"
    assert model_name("/very/long/path/to/the/models/SmolLM2-135M-Instruct.Q4_1.gguf") == "SmolLM2-135M-Instruct.Q4_1"
    assert model_name("meta-llama/Llama-2-7b-hf") == "Llama-2-7b-hf"
    checkpoint = tmp_path / "checkpoints" / "step-1000"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text(json.dumps({"_name_or_path": "HuggingFaceTB/SmolLM2-360M"}))
    assert model_name(str(checkpoint)) == "SmolLM2-360M"
    (checkpoint / "config.json").write_text(json.dumps({"_name_or_path": "/home/me/x"}))
    assert model_name(str(checkpoint)) == "step-1000"
    assert RunConfig(model=str(checkpoint), out=tmp_path).label == "step-1000"
    assert RunConfig(model=str(checkpoint), out=tmp_path, model_name="mine").label == "mine"
    with pytest.raises(UserError, match="--model-name 'a/b': give a short label"):
        RunConfig(model="tiny-random", out=tmp_path, model_name="a/b")


def test_a_users_gguf_is_converted_once_and_cached_per_compute_dtype(tmp_path, monkeypatch):
    """The conversion (de-quantizing the GGUF) runs once; later loads, in either dtype, read the sealed cache."""
    import actstore.models.gguf_cache as models
    from actstore.models import ModelSpec, load_model, tiny_random_llama

    monkeypatch.setenv("GENIES_HOME", str(tmp_path / "home"))
    gguf = tmp_path / "downloads" / "My-Model.Q4_K_M.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    conversions = []

    def convert(directory, name, staging):  # stands in for transformers' GGUF de-quantization
        conversions.append((directory, name))
        tiny = tiny_random_llama(seed=5)
        tiny.model.save_pretrained(staging)
        tiny.tokenizer.save_pretrained(staging)

    monkeypatch.setattr(models, "_convert_gguf", convert)
    first = load_model(ModelSpec(str(gguf)))
    again = load_model(ModelSpec(str(gguf)))
    in_bf16 = load_model(ModelSpec(str(gguf), compute_dtype="bfloat16"))
    assert conversions == [(gguf.parent.resolve(), gguf.name)]
    cache = models.gguf_cache(gguf, "float32")
    assert cache.name.startswith("My-Model.Q4_K_M-") and (cache / "complete.json").is_file()
    assert cache.with_name(cache.name + ".bfloat16").is_dir() and in_bf16.compute_dtype == "bfloat16"
    assert first.model_id == again.model_id == str(gguf.resolve())
    for mine, theirs in zip(first.model.state_dict().values(), tiny_random_llama(seed=5).model.state_dict().values()):
        assert np.array_equal(mine.numpy(), theirs.numpy())


def test_a_single_shift_run_prints_n_a_for_pearson_r(tmp_path):
    from cli import genies

    rows = [row for row, _ in rows_with_evaluations([SHIFT], evaluations({ZERO_SHOT: 0.5, "mms": 0.9, "lora": 0.7}),
                                                    [ZERO_SHOT, "mms", "lora"], n_layers=30)]
    write_vouched_results(tmp_path, rows, model="tiny-random")
    result = CliRunner().invoke(genies, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "generalization vs zero-shot: Pearson r = n/a (n = 2; 95% bootstrap interval)" in result.output
    assert "nan" not in result.output
