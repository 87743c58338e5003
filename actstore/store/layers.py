"""Layer names, defined once: 0 = token embeddings, l = output of transformer block l-1.

A model with ``n`` blocks has layers ``0..n``; the final norm is not a layer (stores keep it
apart). ``--layers`` accepts ``all``, a list ``0,10,20``, inclusive ranges ``10:20`` (layers 10
through 20), or a mix ``0,5:8,30``.
"""

from __future__ import annotations

from common import UserError


def parse_layers(spec: str, n_blocks: int, *, model: str = "the model") -> tuple[int, ...]:
    """Sorted, de-duplicated layer numbers for ``spec``; out of range is a UserError."""
    text = str(spec).strip().lower()
    if text == "all":
        return tuple(range(n_blocks + 1))
    chosen: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if ":" in part:
            low, _, high = part.partition(":")
            first, last = _int(low, spec), _int(high, spec)
            if last < first:
                raise UserError(f"--layers {spec!r}: range {part!r} is empty (ranges are first:last, inclusive)")
            chosen.update(range(first, last + 1))
        else:
            chosen.add(_int(part, spec))
    if not chosen:
        raise UserError(f"--layers {spec!r}: no layers named (use all, 0,10,20 or 10:20)")
    outside = sorted(layer for layer in chosen if not 0 <= layer <= n_blocks)
    if outside:
        raise UserError(
            f"layer {outside[0]} is out of range for {model}: layers are 0..{n_blocks} "
            f"(0 = embeddings, {n_blocks} = output of the last block)"
        )
    return tuple(sorted(chosen))


def needs_full_depth(layers: tuple[int, ...], n_blocks: int, with_loglik: bool) -> bool:
    """Whether the forward pass must run every block (and the final norm)."""
    return with_loglik or max(layers) == n_blocks


def _int(text: str, spec: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise UserError(f"--layers {spec!r}: {text.strip()!r} is not a layer number (use all, 0,10,20 or 10:20)") from None
