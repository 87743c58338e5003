"""The model's own logits, in float32, from final hidden states the toolkit already has.

Log-likelihoods need logits at a few positions only (a response's tokens), not the whole
vocabulary at every position, so the decoder's final hidden states are gathered first and only
those rows go through the head. After its head a model may process the logits (Gemma 2's final
soft-capping, Granite's ``logits_scaling``, Cohere's ``logit_scale``, whatever a later family
adds): rather than copying each formula, the causal LM's own ``forward`` is called on the
gathered hidden states, its decoder replaced for that call by a module that returns them and its
head by the same head in float32.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch


class Float32Head(torch.nn.Module):
    """The LM head in float32, whatever dtype the model computes in (the float32 weights are made once).

    Logits are tens of nats and a log-likelihood is their small differences: rounded to bfloat16's 8
    bits, each logit moves by up to ~0.1 nat, which summed over a response moved log-likelihoods by
    up to a nat on the bundled model. The final hidden state stays in the model's dtype. Where both
    operands are bfloat16 values (a bfloat16 model on the CPU), the float32 product runs on the
    CPU's bfloat16 units with float32 accumulation: the same logits, many times faster.
    """

    def __init__(self, lm_head: torch.nn.Module):
        super().__init__()
        weight, bias = _materialized(lm_head, "weight"), _materialized(lm_head, "bias")
        self.weight = weight.detach().float()  # the same tensor when the model is float32
        self.bias = None if bias is None else bias.detach().float()
        self.weight_in_bfloat16 = _exactly_bfloat16(self.weight)

    @property
    def vocab_size(self) -> int:
        return self.weight.shape[0]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.weight.device != hidden.device:  # a head placed on another device than the final hidden state
            self.weight = self.weight.to(hidden.device)
            self.bias = None if self.bias is None else self.bias.to(hidden.device)
        hidden = hidden.float()
        exact = (self.weight_in_bfloat16 and hidden.device.type == "cpu" and _has_bfloat16_arithmetic()
                 and _exactly_bfloat16(hidden))
        with _bfloat16_arithmetic() if exact else nullcontext():
            logits = torch.nn.functional.linear(hidden, self.weight)
        return logits if self.bias is None else logits + self.bias


def _exactly_bfloat16(tensor: torch.Tensor) -> bool:
    return bool(torch.equal(tensor, tensor.bfloat16().float()))


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
        self.body_name = next(name for name, module in causal_lm.named_children() if module is causal_lm.base_model)

    @property
    def vocab_size(self) -> int:
        return self.head.vocab_size

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden.float()[None]
        with _replaced(self.causal_lm, {self.body_name: _Given(hidden), self.head_name: self.head}):
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
