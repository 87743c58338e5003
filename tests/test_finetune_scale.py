"""Training large models: gradient checkpointing (and the full-sequence pass it needs), QLoRA on a 4-bit
base, a base model shared with other work, and the peak memory a run reports."""

import numpy as np
import pytest
import torch

from actstore.models import load_model, tiny_random_llama
from conftest import write_distribution
from finetune.evaluate import evaluate_reward_model
from finetune.memory import wants_checkpointing
from finetune.reward_model import AdapterSettings, new_reward_model
from finetune.sequences import encode_examples
from finetune.shared_prompts import collate_groups, group_by_prompt
from finetune.train import TrainConfig, train_reward_model
from test_finetune_train import learnable_examples
from test_finetune_train import toy_config as train_config


@pytest.fixture
def toy_data(tmp_path):
    return write_distribution(tmp_path / "data", "toy", learnable_examples(), learnable_examples(6))


def toy_config(toy_data, out, **overrides) -> TrainConfig:
    return train_config(toy_data, out, **{"steps": 3, **overrides})  # a few steps: these tests check memory and sharing


@pytest.mark.parametrize("method", ["lora", "prompt-tuning"])
def test_group_row_rewards_equal_each_sequence_alone(method):
    """One row per prompt group (prompt once, its responses side by side, mixed lengths) gives the
    rewards of each whole sequence run alone, virtual tokens at the row's root."""
    tiny = tiny_random_llama()
    model = new_reward_model(tiny.model, AdapterSettings(method), seed=0).eval()
    with torch.no_grad():
        model.head.weight.normal_()
    sequences = list(encode_examples(tiny.tokenizer, [e for e in _examples()], max_length=1024).sequences)
    groups = group_by_prompt(sequences)
    batch = collate_groups([[sequences[i] for i in g.members] for g in groups], tiny.tokenizer.pad_token_id)
    body = model.causal_lm.get_decoder()
    with torch.no_grad():
        shared = model(**batch)
        alone = []
        for s in sequences:
            embeds = body.get_input_embeddings()(torch.tensor([s.ids]))
            if method == "prompt-tuning":
                embeds = torch.cat([model.peft_model.get_prompt(batch_size=1).to(embeds.dtype), embeds], dim=1)
            alone.append(model.head(body(inputs_embeds=embeds).last_hidden_state[0, -1])[0])
    assert shared.shape == (len(sequences),) and len({len(s.ids) for s in sequences}) > 1
    torch.testing.assert_close(shared, torch.stack(alone), atol=1e-5, rtol=1e-5)


def _examples():
    from distributions.split_file import Example

    return [Example(index=i, prompt=e["prompt"], responses=list(e["responses"]), scores=list(e["responses"].values()))
            for i, e in enumerate(learnable_examples(5))]


def test_gradient_checkpointing_trains_like_the_shared_pass(toy_data, tmp_path, monkeypatch):
    import transformers.modeling_utils

    real_checkpoint, calls = transformers.modeling_utils.checkpoint, []

    def counting_checkpoint(*args, **kwargs):
        calls.append(1)
        return real_checkpoint(*args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", counting_checkpoint)
    # no dropout: the two passes have different shapes, so they would draw different dropout masks
    on = train_reward_model(toy_config(toy_data, tmp_path / "on", gradient_checkpointing=True, lora_dropout=0.0),
                            progress=False)
    assert calls and on.gradient_checkpointing
    calls.clear()
    off = train_reward_model(toy_config(toy_data, tmp_path / "off", gradient_checkpointing=False, lora_dropout=0.0),
                             progress=False)
    assert not calls and not off.gradient_checkpointing
    np.testing.assert_allclose(on.losses, off.losses, atol=1e-4)
    assert on.peak_host_rss_bytes > 100 * 2**20 and on.peak_gpu_bytes is None  # no GPU here


def test_checkpointing_is_on_by_default_from_a_billion_parameters(monkeypatch):
    tiny = tiny_random_llama().model
    assert not wants_checkpointing(None, tiny) and wants_checkpointing(True, tiny)
    monkeypatch.setattr("finetune.memory.CHECKPOINTING_FROM_PARAMETERS", sum(p.numel() for p in tiny.parameters()))
    assert wants_checkpointing(None, tiny) and not wants_checkpointing(False, tiny)


def test_shared_base_model_comes_back_unchanged(toy_data, tmp_path):
    shared = load_model("tiny-random")
    before = {name: p.detach().clone() for name, p in shared.model.named_parameters()}
    train_reward_model(toy_config(toy_data, tmp_path / "run", gradient_checkpointing=True), progress=False,
                       loaded=shared)
    assert not any("lora" in name for name, _ in shared.model.named_modules())
    assert not shared.model.is_activation_checkpointing
    after = dict(shared.model.named_parameters())
    assert before.keys() == after.keys() and all(torch.equal(before[n], after[n]) for n in before)
    result = evaluate_reward_model(tmp_path / "run", "toy", data_dir=str(toy_data), loaded=shared)
    assert result.metrics.n_pairs == 12 and not any("lora" in name for name, _ in shared.model.named_modules())


def test_qlora_trains_an_adapter_on_a_4bit_base(toy_data, tmp_path):
    import bitsandbytes as bnb

    tiny = tiny_random_llama()
    tiny.model.to(torch.bfloat16).save_pretrained(tmp_path / "base")
    tiny.tokenizer.save_pretrained(tmp_path / "base")
    config = toy_config(toy_data, tmp_path / "run", model=str(tmp_path / "base"), quantize="4bit", precision="bf16",
                        steps=2, batch_size=4)
    result = train_reward_model(config, progress=False)
    assert len(result.losses) == 2 and np.isfinite(result.losses).all()
    from finetune.checkpoint import load_reward_model

    reloaded = load_reward_model(tmp_path / "run", device="cpu")
    assert isinstance(reloaded.model.causal_lm.model.layers[0].mlp.up_proj, bnb.nn.Linear4bit)
    assert reloaded.record["config"]["quantize"] == "4bit"


@pytest.mark.parametrize("method", ["lora", "prompt-tuning"])
def test_bf16_training_loads_a_bfloat16_base_and_evaluates_on_one(toy_data, tmp_path, monkeypatch, method):
    import actstore.models

    real_load, specs = actstore.models.loading.load_model, []
    monkeypatch.setattr(actstore.models.loading, "load_model", lambda spec: specs.append(spec) or real_load(spec))
    result = train_reward_model(toy_config(toy_data, tmp_path / "run", method=method, precision="bf16", steps=2),
                                progress=False)
    assert result.precision == "bf16" and np.isfinite(result.losses).all()
    evaluated = evaluate_reward_model(tmp_path / "run", "toy", data_dir=str(toy_data))
    assert [spec.compute_dtype for spec in specs] == ["bfloat16", "bfloat16"]  # trained on, then evaluated on
    assert evaluated.metrics.n_pairs == 12 and np.isfinite(evaluated.scores).all()


def test_training_on_offloaded_weights_is_one_line_error(toy_data, tmp_path):
    from click.testing import CliRunner

    from cli import finetune

    tiny = tiny_random_llama()
    tiny.model.save_pretrained(tmp_path / "base")
    tiny.tokenizer.save_pretrained(tmp_path / "base")
    result = CliRunner().invoke(finetune, ["train", "--method", "lora", "--model", str(tmp_path / "base"), "--dataset", "toy",
                                           "--data-dir", str(toy_data), "--out", str(tmp_path / "run"), "--steps", "1",
                                           "--max-memory", "cpu=200KB"])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "adapters need every weight on a device" in result.output
    assert not (tmp_path / "run").exists()
