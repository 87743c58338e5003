"""finetune: pair sampling, the reward model, and the training loop on the tiny random model."""

import json

import numpy as np
import pytest
import torch

from distributions.data import load_split
from common import UserError
from actstore.models import tiny_random_llama
from conftest import write_distribution
from finetune.pairs import PairCollator, padded_tokens, sample_training_pairs
from finetune.reward_model import AdapterSettings, new_reward_model, pair_loss
from finetune.sequences import TokenSequence, encode_examples
from finetune.shared_prompts import collate_groups
from finetune.train import TrainConfig, default_steps, train_reward_model

PROMPT = "Is this answer good?\n### Response:\n"


def learnable_examples(n: int = 24) -> list[dict]:
    """The preferred response always says 'good', the others never do: learnable from the last token."""
    bad = ["bad", "awful", "poor", "no"]
    return [
        {"prompt": f"{PROMPT}({i})", "responses": {"good": 1.0, bad[i % 4]: 0.0, bad[(i + 1) % 4]: 0.0}}
        for i in range(n)
    ]



@pytest.fixture
def toy_data(tmp_path):
    return write_distribution(tmp_path / "data", "toy", learnable_examples(), learnable_examples(12))


def toy_config(toy_data, out, **overrides) -> TrainConfig:
    settings = dict(method="lora", model="tiny-random", dataset="toy", data_dir=str(toy_data), out=str(out),
                    steps=30, batch_size=8, learning_rate=1e-2, precision="fp32", seed=0)
    return TrainConfig(**{**settings, **overrides})


def test_pairs_one_per_example_seeded(toy_data):
    tiny = tiny_random_llama()
    encoded = encode_examples(tiny.tokenizer, load_split(toy_data, "toy", "train").examples, max_length=1024)
    pairs = sample_training_pairs(encoded, seed=3)
    assert len(pairs) == 24
    assert all(p.chosen.is_best and not p.rejected.is_best and p.chosen.example == p.rejected.example for p in pairs)
    again = sample_training_pairs(encoded, seed=3)
    assert [p.rejected.response for p in pairs] == [p.rejected.response for p in again]
    other_seed = sample_training_pairs(encoded, seed=4)
    assert [p.rejected.response for p in pairs] != [p.rejected.response for p in other_seed]


def test_collator_shares_prompts_and_alternates_chosen_rejected(toy_data):
    tiny = tiny_random_llama()
    encoded = encode_examples(tiny.tokenizer, load_split(toy_data, "toy", "train").examples[:2], max_length=1024)
    pairs = sample_training_pairs(encoded, seed=0)
    [batch] = PairCollator(pad_id=tiny.tokenizer.pad_token_id)(pairs)
    assert batch["prompt_ids"].shape[0] == 2 and batch["continuation_ids"].shape[0] == 4
    assert batch["group"].tolist() == [0, 0, 1, 1]
    chosen = pairs[0].chosen.continuation_ids
    assert batch["continuation_ids"][0, : len(chosen)].tolist() == list(chosen)
    assert chosen[-1] == tiny.tokenizer.eos_token_id  # the reward is read at the appended EOS
    rejected = pairs[0].rejected.continuation_ids
    assert batch["continuation_ids"][1, : len(rejected)].tolist() == list(rejected)


def sequence(example, response, prompt, continuation):
    return TokenSequence(tuple(prompt), tuple(continuation), example=example, response=response, is_best=response == 0)


@pytest.mark.parametrize("method", ["lora", "prompt-tuning"])
def test_reward_equals_full_sequence_and_ignores_batching(method):
    tiny = tiny_random_llama()
    model = new_reward_model(tiny.model, AdapterSettings(method), seed=0)
    with torch.no_grad():
        model.head.weight.normal_()
    model.eval()
    groups = [
        [sequence(0, 0, [1, 5, 6, 7, 8], [10, 11, 2]), sequence(0, 1, [1, 5, 6, 7, 8], [12, 2])],
        [sequence(1, 0, [1, 20], [30, 31, 32, 2]), sequence(1, 1, [1, 20], [40, 2])],
    ]
    with torch.no_grad():
        together = model(**collate_groups(groups, pad_id=0))
        alone = model(**collate_groups(groups[1:], pad_id=0))
        # the same reward computed the plain way: whole sequence, hidden state at its last token
        s = groups[0][0]
        ids = torch.tensor([s.ids])
        if method == "prompt-tuning":
            embeds = torch.cat([model.peft_model.get_prompt(1), tiny.model.get_input_embeddings()(ids)], dim=1)
            hidden = tiny.model.get_decoder()(inputs_embeds=embeds).last_hidden_state
        else:
            hidden = tiny.model.get_decoder()(input_ids=ids).last_hidden_state
        plain = model.head(hidden[0, -1])
    assert together.shape == (4,)
    assert torch.allclose(together[2:], alone, atol=1e-5)
    assert together[0].item() == pytest.approx(plain.item(), abs=1e-5)


def test_fresh_model_starts_at_chance_loss():
    tiny = tiny_random_llama()
    model = new_reward_model(tiny.model, AdapterSettings("lora"), seed=0)
    groups = [[sequence(0, 0, [1, 40], [41, 2]), sequence(0, 1, [1, 40], [42, 2])]]
    assert pair_loss(model(**collate_groups(groups, pad_id=0))).item() == pytest.approx(np.log(2), abs=1e-6)


def test_pair_loss_reads_rows_as_chosen_rejected_twos():
    rewards = torch.tensor([2.0, 0.0, 0.0, 2.0])  # pairs (2 over 0) and (0 over 2)
    logsigmoid = torch.nn.functional.logsigmoid
    expected = -(logsigmoid(torch.tensor(2.0)) + logsigmoid(torch.tensor(-2.0))) / 2
    assert pair_loss(rewards).item() == pytest.approx(expected.item())


@pytest.mark.parametrize("method", ["lora", "prompt-tuning"])
def test_training_lowers_loss_on_learnable_set(toy_data, tmp_path, method):
    result = train_reward_model(toy_config(toy_data, tmp_path / method, method=method), progress=False)
    assert result.steps == 30 and len(result.losses) == 30
    assert result.losses[0] == pytest.approx(np.log(2), abs=1e-6)
    assert result.mean_loss("last") < 0.5 * result.mean_loss("first")
    record = json.loads((tmp_path / method / "finetune.json").read_text())
    assert record["result"]["losses"] == pytest.approx(result.losses)
    assert record["settings"]["method"] == method


def test_lora_adapter_itself_is_trained(toy_data, tmp_path):
    from safetensors.torch import load_file

    train_reward_model(toy_config(toy_data, tmp_path / "run", steps=10), progress=False)
    tensors = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    lora_b = [t for name, t in tensors.items() if "lora_B" in name]
    assert lora_b and all(name.endswith(("q_proj.lora_B.weight", "v_proj.lora_B.weight"))
                          for name in tensors if "lora_B" in name)
    assert any(t.abs().max() > 0 for t in lora_b)  # lora_B starts at zero


def test_a_step_is_split_into_passes_within_the_token_budget(toy_data):
    tiny = tiny_random_llama()
    encoded = encode_examples(tiny.tokenizer, load_split(toy_data, "toy", "train").examples, max_length=1024)
    pairs = sample_training_pairs(encoded, seed=0)[:8]
    budget = padded_tokens(pairs[:3])
    parts = PairCollator(pad_id=0, max_tokens=budget).passes(pairs)
    assert len(parts) > 1 and [p for part in parts for p in part] == pairs  # every pair once, in order
    assert all(padded_tokens(part) <= budget for part in parts)
    assert PairCollator(pad_id=0, max_tokens=1).passes(pairs) == [[p] for p in pairs]  # too long: one pair a pass
    batches = PairCollator(pad_id=0, max_tokens=budget)(pairs)
    assert [len(b["group"]) for b in batches] == [2 * len(part) for part in parts]


def test_a_step_split_into_passes_is_the_same_step(toy_data, tmp_path):
    """Prompt tuning (no dropout): a step's pairs in several passes, gradients summed, give the same
    training as one pass, up to float rounding."""
    whole = train_reward_model(toy_config(toy_data, tmp_path / "a", method="prompt-tuning", steps=4), progress=False)
    split = train_reward_model(toy_config(toy_data, tmp_path / "b", method="prompt-tuning", steps=4, max_tokens=60),
                               progress=False)
    assert split.losses == pytest.approx(whole.losses, rel=1e-5)
    assert whole.losses[-1] != whole.losses[0]  # the steps did change the prompt


def test_training_is_reproducible_with_seed(toy_data, tmp_path):
    a = train_reward_model(toy_config(toy_data, tmp_path / "a", steps=4), progress=False)
    b = train_reward_model(toy_config(toy_data, tmp_path / "b", steps=4), progress=False)
    assert a.losses == pytest.approx(b.losses, abs=1e-6)  # bitwise on CPU; GPU kernels may reorder sums


def test_limit_and_default_steps(toy_data, tmp_path):
    result = train_reward_model(toy_config(toy_data, tmp_path / "run", steps=None, limit=8, batch_size=4), progress=False)
    assert result.n_train_pairs == 8
    assert result.steps == default_steps(8, 4) == 6


def test_default_steps_scale_with_data_and_cap():
    assert default_steps(600, 16) == 113  # about 3 epochs, near the paper's 100-150 steps
    assert default_steps(1800, 16) == 150
    assert default_steps(3, 16) == 1


@pytest.mark.parametrize("overrides, message", [
    ({"method": "full"}, "unknown fine-tuning method"),
    ({"steps": 0}, "--steps must be at least 1"),
    ({"batch_size": 0}, "--batch-size must be at least 1"),
    ({"learning_rate": -1.0}, "--lr must be a finite number above 0, got -1.0"),
    ({"learning_rate": float("inf")}, "--lr must be a finite number above 0, got inf"),
    ({"learning_rate": float("nan")}, "--lr must be a finite number above 0, got nan"),
    ({"max_grad_norm": 0.0}, "max_grad_norm must be a finite number above 0"),
    ({"lora_dropout": 1.0}, "lora_dropout must be below 1"),
])
def test_bad_config_is_a_user_error(toy_data, tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        toy_config(toy_data, tmp_path, **overrides)


def test_unknown_dataset_is_a_user_error(toy_data, tmp_path):
    with pytest.raises(UserError, match="unknown dataset 'nope'"):
        train_reward_model(toy_config(toy_data, tmp_path, dataset="nope"), progress=False)


def test_two_trainings_with_different_precisions_in_one_process(toy_data, tmp_path):
    """accelerate's process-wide precision must not leak from one training run into the next."""
    fp32 = train_reward_model(toy_config(toy_data, tmp_path / "a", steps=2, precision="fp32"), progress=False)
    bf16 = train_reward_model(toy_config(toy_data, tmp_path / "b", steps=2, precision="bf16"), progress=False)
    assert len(fp32.losses) == len(bf16.losses) == 2
