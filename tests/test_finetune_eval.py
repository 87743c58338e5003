"""finetune: saving and loading, evaluation through the shared metrics, live zero-/few-shot."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from distributions.data import load_split
from common import UserError
from actstore.models import load_model
from cli import finetune
from conftest import TOY_EXAMPLES, write_distribution, reseal
from finetune.baselines import evaluate_loglik_baseline, few_shot_prompts, response_logliks
from finetune.checkpoint import load_reward_model, save_reward_model
from finetune.evaluate import evaluate_reward_model, reward_scores
from finetune.reward_model import AdapterSettings, new_reward_model
from finetune.sequences import encode_examples
from finetune.train import TrainConfig, train_reward_model
from common.metrics import compute_metrics, pair_indices, pair_margins
from test_finetune_train import learnable_examples

TOY = [*TOY_EXAMPLES, {"prompt": "Say hi.\n### Response:\n", "responses": {"Hi!": 1.0, "Bye.": 0.0}}]
N_TOY_PAIRS = 2 + 1 + 1 + 1 + 3 + 1


@pytest.fixture
def toy_data(tmp_path):
    return write_distribution(tmp_path / "data", "toy", TOY, TOY)


def toy_sequences(tokenizer, data_dir, split="test"):
    return list(encode_examples(tokenizer, load_split(data_dir, "toy", split).examples, max_length=1024).sequences)


def randomized_reward_model(method):
    """A fresh tiny reward model whose trainable parts (head, adapter) are all non-zero."""
    tiny = load_model("tiny-random")
    model = new_reward_model(tiny.model, AdapterSettings(method), seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return tiny, model.eval()


# ----------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("method", ["lora", "prompt-tuning"])
def test_reload_gives_identical_scores(tmp_path, toy_data, method):
    tiny, model = randomized_reward_model(method)
    sequences = toy_sequences(tiny.tokenizer, toy_data)
    before = reward_scores(model, sequences, pad_id=tiny.tokenizer.pad_token_id, batch_size=4)
    save_reward_model(tmp_path / "run", model, {"model": "tiny-random", "model_id": tiny.model_id})
    loaded = load_reward_model(tmp_path / "run", device="cpu")  # the device of `model`: bitwise comparable
    after = reward_scores(loaded.model, sequences, pad_id=tiny.tokenizer.pad_token_id, batch_size=4)
    assert np.array_equal(before, after)
    assert np.ptp(before) > 0  # a constant score would make equality meaningless
    assert loaded.settings == model.settings


def test_run_directory_holds_no_pickles(tmp_path):
    tiny, model = randomized_reward_model("lora")
    save_reward_model(tmp_path / "run", model, {"model": "tiny-random", "model_id": tiny.model_id})
    files = sorted(p.relative_to(tmp_path / "run").as_posix() for p in (tmp_path / "run").rglob("*") if p.is_file())
    assert {"finetune.json", "head.safetensors", "adapter/adapter_model.safetensors", "adapter/adapter_config.json"} <= set(files)
    assert all(f.endswith((".json", ".safetensors", ".md")) for f in files), files


def test_reload_refuses_another_base_model(tmp_path):
    tiny, model = randomized_reward_model("lora")
    save_reward_model(tmp_path / "run", model, {"model": "tiny-random", "model_id": "tiny-random(seed=7)"})
    with pytest.raises(UserError, match="trained on 'tiny-random\\(seed=7\\)'"):
        load_reward_model(tmp_path / "run")


def test_reload_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not a finetune run directory"):
        load_reward_model(tmp_path)
    (tmp_path / "finetune.json").write_text("{broken")
    with pytest.raises(UserError, match="incomplete"):  # no completion marker: a save that did not finish
        load_reward_model(tmp_path)
    reseal(tmp_path)
    with pytest.raises(UserError, match="not valid JSON"):
        load_reward_model(tmp_path)


# ----------------------------------------------------------------------------- evaluation


def test_reward_scores_do_not_depend_on_batch_size(toy_data):
    tiny, model = randomized_reward_model("prompt-tuning")
    sequences = toy_sequences(tiny.tokenizer, toy_data)
    one = reward_scores(model, sequences, pad_id=tiny.tokenizer.pad_token_id, batch_size=1)
    many = reward_scores(model, sequences, pad_id=tiny.tokenizer.pad_token_id, batch_size=64)
    np.testing.assert_allclose(one, many, atol=1e-5)


def test_trained_model_evaluates_over_all_pairs(tmp_path):
    data = write_distribution(tmp_path / "data", "learnable", learnable_examples(24), learnable_examples(10))
    config = TrainConfig(method="lora", model="tiny-random", dataset="learnable", data_dir=str(data),
                         out=str(tmp_path / "run"), steps=30, batch_size=8, learning_rate=1e-2, precision="fp32")
    train_reward_model(config, progress=False)
    result = evaluate_reward_model(tmp_path / "run", "learnable", data_dir=str(data), split="test")
    assert result.metrics.n_pairs == 2 * 10 and result.metrics.n_examples == 10
    assert result.metrics.accuracy >= 0.9  # both dispreferred responses of every example, not only the trained one
    best, _ = pair_indices(result.example, result.is_best)
    expected = compute_metrics(pair_margins(result.scores, result.example, result.is_best), pair_example=result.example[best])
    assert result.metrics == expected


def test_zero_shot_loglik_is_total_loglik_of_response_and_eos(toy_data):
    tiny = load_model("tiny-random")
    sequences = toy_sequences(tiny.tokenizer, toy_data)
    live = response_logliks(tiny.model, sequences, pad_id=tiny.tokenizer.pad_token_id, batch_size=3)
    for s, value in zip(sequences, live):
        with torch.no_grad():
            logprobs = tiny.model(torch.tensor([s.ids])).logits[0].double().log_softmax(-1)
        n = len(s.prompt_ids)
        expected = sum(float(logprobs[n + k - 1, token]) for k, token in enumerate(s.continuation_ids))
        assert s.continuation_ids[-1] == tiny.tokenizer.eos_token_id
        assert value == pytest.approx(expected, abs=1e-4)


def test_live_zero_shot_equals_store_zero_shot(tmp_path, toy_data):
    from actstore import open_store
    from actstore.engine.extraction import ExtractConfig, extract
    from probes import ZeroShot
    from probes.sources import StoreSource

    [stored] = extract(ExtractConfig(model="tiny-random", datasets=("toy",), splits=("test",), layers="1",
                                     data_dir=str(toy_data), out=str(tmp_path / "stores"), dtype="float32",
                                     compute_dtype="float32", progress=False))
    sequences = open_store(stored.url).sequences()
    live = evaluate_loglik_baseline("tiny-random", "toy", data_dir=str(toy_data), split="test", batch_size=4)
    assert np.array_equal(live.example, sequences["example"])
    assert np.array_equal(live.is_best, sequences["score"] == 1.0)
    np.testing.assert_allclose(live.scores, sequences["loglik"], rtol=0, atol=1e-4)  # float32 forward passes
    source = StoreSource(stored.url)
    store_metrics = ZeroShot().fit(source).score(source)
    assert store_metrics.n_pairs == live.metrics.n_pairs == N_TOY_PAIRS
    assert abs(store_metrics.accuracy - live.metrics.accuracy) <= 1e-6


# ----------------------------------------------------------------------------- few-shot


def test_few_shot_prompts_are_seeded_and_never_show_the_example_itself(toy_data):
    examples = load_split(toy_data, "toy", "train").examples
    build = few_shot_prompts(examples, n_shots=4, seed=0, exclude_self=True)
    target = examples[0]
    prompt = build(target)
    assert prompt == build(target)  # same seed, same shots
    assert prompt.endswith("\n\n" + target.prompt)
    assert prompt.count("### Response:\n") == 5
    assert target.responses[target.best] not in prompt[: -len(target.prompt)]  # '5' only in the test prompt's own text
    shown = [e for e in examples[1:] if "\n\n" + e.prompt + e.responses[e.best] in prompt]
    assert len(shown) == 4
    other_seeds = {few_shot_prompts(examples, n_shots=4, seed=s, exclude_self=True)(target) for s in range(6)}
    assert len(other_seeds) > 1


def test_few_shot_needs_enough_shots(toy_data):
    examples = load_split(toy_data, "toy", "train").examples
    with pytest.raises(UserError, match="needs at least 7 examples"):
        few_shot_prompts(examples, n_shots=6, seed=0, exclude_self=True)


def test_few_shot_drops_and_counts_prompts_over_the_context(tmp_path):
    # 4 shots of 245 bytes (byte tokenizer: 1 token each) + "\n\n" leave ~40 of the tiny model's 1024
    # positions: the toy examples need 27 to 64, so some fit and some do not
    long_shots = [{"prompt": "x" * 223 + f" {i}\n### Response:\n", "responses": {"yes": 1.0, "no": 0.0}} for i in range(4)]
    data = write_distribution(tmp_path / "data", "longshots", long_shots)
    write_distribution(data, "toy", TOY, TOY)
    short = evaluate_loglik_baseline("tiny-random", "toy", data_dir=str(data), shots_from="toy", n_shots=2)
    assert short.dropped_examples == 0 and short.metrics.n_pairs == N_TOY_PAIRS
    result = evaluate_loglik_baseline("tiny-random", "toy", data_dir=str(data), shots_from="longshots", n_shots=4)
    assert 0 < result.dropped_examples < len(TOY)
    assert result.metrics.n_pairs + result.dropped_pairs == N_TOY_PAIRS
    assert result.n_examples == len(TOY)


# ----------------------------------------------------------------------------- CLI


def run(*args):
    return CliRunner().invoke(finetune, [str(a) for a in args])


def test_cli_train_then_eval(tmp_path, toy_data):
    trained = run("train", "--method", "prompt-tuning", "--model", "tiny-random", "--dataset", "toy",
                  "--data-dir", toy_data, "--out", tmp_path / "run", "--steps", "3", "--batch-size", "4",
                  "--precision", "fp32")
    assert trained.exit_code == 0, trained.output
    assert "prompt-tuning on toy: 3 steps x 4 pairs" in trained.output and "saved to" in trained.output
    shown = run("eval", tmp_path / "run", "--dataset", "toy", "--data-dir", toy_data, "--json")
    assert shown.exit_code == 0, shown.output
    row = json.loads(shown.output)
    assert row["method"] == "prompt-tuning" and row["n_pairs"] == N_TOY_PAIRS
    table = run("eval", tmp_path / "run", "--dataset", "toy", "--data-dir", toy_data)
    header = table.output.splitlines()[0].split()
    assert header[:4] == ["method", "dataset", "split", "accuracy"] and "rms_calibration_error" in header


def test_cli_zero_shot_table(toy_data):
    result = run("eval", "--method", "zero-shot", "--model", "tiny-random", "--dataset", "toy", "--data-dir", toy_data)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].startswith("zero-shot  toy")


@pytest.mark.parametrize("args, message", [
    (["eval", "--dataset", "toy"], "give a run directory"),
    (["eval", "--method", "few-shot", "--model", "tiny-random", "--dataset", "toy"], "needs --shots-from"),
    (["eval", "--method", "zero-shot", "--shots-from", "toy", "--dataset", "toy"], "applies to --method few-shot only"),
    (["eval", "--method", "zero-shot", "--model", "tiny-random", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["eval", "/no/such/run", "--dataset", "toy"], "not a finetune run directory"),
    (["train", "--method", "full", "--model", "tiny-random", "--dataset", "toy"], "unknown fine-tuning method"),
    (["train", "--method", "lora", "--model", "tiny-random", "--dataset", "toy", "--precision", "fp8"], "unknown --precision 'fp8'"),
])
def test_cli_bad_input_is_one_line_exit_2(toy_data, args, message):
    result = run(*args, "--data-dir", toy_data)
    assert result.exit_code == 2, result.output
    assert result.output.strip().count("\n") == 0 and message in result.output


@pytest.mark.bundled
def test_bundled_model_shared_prompt_logliks_match_full_sequences(bundled_model):
    """The real tokenizer (no BOS, pad = EOS) through the shared-prompt path."""
    from distributions.data import resolve_data_dir

    examples = load_split(resolve_data_dir("demo"), "arith_easy", "test").examples[:3]
    tokenizer, model = bundled_model.tokenizer, bundled_model.model
    sequences = list(encode_examples(tokenizer, examples, max_length=4096).sequences)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # padding must come from the mask, not the ids
    live = response_logliks(model, sequences, pad_id=tokenizer.pad_token_id, batch_size=9)
    for s, value in zip(sequences, live):
        with torch.no_grad():
            logprobs = model(torch.tensor([s.ids], device=model.device)).logits[0].double().log_softmax(-1)
        n = len(s.prompt_ids)
        assert value == pytest.approx(sum(float(logprobs[n + k - 1, t]) for k, t in enumerate(s.continuation_ids)), abs=2e-3)
