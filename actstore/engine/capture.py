"""Forward hooks that keep only the last real token of each row, and stop the pass early.

The model's own ``forward`` builds the causal mask and position embeddings; these hooks only
read what passes through its modules (see ``DecoderParts``; ``actstore.models.families`` lists the
supported families), so no model's code is copied:

- layer 0 (embeddings): the input of block 0 (a forward pre-hook, so that models that scale
  their embeddings inside ``forward`` are read after the scaling);
- layer l >= 1: the output of block l-1;
- heads of layer l: the input of block l-1's attention output projection (``o_proj``, ``dense``,
  ``c_proj``), split into heads;
- the final norm: the output of the model's last norm.

When the deepest requested layer is not the last one, the hook that reads it raises
``StopForward``: the blocks above it are never run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch


class StopForward(Exception):
    """Raised from a hook once everything requested has been read."""


@dataclass(frozen=True)
class DecoderParts:
    causal_lm: torch.nn.Module  # the transformers causal LM (its forward turns final hidden states into logits)
    body: torch.nn.Module  # the decoder (LlamaModel, GPT2Model, ...): embeddings, blocks, final norm
    blocks: torch.nn.ModuleList
    norm: torch.nn.Module
    attention_outputs: tuple[torch.nn.Module, ...]  # per block, the projection of its merged heads

    @classmethod
    def of(cls, causal_lm: torch.nn.Module) -> "DecoderParts":
        from actstore.models.families import family_of

        family = family_of(causal_lm.config)
        body = causal_lm.get_decoder()
        blocks = next(module for module in body.children() if isinstance(module, torch.nn.ModuleList))
        return cls(causal_lm=causal_lm, body=body, blocks=blocks, norm=getattr(body, family.final_norm),
                   attention_outputs=tuple(block.get_submodule(family.attention_output) for block in blocks))

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    @property
    def input_device(self) -> torch.device:
        """Where the token ids go: the embeddings' device (under a placement, accelerate moves each
        block's inputs to that block's device)."""
        from actstore.models import execution_device

        return execution_device(self.body.get_input_embeddings())

    @property
    def output_device(self) -> torch.device:
        """Where the final hidden states come out: the final norm's device, or the last block's where the norm
        has no weights (OLMo's non-parametric layer norm)."""
        from actstore.models import execution_device

        has_weights = next(self.norm.parameters(), None) is not None
        return execution_device(self.norm if has_weights else self.blocks[-1])

    @functools.cached_property
    def loglik_head(self):
        """The model's own logits in float32 for log-likelihoods (``actstore.engine.logits.ModelLogits``), made once."""
        from actstore.engine.logits import ModelLogits

        return ModelLogits(self.causal_lm)


@dataclass(frozen=True)
class CapturePlan:
    layers: tuple[int, ...]  # residual layers to keep, in the layer convention
    head_layers: tuple[int, ...] = ()
    final_norm: bool = False
    stop_after: int | None = None  # stop once this layer is read; None: run the whole model

    @classmethod
    def for_request(cls, layers: tuple[int, ...], n_blocks: int, *, heads: bool, full_depth: bool) -> "CapturePlan":
        return cls(
            layers=layers,
            head_layers=tuple(layer for layer in layers if layer >= 1) if heads else (),
            final_norm=full_depth,
            stop_after=None if full_depth else max(layers),
        )


@dataclass
class Captured:
    """What one forward pass left behind, one ``(batch, ...)`` float32 tensor per site, all on the inputs' device."""

    residual: dict[int, torch.Tensor] = field(default_factory=dict)
    heads: dict[int, torch.Tensor] = field(default_factory=dict)
    final_norm: torch.Tensor | None = None


@dataclass(frozen=True)
class HostCaptured:
    """What a pass captured, on the host: every site in one device-to-host copy."""

    layers: tuple[int, ...]
    residual: np.ndarray  # (layers, points, hidden)
    head_layers: tuple[int, ...]
    heads: np.ndarray | None  # (head layers, points, n_heads, head_dim)
    final_norm: np.ndarray | None  # (points, hidden)

    @classmethod
    def of(cls, captured: Captured) -> "HostCaptured":
        layers, head_layers = tuple(captured.residual), tuple(captured.heads)
        parts = [*(captured.residual[layer] for layer in layers), *(captured.heads[layer] for layer in head_layers),
                 *([captured.final_norm] if captured.final_norm is not None else [])]
        host = iter(to_host(parts))
        residual = [next(host) for _ in layers]
        heads = [next(host) for _ in head_layers]
        return cls(layers, np.stack(residual) if layers else np.empty((0, 0, 0), dtype=np.float32),
                   head_layers, np.stack(heads) if head_layers else None,
                   next(host) if captured.final_norm is not None else None)


def to_host(tensors: list[torch.Tensor]) -> list[np.ndarray]:
    """``tensors`` (float32, one device, the same first dimension) on the host, in one copy."""
    if not tensors:
        return []
    flat = torch.cat([tensor.reshape(len(tensor), -1) for tensor in tensors], dim=1).cpu().numpy()
    out, start = [], 0
    for tensor in tensors:
        width = int(np.prod(tensor.shape[1:], dtype=np.int64))
        out.append(flat[:, start:start + width].reshape(tuple(tensor.shape)))
        start += width
    return out


class LastTokenCapture:
    """Context manager installing the hooks of a ``CapturePlan`` on a model.

    Call ``begin(last_positions)`` before each forward pass; read ``captured`` after it.
    """

    def __init__(self, parts: DecoderParts, plan: CapturePlan, n_heads: int | None = None):
        self.parts, self.plan, self.n_heads = parts, plan, n_heads
        self.captured = Captured()
        self._rows: torch.Tensor | None = None
        self._positions: torch.Tensor | None = None
        self._handles: list = []

    def begin(self, last_positions: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Read ``(rows[i], last_positions[i])`` for each i (``rows``: one point per row by default)."""
        self._positions = last_positions
        self._rows = torch.arange(len(last_positions), device=last_positions.device) if rows is None else rows
        self.captured = Captured()

    def __enter__(self) -> "LastTokenCapture":
        blocks, plan = self.parts.blocks, self.plan
        for layer in plan.layers:
            if layer == 0:
                self._add(blocks[0].register_forward_pre_hook(self._embeddings_hook, with_kwargs=True))
            else:
                self._add(blocks[layer - 1].register_forward_hook(self._block_output_hook(layer)))
        for layer in plan.head_layers:
            self._add(self.parts.attention_outputs[layer - 1].register_forward_pre_hook(self._heads_hook(layer)))
        if plan.final_norm:
            self._add(self.parts.norm.register_forward_hook(self._final_norm_hook))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # -- hooks ----------------------------------------------------------------------------
    def _add(self, handle) -> None:
        self._handles.append(handle)

    def _last(self, hidden: torch.Tensor) -> torch.Tensor:
        """The last real token of each row, from whichever device this layer ran on, gathered on the
        inputs' device (so that one copy moves them all to the host)."""
        if hidden.device != self._rows.device:
            return hidden[self._rows.to(hidden.device), self._positions.to(hidden.device)].float().to(self._rows.device)
        return hidden[self._rows, self._positions].float()

    def _keep_residual(self, layer: int, hidden: torch.Tensor) -> None:
        self.captured.residual[layer] = self._last(hidden)
        if layer == self.plan.stop_after:
            raise StopForward

    def _embeddings_hook(self, module, args, kwargs):
        self._keep_residual(0, args[0] if args else kwargs["hidden_states"])

    def _block_output_hook(self, layer: int):
        def hook(module, args, output):
            self._keep_residual(layer, output[0] if isinstance(output, tuple) else output)

        return hook

    def _heads_hook(self, layer: int):
        def hook(module, args):
            last = self._last(args[0])
            self.captured.heads[layer] = last.reshape(last.shape[0], self.n_heads, -1)

        return hook

    def _final_norm_hook(self, module, args, output):
        self.captured.final_norm = self._last(output)
