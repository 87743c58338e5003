"""The `actstore extract` command that makes, completes or repairs a store, for error messages."""

from __future__ import annotations

from pathlib import Path


def extract_command(meta: dict, views: tuple[str, ...] | list[str], *, heads: bool = False, root: str | None = None,
                    repair: bool = False, exact: bool = False) -> str:
    """The command that extracts ``views`` of the split ``meta`` describes; with ``exact`` (to grow the store)
    or ``repair``, the settings recorded in the store, so that the command continues it instead of refusing it."""
    identity = meta.get("identity") or {}
    model = meta.get("model") or meta.get("model_id") or "MODEL"
    command = (f"actstore extract --model {model} --dataset {meta.get('dataset', 'DATASET')} "
               f"--split {meta.get('split', 'SPLIT')} --views {','.join(views)}")
    if meta.get("limit"):
        command += f" --limit {meta['limit']}"
    if heads or meta.get("site") == "heads":
        command += " --site heads"
    if meta.get("prompt_format", "raw") != "raw":
        command += f" --prompt-format {meta['prompt_format']}"
    if not (repair or exact):
        return command
    if identity.get("layers"):
        command += f" --layers {layer_spec(identity['layers'])}"
    for flag, key, default in (("--dtype", "dtype", "float16"), ("--compute-dtype", "compute_dtype", None)):
        if identity.get(key) and identity[key] != default:
            command += f" {flag} {identity[key]}"
    if identity.get("skip_bad"):
        command += " --skip-bad"
    data_file = Path(str(meta.get("data_file", "")))
    if len(data_file.parts) >= 3 and data_file.parent.parent.name == "distributions":
        command += f" --data-dir {data_file.parent.parent.parent}"
    if root:
        command += f" --out {root}"
    return command + (" --repair" if repair else "")


def layer_spec(layers: list[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``3:5,9``: the --layers syntax, ranges inclusive."""
    parts, start = [], None
    for i, layer in enumerate(layers):
        if start is None:
            start = layer
        if i + 1 == len(layers) or layers[i + 1] != layer + 1:
            parts.append(str(start) if start == layer else f"{start}:{layer}")
            start = None
    return ",".join(parts)
