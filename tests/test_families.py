"""Conformance: every supported family gives transformers' own numbers on every engine path.

A tiny random model per family (tests/model_families.py: float32, a sliding window of 12 tokens
where the family has one, its logit processing switched on), sequences of mixed lengths (20-70
tokens) that run past the window, in views that share prompts and responses as the store's
views do. Reference: transformers' own forward of each whole sequence, alone and unpadded
(``output_hidden_states`` and ``log_softmax`` of the model's own logits).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actstore.engine.batching import EncodedSequence
from actstore.engine.blocks import run_block
from actstore.engine.capture import CapturePlan, DecoderParts, LastTokenCapture
from actstore.models.families import FAMILIES, family_of, lora_targets
from actstore.engine.prompt_reuse import Responses, sequence_logliks
from actstore.engine.stage_clock import StageClock
from model_families import PROCESSED_LOGITS, tiny_family_model

# Prompts of 33-45 tokens share passes (padded to the longest, a window's worth of padding), and
# responses of 1-43 tokens pad the levels below them.
PROMPTS = ["Tell me about the sea and its ships.\n", "Q: what is two plus two, exactly?\n",
           "A longer prompt, one that runs past the window.\n"]
RESPONSES = [["Blue and deep.", "It is wet, and ships float on it for days."], ["4", "Four, of course, as always"],
             ["Fine.", "No", "A long answer that also crosses the window"]]
QUESTION = "\nIs that right? "


def encoded(tokenizer, prompt: str, continuation: str) -> EncodedSequence:
    ids = lambda text: tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
    return EncodedSequence((tokenizer.bos_token_id, *ids(prompt)), ids(continuation))


def views_of(tokenizer) -> dict[str, list[EncodedSequence]]:
    """plain (response + EOS), yes and no (response + question + Yes/No), and stim (own prompts)."""
    eos = tokenizer.eos_token
    pairs = [(p, r) for p, responses in zip(PROMPTS, RESPONSES) for r in responses]
    return {
        "plain": [encoded(tokenizer, p, r + eos) for p, r in pairs],
        "yes": [encoded(tokenizer, p, r + QUESTION + "Yes") for p, r in pairs],
        "no": [encoded(tokenizer, p, r + QUESTION + "No") for p, r in pairs],
        "stim": [encoded(tokenizer, "Consider: " + p, r + " That was") for p, r in pairs],
    }


def reference(model, sequence: EncodedSequence, heads_of) -> dict:
    """transformers' forward of one whole sequence: last-token hidden states of every layer (the
    last one after the final norm), the attention output projections' inputs, the log-likelihood."""
    seen = {}
    handles = [module.register_forward_pre_hook(lambda m, args, i=i: seen.__setitem__(i, args[0][0, -1]))
               for i, module in enumerate(heads_of)]
    try:
        with torch.no_grad():
            out = model(torch.tensor([sequence.ids], device=model.device), output_hidden_states=True)
    finally:
        for handle in handles:
            handle.remove()
    logprobs = torch.log_softmax(out.logits[0].float(), dim=-1).cpu()
    start = len(sequence.prompt_ids)
    picked = logprobs[torch.arange(start - 1, len(sequence.ids) - 1), torch.tensor(sequence.continuation_ids)]
    return {"hidden": torch.stack([h[0, -1] for h in out.hidden_states]).cpu(), "heads": torch.stack(
        [seen[i] for i in range(len(heads_of))]).cpu(), "loglik": float(picked.double().sum())}


def assert_close_per_layer(got: np.ndarray, want: torch.Tensor, what: str) -> None:
    """Within 1e-4 of each layer's RMS (layers on axis 0)."""
    want = want.numpy()
    rms = np.sqrt((want ** 2).mean(axis=tuple(range(1, want.ndim)), keepdims=True))
    error = np.abs(got - want) / rms
    assert error.max() < 1e-4, f"{what}: off by {error.max():.2e} of the layer's RMS"


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_model(request):
    return tiny_family_model(request.param)


@pytest.mark.parametrize("prompt_reuse", [True, False], ids=["tree", "plain-batches"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_extraction_equals_transformers(family_model, prompt_reuse, padding_side):
    check_extraction(family_model.model, family_model.model, family_model.tokenizer, prompt_reuse, padding_side)


# Flex attention's kernels take 20 to 50 s each to compile on a CPU within the suite: the families whose masks differ
# in kind (full; sliding and full layers each with its own mask, softcapped; latent attention), a family without
# flex attention and one whose sinks refuse it on a CPU.
FLEX_FAMILIES = ("llama", "gemma2", "deepseek_v3", "gpt2", "gpt_oss")


@pytest.mark.parametrize("model_type", FLEX_FAMILIES)
def test_tree_attention_under_flex_attention_equals_transformers(model_type):
    """Flex attention (``--attention auto`` on GPUs) takes the tree's mask as a block mask that transformers
    builds from the same mask function: the tree under it equals transformers' own forward (in the family's
    own attention), sliding windows and softcapping included; a family without it refuses it in one line.
    The kernels are compiled, not run eagerly: dynamo may not give up on them (the limit ``set_attention``
    raises)."""
    import copy

    from actstore.models.attention import attention_sinks, set_attention
    from common import UserError

    family_model = tiny_family_model(model_type)
    flex = copy.deepcopy(family_model.model)
    name = flex.config.model_type
    if not flex._supports_flex_attn or attention_sinks(flex):  # sinks under flex: not checked, refused
        with pytest.raises(UserError, match=f"^{name}: --attention flex_attention is not available"):
            set_attention(flex, name, "flex_attention", "cpu", trains=False)
        return
    assert set_attention(flex, name, "flex_attention", "cpu", trains=False) == "flex_attention"
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        check_extraction(flex, family_model.model, family_model.tokenizer, prompt_reuse=True, padding_side="right")


def check_extraction(model, reference_model, tokenizer, prompt_reuse: bool, padding_side: str) -> None:
    """Every layer, the heads, the final norm and the log-likelihood of each view, extracted from
    ``model``, equal transformers' own forward of ``reference_model`` on each whole sequence."""
    parts = DecoderParts.of(model)
    n_blocks = parts.n_blocks
    n_heads = model.config.num_attention_heads
    views = views_of(tokenizer)
    layers = tuple(range(n_blocks))  # layer n_blocks is read after the final norm (final_norm)
    plan = CapturePlan.for_request(layers, n_blocks, heads=True, full_depth=True)
    responses = [Responses(key, sequences, LastTokenCapture(parts, plan, n_heads), with_loglik=key == "plain",
                           clock=StageClock()) for key, sequences in views.items()]
    with torch.inference_mode():
        outs = run_block(parts, responses, pad_id=tokenizer.pad_token_id, batch_tokens=300, padding_side=padding_side,
                         prompt_reuse=prompt_reuse)
    reference_parts = DecoderParts.of(reference_model)
    for key, sequences in views.items():
        refs = [reference(reference_model, s, reference_parts.attention_outputs) for s in sequences]
        out = outs[key]
        want = torch.stack([r["hidden"] for r in refs], dim=1)  # (layers + 1, sequences, hidden)
        assert_close_per_layer(out.residual, want[:n_blocks], f"{key} residual")
        assert_close_per_layer(out.final_norm[None], want[n_blocks:], f"{key} final norm")
        heads = torch.stack([r["heads"] for r in refs], dim=1)[[layer - 1 for layer in plan.head_layers]]
        assert_close_per_layer(out.heads.reshape(heads.shape), heads, f"{key} heads")
        if key == "plain":
            np.testing.assert_allclose(out.loglik, [r["loglik"] for r in refs], rtol=0, atol=1e-3)


def test_live_logliks_equal_transformers(family_model):
    """Live zero- and few-shot read these (finetune.baselines.response_logliks)."""
    model, tokenizer = family_model.model, family_model.tokenizer
    sequences = views_of(tokenizer)["yes"]
    parts = DecoderParts.of(model)
    with torch.inference_mode():
        got = sequence_logliks(parts, sequences, pad_id=tokenizer.pad_token_id, batch_tokens=300)
    want = [reference(model, s, parts.attention_outputs)["loglik"] for s in sequences]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)
    if model.config.model_type in PROCESSED_LOGITS:  # the processing after the head matters here
        from actstore.engine.logits import Float32Head

        hidden = torch.randn(8, model.config.hidden_size)
        raw = torch.log_softmax(Float32Head(model.get_output_embeddings())(hidden), dim=-1)
        processed = torch.log_softmax(parts.loglik_head(hidden), dim=-1)
        assert (raw - processed).abs().max() > 0.05


@pytest.mark.parametrize("method", ["lora", "prompt-tuning"])
def test_one_training_step_equals_an_independent_loss(family_model, method):
    """The reward model's loss (one tree-attention row per prompt group, the pass gradient checkpointing
    also runs) equals the loss of each whole sequence run alone through the adapted model; one optimizer
    step runs and changes it."""
    import copy

    from finetune.reward_model import AdapterSettings, new_reward_model, pair_loss
    from finetune.shared_prompts import collate_groups

    model, tokenizer = copy.deepcopy(family_model.model), family_model.tokenizer
    settings = AdapterSettings(method, lora_r=4, lora_dropout=0.0, n_virtual_tokens=3)
    reward_model = new_reward_model(model, settings, seed=0)
    if method == "lora":  # no targets given: the family's, recorded in the settings
        assert reward_model.settings.lora_target_modules == lora_targets(model.config) != ()
    torch.manual_seed(1)
    torch.nn.init.normal_(reward_model.head.weight)  # a zero head would make every loss log 2
    eos = tokenizer.eos_token
    groups = [[encoded(tokenizer, p, r + eos) for r in responses[:2]] for p, responses in zip(PROMPTS, RESPONSES)]
    batch = collate_groups(groups, tokenizer.pad_token_id)
    loss = pair_loss(reward_model(**batch))

    def alone(sequence) -> torch.Tensor:
        body = reward_model.causal_lm.get_decoder()
        embeds = body.get_input_embeddings()(torch.tensor([sequence.ids]))
        if method == "prompt-tuning":
            embeds = torch.cat([reward_model.peft_model.get_prompt(batch_size=1).to(embeds.dtype), embeds], dim=1)
        hidden = body(inputs_embeds=embeds).last_hidden_state[0, -1]
        return reward_model.head(hidden)[0]

    independent = pair_loss(torch.stack([alone(s) for group in groups for s in group]))
    torch.testing.assert_close(loss, independent, rtol=1e-5, atol=1e-5)
    trained = [p for p in reward_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-2)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in trained if p.grad is not None)
    optimizer.step()
    with torch.no_grad():
        after = float(pair_loss(reward_model(**batch)))
    assert after != pytest.approx(float(loss.detach()), abs=1e-6)


@pytest.mark.parametrize("model_type", ["bloom", "mpt", "xglm", "codegen", "mamba", "rwkv", "jamba", "recurrent_gemma"])
def test_an_unsupported_model_type_is_refused_in_one_line(model_type):
    from transformers import AutoConfig

    from common import UserError

    with pytest.raises(UserError, match=f"model type '{model_type}' is not supported \\(supported: llama, mistral") as raised:
        family_of(AutoConfig.for_model(model_type))
    assert "\n" not in str(raised.value)


def test_a_shape_of_a_supported_family_that_is_not_proven_is_refused_in_one_line():
    from transformers import AutoConfig

    from common import UserError

    with pytest.raises(UserError, match="OPT with 32-wide embeddings projected to its width 64 .OPT-350m's shape. is not"):
        family_of(AutoConfig.for_model("opt", hidden_size=64, word_embed_proj_dim=32))


def saved(model_type: str, directory) -> str:
    """A tiny model of ``model_type`` saved as a user's local checkpoint (config, weights, tokenizer)."""
    if model_type in FAMILIES:
        loaded = tiny_family_model(model_type)
        model, tokenizer = loaded.model, loaded.tokenizer
    else:
        from transformers import AutoConfig, AutoModelForCausalLM

        from actstore.models import byte_tokenizer

        tokenizer = byte_tokenizer()
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(
            model_type, vocab_size=len(tokenizer), hidden_size=32, n_layer=2, n_head=4))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.mark.parametrize("model_type", ["gpt2", "gemma2"])
def test_cli_extracts_from_a_saved_model_of_another_family(model_type, tmp_path):
    from click.testing import CliRunner

    from actstore.store import open_store
    from cli import actstore
    from conftest import TOY_EXAMPLES, write_distribution

    data = write_distribution(tmp_path / "data", "toy", train=TOY_EXAMPLES, test=TOY_EXAMPLES)
    result = CliRunner().invoke(actstore, ["extract", "--model", saved(model_type, tmp_path / "model"), "--dataset", "toy",
                                           "--data-dir", str(data), "--views", "plain,yes", "--site", "heads",
                                           "--out", str(tmp_path / "stores"), "--no-progress"])
    assert result.exit_code == 0, result.output
    stores = sorted((tmp_path / "stores").rglob("*.plain.zarr"))
    assert stores
    store = open_store(str(stores[0]))
    assert np.isfinite(store.sequences()["loglik"]).all() and np.isfinite(store.head_activations(1)).all()


def test_an_unsupported_model_is_refused_before_any_store_or_run_directory(tmp_path):
    from click.testing import CliRunner

    from cli import actstore, genies
    from conftest import TOY_EXAMPLES, write_distribution

    model = saved("bloom", tmp_path / "bloom")
    data = write_distribution(tmp_path / "data", "toy", train=TOY_EXAMPLES, test=TOY_EXAMPLES)
    for group, args in ((actstore, ["extract", "--model", model, "--dataset", "toy", "--data-dir", str(data),
                                    "--out", str(tmp_path / "stores"), "--no-progress"]),
                        (genies, ["run", "--model", model, "--shifts", "demo", "--methods", "mms",
                                  "--store-root", str(tmp_path / "stores"), "--out", str(tmp_path / "run")])):
        result = CliRunner().invoke(group, args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert "model type 'bloom' is not supported (supported: llama," in lines[0] and "gpt2" in lines[0]
    assert not (tmp_path / "stores").exists() and not (tmp_path / "run").exists()


PLACED_FAMILIES = tuple(FAMILIES)
# bitsandbytes' CPU 4-bit kernel needs every quantized output width divisible by its block; Qwen2-MoE's
# shared-expert gate has width 1 (on CUDA bitsandbytes takes any width).
QUANTIZED = tuple(name for name in FAMILIES if name != "qwen2_moe")


@pytest.mark.parametrize("model_type", PLACED_FAMILIES)
def test_disk_offload_and_quantization_run_on_every_family(model_type, tmp_path):
    """Most blocks and the LM head offloaded to disk: the same store bytes as the model in memory
    (log-likelihoods included: the head's weights are read from the offload); 4-bit quantized runs.
    Every family."""
    from actstore.engine.extraction import ExtractConfig, extract
    from actstore.store import open_store
    from conftest import TOY_EXAMPLES, write_distribution

    model = saved(model_type, tmp_path / "model")
    data = write_distribution(tmp_path / "data", "toy", train=TOY_EXAMPLES, test=TOY_EXAMPLES)

    def arrays(out, **placement):
        [result] = extract(ExtractConfig(model=model, datasets=("toy",), splits=("test",), data_dir=str(data),
                                         out=str(tmp_path / out), layers="all", progress=False, **placement))
        group = open_store(result.url).group
        return {name: group[name][:] for name in ("residual", "final_norm", "loglik")}

    in_memory = arrays("memory", compute_dtype="float32")
    offloaded = arrays("offload", compute_dtype="float32", max_memory="cpu=20KB", offload_dir=str(tmp_path / "disk"))
    for name, values in in_memory.items():
        assert offloaded[name].tobytes() == values.tobytes(), name
    if model_type in QUANTIZED:
        pytest.importorskip("bitsandbytes")
        quantized = arrays("quantized", compute_dtype="bfloat16", quantize="4bit")
        assert all(np.isfinite(values).all() for values in quantized.values())


# ----------------------------------------------------------------------------- the docs' table
PROVEN_EVERYWHERE = ("Every family below, in tests/test_families.py: extraction (every layer, `--site heads`, final norm, "
                     "log-likelihood; prefix tree and plain batches; left and right padding) within 1e-4 of each layer's "
                     "RMS and 1e-3 nats of transformers' own forward, live zero-/few-shot log-likelihoods, one LoRA and "
                     "one prompt-tuning step whose loss equals each sequence run alone, disk offload (the same store "
                     "bytes as in memory) and 4-bit quantization (bitsandbytes' CPU backend) unless the last column "
                     "says otherwise.")
PROVEN_ELSEWHERE = {"llama": "SmolLM2-135M end to end; 8-bit in tests/test_model_spec.py",
                    "gemma3_text": "the real Gemma 3 270M, `gemma3-270m` (tests/test_gemma3_real.py)"}


DESCRIBED_CASES = ((("num_local_experts", "num_experts", "n_routed_experts"), "routed experts"),
                   (("kv_lora_rank",), "multi-head latent attention"),
                   (("no_rope_layers",), "a block without rotary positions"),
                   (("rotary_dim",), "rotary positions on part of each head"),
                   (("word_embed_proj_dim",), "learned absolute positions"))


def supported_models_table() -> str:
    """docs/supported-models.md's table: what this file proves, family by family."""
    from model_families import SPECIAL_CASES

    from actstore.models.attention import attention_sinks
    from actstore.models.families import sliding_layers

    lines = [PROVEN_EVERYWHERE, "", "| family | `model_type` | special cases in its test | also |",
             "| --- | --- | --- | --- |"]
    for family in FAMILIES.values():
        window = sliding_layers(tiny_family_model(family.model_type).model.config)
        cases = [f"sliding window on {'all' if all(window) else f'{sum(window)} of {len(window)}'} layers"] * any(window)
        special = SPECIAL_CASES.get(family.model_type, {})
        cases += [f"`{key}`" for key in ("final_logit_softcapping", "logits_scaling", "logit_scale") if key in special]
        cases += [what for keys, what in DESCRIBED_CASES if any(key in special for key in keys)]
        config = tiny_family_model(family.model_type).model.config
        cases += ["multi-query attention"] * bool(getattr(config, "multi_query", False)
                                                  and not getattr(config, "new_decoder_architecture", False))
        cases += ["attention sinks (flex attention refused)"] * attention_sinks(tiny_family_model(
            family.model_type).model)
        also = [] if family.model_type in QUANTIZED else ["4-bit not tested: bitsandbytes' CPU kernel refuses its "
                                                          "width-1 shared-expert gate"]
        also += [PROVEN_ELSEWHERE[family.model_type]] if family.model_type in PROVEN_ELSEWHERE else []
        lines.append(f"| {family.name} | `{family.model_type}` | {', '.join(cases) or '-'} | {', '.join(also) or '-'} |")
    return "\n".join(lines) + "\n"


def test_docs_table_of_supported_models_is_this_files():
    from conftest import REPO

    table = supported_models_table()
    page = REPO / "docs" / "supported-models.md"
    assert table in page.read_text(), f"{page.name}'s Supported models table is stale; it should read:\n" + table


def test_a_sliding_window_model_under_flash_attention_is_refused_not_masked_wrongly():
    from actstore.engine.attention_masks import decoder_attention_mask
    from common import UserError

    config = tiny_family_model("mistral").model.config
    config._attn_implementation = "flash_attention_2"
    with pytest.raises(UserError, match="cannot take masks by real position"):
        decoder_attention_mask(config, torch.ones(1, 4, dtype=torch.long), torch.arange(4)[None], 2, torch.float32)
