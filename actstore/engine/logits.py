"""The model's own logits, in float32, from final hidden states the toolkit already has.

Log-likelihoods need logits at a few positions only (a response's tokens), not the whole
vocabulary at every position, so the decoder's final hidden states are gathered first and only
those rows go through the head. After its head a model may process the logits (Gemma 2's final
soft-capping, Granite's ``logits_scaling``, Cohere's ``logit_scale``, whatever a later family
adds): rather than copying each formula, the causal LM's own ``forward`` is called on the
gathered hidden states, its decoder replaced for that call by a module that returns them and its
head by the same head computing float32 logits over chunks of the vocabulary (no float32 copy of the
head is kept).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch


HEAD_CHUNK_BYTES = 64 << 20  # the float32 copy of the head's rows that one product reads at a time


class Float32Head(torch.nn.Module):
    """The LM head in float32, whatever dtype the model computes in, without a float32 copy of the head.

    Logits are tens of nats and a log-likelihood is their small differences: rounded to bfloat16's 8
    bits, each logit moves by up to ~0.1 nat, which summed over a response moved log-likelihoods by
    up to a nat on the bundled model. The final hidden state stays in the model's dtype. The product
    runs over chunks of the vocabulary, each chunk of the head's weight taken to float32 on its own
    (``HEAD_CHUNK_BYTES``), so the only float32 copy is one chunk's: the model's own weights are the
    only full-size ones. Where both operands are bfloat16 values, the float32 product takes the
    device's bfloat16 units with float32 accumulation: oneDNN's bf16 setting on the CPU, a bfloat16
    GEMM with float32 output on CUDA. The same logits, many times faster.
    """

    def __init__(self, lm_head: torch.nn.Module):
        super().__init__()
        self.lm_head = lm_head
        weight = _materialized(lm_head, "weight")
        self.vocab_size = weight.shape[0]
        self.weight_in_bfloat16 = _exactly_bfloat16(weight)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        weight, bias = _materialized(self.lm_head, "weight"), _materialized(self.lm_head, "bias")
        device = _compute_device(self.lm_head, weight)
        rows = hidden.reshape(-1, hidden.shape[-1]).to(device)  # a head on another device than the hidden state
        exact = self.weight_in_bfloat16 and _exactly_bfloat16(rows)
        logits = torch.empty(len(rows), self.vocab_size, dtype=torch.float32, device=device)
        step = max(1, HEAD_CHUNK_BYTES // (4 * weight.shape[1]))
        for start in range(0, self.vocab_size, step):
            logits[:, start:start + step] = _float32_product(rows, weight[start:start + step].to(device), exact)
        if bias is not None:
            logits += bias.to(device).float()
        return logits.reshape(*hidden.shape[:-1], self.vocab_size).to(hidden.device)


def _compute_device(lm_head: torch.nn.Module, weight: torch.Tensor) -> torch.device:
    """Where the head computes: its accelerate hook's device for an offloaded head, else its weight's."""
    hook = getattr(lm_head, "_hf_hook", None)
    if getattr(hook, "execution_device", None) is not None:
        return torch.device(hook.execution_device)
    return weight.device


def _float32_product(rows: torch.Tensor, weight: torch.Tensor, exact_bfloat16: bool) -> torch.Tensor:
    """``rows @ weight.T`` in float32 (operands that hold bfloat16 values exactly on the bfloat16 units)."""
    if exact_bfloat16 and rows.device.type == "cuda":
        product = float32_output_gemm(rows, weight)
        if product is not None:
            return product
    exact_on_cpu = exact_bfloat16 and rows.device.type == "cpu" and _has_bfloat16_arithmetic()
    with _bfloat16_arithmetic() if exact_on_cpu else nullcontext():
        return torch.nn.functional.linear(rows.float(), weight.float())


def float32_output_gemm(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
    """``rows @ weight.T`` from bfloat16 operands with float32 output, or None where this torch has no such GEMM
    (no ``out_dtype``) or the backend lacks it (``aten::mm.dtype``); any other error, an out-of-memory too, raises."""
    try:
        return torch.mm(rows.bfloat16(), weight.bfloat16().T, out_dtype=torch.float32)
    except TypeError as err:
        if "out_dtype" not in str(err):
            raise
    except NotImplementedError:
        pass
    return None


def _exactly_bfloat16(tensor: torch.Tensor) -> bool:
    """Whether every value of ``tensor`` is a bfloat16 value (checked in chunks: no full-size copy)."""
    if tensor.dtype == torch.bfloat16:
        return True
    flat = tensor.reshape(-1)
    step = max(1, HEAD_CHUNK_BYTES // 4)
    return all(bool(torch.equal(part.float(), part.bfloat16().float())) for part in flat.split(step))


def _has_bfloat16_arithmetic() -> bool:
    """torch >= 2.9 with oneDNN (the setting did not exist before)."""
    matmul = getattr(torch.backends.mkldnn, "matmul", None)
    return torch.backends.mkldnn.is_available() and hasattr(matmul, "fp32_precision")


@contextmanager
def _bfloat16_arithmetic():
    """oneDNN computes float32 matrix products from bfloat16 operands, accumulating in float32.

    Only entered when both operands hold bfloat16 values exactly (a bfloat16 model's weights and
    final hidden state): converting them loses nothing, every product of two bfloat16 numbers is
    exact in float32, and the sums accumulate in float32, so the logits are float32 logits as
    ``ieee`` mode computes them (up to summation order), on the CPU's bfloat16 units (AMX, AVX512-BF16)
    at many times the speed.
    """
    settings = torch.backends.mkldnn.matmul
    saved = settings.fp32_precision
    settings.fp32_precision = "bf16"
    try:
        yield
    finally:
        settings.fp32_precision = saved


class ModelLogits:
    """``logits = ModelLogits(causal_lm)(hidden)``: (rows, hidden) final hidden states -> (rows, vocab)
    float32 logits, exactly as the causal LM's forward computes them from its decoder's output."""

    def __init__(self, causal_lm: torch.nn.Module):
        self.causal_lm = causal_lm
        lm_head = causal_lm.get_output_embeddings()
        self.head = Float32Head(lm_head)
        self.head_name = next(name for name, module in causal_lm.named_children() if module is lm_head)
        # the decoder the forward calls, where it sits (``model``; OPT's one level deeper: ``model.decoder``)
        decoder = causal_lm.get_decoder()
        path = next(name for name, module in causal_lm.named_modules() if module is decoder)
        self.decoder_parent, _, self.decoder_name = path.rpartition(".")

    @property
    def vocab_size(self) -> int:
        return self.head.vocab_size

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden.float()[None]
        parent = self.causal_lm.get_submodule(self.decoder_parent)
        with _replaced(parent, {self.decoder_name: _Given(hidden)}), _replaced(self.causal_lm, {self.head_name: self.head}):
            # the class's forward, not the module's call: accelerate's hooks on the model stay out of it
            output = type(self.causal_lm).forward(self.causal_lm, inputs_embeds=hidden, use_cache=False)
        return output.logits[0].float()


class _Given(torch.nn.Module):
    """Stands for the decoder: returns the final hidden states it was made with."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden

    def forward(self, *args, **kwargs) -> "_DecoderOutput":
        return _DecoderOutput(self.hidden)


class _DecoderOutput(tuple):
    """The decoder's output as a causal LM reads it (``output[0]`` or ``output.last_hidden_state``);
    anything else it may read (caches, router logits, attentions) is None."""

    def __new__(cls, hidden: torch.Tensor):
        return super().__new__(cls, (hidden,))

    @property
    def last_hidden_state(self) -> torch.Tensor:
        return self[0]

    def __getattr__(self, name: str):
        return None


@contextmanager
def _replaced(parent: torch.nn.Module, children: dict[str, torch.nn.Module]):
    saved = {name: parent._modules[name] for name in children}
    parent._modules.update(children)
    try:
        yield
    finally:
        parent._modules.update(saved)


def _materialized(module: torch.nn.Module, name: str) -> torch.Tensor | None:
    """A parameter's values, also when accelerate offloaded them (the module then holds a meta
    tensor and its hook the real one)."""
    tensor = getattr(module, name, None)
    if tensor is not None and tensor.device.type == "meta":
        hook = getattr(module, "_hf_hook", None)
        weights = getattr(hook, "weights_map", None)
        if weights is None:
            raise RuntimeError(f"the LM head's {name} is offloaded where it cannot be read")
        tensor = weights[name]
    return tensor
