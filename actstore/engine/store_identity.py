"""What makes two extractions the same, and what a new store records: its identity (a store is reused
or resumed only when it matches), its layout and its attributes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common import UserError
from distributions.split_file import Split
from actstore.engine.views import View
from actstore.models import LoadedModel, model_fingerprint
from actstore.store import ActivationStore, StoreLayout
from actstore.store.layers import needs_full_depth, parse_layers
from actstore.store.software import software_versions

if TYPE_CHECKING:
    from actstore.engine.extraction import ExtractConfig


def store_identity(config: ExtractConfig, split: Split, view: View, model_id: str, layers: tuple[int, ...]) -> dict:
    """What makes two extractions the same: a store is reused, resumed or grown only when this matches.
    Quantized weights compute other activations; ``none`` is left out, so that stores made before
    quantization existed keep matching unquantized requests. A local model adds its content's
    fingerprint (``models.model_fingerprint``): the path alone does not say which weights it holds."""
    quantization = {} if config.quantize == "none" else {"quantization": config.quantize}
    fingerprint = model_fingerprint(config.model)
    return {
        **({"model_fingerprint": fingerprint} if fingerprint else {}),
        "model": config.model,
        "model_id": model_id,
        "dataset": split.dataset,
        "split": split.split,
        "fingerprint": split.fingerprint,
        "view": view.name,
        "view_template": view.continuation,
        "view_appends_eos": view.append_eos,
        "prompt_format": view.prompt_format,
        "layers": list(layers),
        "dtype": config.dtype,
        "compute_dtype": config.compute_dtype,
        "site": config.site,
        "skip_bad": config.skip_bad,
        **quantization,
    }


def recorded_identity(store: ActivationStore) -> dict:
    """The identity a store was extracted with; stores made before prompt formats existed are raw. How
    many examples it holds is not part of it (a store grows: its ``limit`` attribute says how many)."""
    recorded = {"prompt_format": "raw", **(store.meta.get("identity") or {})}
    recorded.pop("limit", None)
    return recorded


def matches_before_loading(store: ActivationStore, config: ExtractConfig, split: Split, view: View) -> bool:
    """A complete store is reused without loading the model when everything but the model id
    matches and it was made from the same model name (layers resolved with its recorded depth)."""
    recorded = recorded_identity(store)
    try:
        layers = parse_layers(config.layers, int(store.meta["model_n_blocks"]), model=config.model)
    except (UserError, KeyError, TypeError, ValueError):
        return False
    wanted = store_identity(config, split, view, recorded.get("model_id"), layers)
    return recorded == wanted


def same_extraction(store: ActivationStore, identity: dict, *, overwrite: bool) -> bool:
    """True when ``store`` holds this extraction; a different one is refused unless ``overwrite``."""
    recorded = recorded_identity(store)
    differing = [key for key in {**recorded, **identity} if recorded.get(key) != identity.get(key)]
    if not differing:
        return True
    if overwrite:
        return False
    what = "; ".join(f"{key}: stored {_short(recorded.get(key))}, requested {_short(identity.get(key))}"
                     for key in differing)
    if "fingerprint" in differing:
        what += f"; the data file {store.meta.get('data_file', '')} changed since this store was extracted"
    raise UserError(f"{store.url}: holds a different extraction ({what}); pass --overwrite to replace it, "
                    "or --out for another store root")


def store_layout(config: ExtractConfig, loaded: LoadedModel, layers: tuple[int, ...], view: View, n: int) -> StoreLayout:
    model_config = loaded.model.config
    n_heads = model_config.num_attention_heads if config.site == "heads" else None
    head_dim = getattr(model_config, "head_dim", None) or model_config.hidden_size // model_config.num_attention_heads
    with_loglik = view.name == "plain"
    return StoreLayout(
        n_sequences=n, layers=layers, hidden_size=model_config.hidden_size, dtype=config.dtype,
        block_size=config.block_size, n_heads=n_heads, head_dim=head_dim if n_heads else None,
        with_loglik=with_loglik, with_final_norm=needs_full_depth(layers, model_config.num_hidden_layers, with_loglik),
        compressor=config.compressor, with_texts=True,
    )


def store_attributes(config: ExtractConfig, loaded: LoadedModel, split: Split, view: View, identity: dict) -> dict:
    import torch
    import transformers

    tokenizer = loaded.tokenizer
    return {
        "model": config.model,
        "model_id": loaded.model_id,
        "model_class": type(loaded.model).__name__,
        "model_n_blocks": loaded.model.config.num_hidden_layers,
        "tokenizer": getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__,
        "tokenizer_class": type(tokenizer).__name__,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "dataset": split.dataset,
        "split": split.split,
        "data_file": str(split.path),
        "fingerprint": split.fingerprint,
        "view": view.name,
        "view_template": view.continuation,
        "view_appends_eos": view.append_eos,
        "view_description": view.description,
        "prompt_format": view.prompt_format,
        "site": config.site,
        "limit": config.limit,
        "n_examples_in_split": len(split.examples),
        "n_skipped_examples": len(split.skipped),
        "skipped_examples": [str(problem) for problem in split.skipped],
        "identity": identity,
        "software": software_versions(),
        "config": {
            "batch_tokens": config.batch_tokens or "auto",  # what a pass took: the completion record's batch_tokens
            "prompt_reuse": config.prompt_reuse,
            "padding_side": config.padding_side,
            "compute_dtype": config.compute_dtype,
            "quantization": config.quantize,
            "device_map": _device_map(loaded),
            "attention": loaded.attention,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }


def _short(value) -> str:
    if isinstance(value, list) and len(value) > 6 and value == list(range(value[0], value[-1] + 1)):
        return f"{value[0]}..{value[-1]}"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _device_map(loaded: LoadedModel) -> dict | str:
    """Where each block ran: accelerate's map for a placed model, else its one device."""
    placed = getattr(loaded.model, "hf_device_map", None)
    return {name: str(device) for name, device in placed.items()} if placed else str(loaded.input_device)
