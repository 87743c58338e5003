"""Stores from activations computed elsewhere (an nnsight trace, a TransformerLens cache, any array):
complete, sealed and checksummed like an extracted store, so probes and sweeps read them alike.

    write_store("stores/my-model/mydata/train.plain.zarr", {0: h0, 12: h12}, example=ex, response=resp,
                score=score, model="my-model", dataset="mydata", split="train",
                module="model.layers.11", position="last")

The store is built in a temporary sibling and renamed into place when whole, so an interrupted
write never leaves something that looks complete.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Mapping

import numpy as np

from common import UserError
from actstore.store.activation_store import ActivationStore
from actstore.store.layout import StoreLayout
from actstore.store.locations import name_of_place
from actstore.store.opening import create_store, open_store

VIEWS = ("plain", "stim", "yes", "no")


def write_store(url: str | Path, residual: Mapping[int, np.ndarray], *, example, response, score, model: str,
                dataset: str, split: str, view: str = "plain", module: str | None = None, position: str = "last",
                model_id: str | None = None, source: str = "arrays", prompt_text=None, response_text=None, loglik=None, dtype: str = "float32",
                block_size: int = 512, overwrite: bool = False) -> ActivationStore:
    """Write a complete store at ``url`` (a local path) and return it opened.

    ``residual``: layer -> ``(sequences, width)`` activations (0 = embeddings, l = output of block l, the
    convention of extracted stores). ``example``, ``response``, ``score``: per sequence, the example id, the
    response's position in its example and its score (1.0 for the preferred response). ``module`` and
    ``position`` say what the rows are (the module path whose output they are, as the library that ran the
    model names it; the token position) and are recorded with ``source`` (what computed them). ``prompt_text``/``response_text``: the texts the rows
    belong to, kept in the store when given. ``loglik``: per sequence, for the plain view's zero-shot.
    ``model_id``: the exact model (``LoadedModel.model_id``) where ``model`` names it loosely; probes refuse to
    score a store of another model id than they were fitted on.
    """
    place = Path(url)
    if place.exists() and not overwrite:
        raise UserError(f"{place}: exists already; pass overwrite=True to replace it")
    layers, stacked = _layers(residual, place)
    n, width = stacked.shape[1:]
    labels = _labels(place, n, example=example, response=response, score=score)
    with_texts = prompt_text is not None or response_text is not None
    if with_texts:
        labels.update(_texts(place, n, prompt_text=prompt_text, response_text=response_text))
    if view not in VIEWS:
        raise UserError(f"{place}: view must be one of {', '.join(VIEWS)}, got {view!r}")
    if loglik is not None:
        loglik = _column(place, "loglik", loglik, n, np.float64)
        if view != "plain":
            raise UserError(f"{place}: log-likelihoods belong to the plain view, not {view!r}")
    if dtype not in ("float16", "float32"):
        raise UserError(f"{place}: dtype must be float16 or float32, got {dtype!r}")
    meta = {"model": model, "model_id": model_id or model, "dataset": dataset, "split": split, "view": view, "site": "residual",
            "module": module, "position": position, "imported_from": source, "prompt_format": "raw", "limit": None}
    named = name_of_place(str(place))
    if named is not None:
        named.check(meta, str(place), str(place))
    layout = StoreLayout(n_sequences=n, layers=layers, hidden_size=width, dtype=dtype, block_size=block_size,
                         with_loglik=loglik is not None, with_final_norm=False, compressor=None, with_texts=with_texts)
    staging = place.with_name(f".{place.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        store = create_store(str(staging), layout, labels, {**meta, "identity": dict(meta)})
        for block in range(layout.n_blocks):
            start, stop = layout.block_range(block)
            store.write_block(block, residual=stacked[:, start:stop], n_tokens=np.zeros(stop - start, np.int32),
                              last_token=np.zeros(stop - start, np.int32),
                              loglik=None if loglik is None else loglik[start:stop])
        store.mark_complete(imported_from=source)
        if place.exists():
            shutil.rmtree(place)
        staging.rename(place)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return open_store(str(place))


def _layers(residual: Mapping[int, np.ndarray], place: Path) -> tuple[tuple[int, ...], np.ndarray]:
    if not isinstance(residual, Mapping) or not residual:
        raise UserError(f"{place}: residual must map each layer (0 = embeddings) to its (sequences, width) array")
    layers = tuple(sorted(residual))
    if any(not isinstance(layer, (int, np.integer)) or layer < 0 for layer in layers):
        raise UserError(f"{place}: layers must be whole numbers from 0 (the embeddings), got {list(layers)}")
    arrays = [np.asarray(residual[layer], dtype=np.float32) for layer in layers]
    for layer, values in zip(layers, arrays):
        if values.ndim != 2 or values.shape != arrays[0].shape or not values.size:
            raise UserError(f"{place}: layer {layer} has shape {values.shape}; every layer needs one "
                            f"(sequences, width) array of one shape (layer {layers[0]}: {arrays[0].shape})")
        if not np.isfinite(values).all():
            raise UserError(f"{place}: layer {layer} holds {int((~np.isfinite(values)).sum())} NaN or infinite values")
    return tuple(int(layer) for layer in layers), np.stack(arrays)


def _column(place: Path, name: str, values, n: int, dtype) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != (n,):
        raise UserError(f"{place}: {name} has shape {values.shape}, expected ({n},): one value per sequence")
    return values.astype(dtype)


def _labels(place: Path, n: int, **columns) -> dict[str, np.ndarray]:
    labels = {"example": _column(place, "example", columns["example"], n, np.int32),
              "response": _column(place, "response", columns["response"], n, np.int32),
              "score": _column(place, "score", columns["score"], n, np.float32)}
    from common.metrics import pair_indices

    try:
        pair_indices(labels["example"], labels["score"] == 1.0)
    except ValueError as err:
        raise UserError(f"{place}: {err} (score 1.0 marks each example's preferred response)") from None
    seen = set(zip(labels["example"].tolist(), labels["response"].tolist()))
    if len(seen) != n:
        raise UserError(f"{place}: a (example, response) pair appears twice")
    return labels


def _texts(place: Path, n: int, **texts) -> dict[str, np.ndarray]:
    out = {}
    for name, values in texts.items():
        if values is None:
            raise UserError(f"{place}: give both prompt_text and response_text, or neither")
        values = np.asarray(list(values), dtype=object)
        if values.shape != (n,) or not all(isinstance(text, str) for text in values):
            raise UserError(f"{place}: {name} needs one string per sequence ({n})")
        out[name] = values
    return out
