"""`--mix-target K`: K target training examples added to a source before fitting (the paper's
data-mixing analysis). The same K examples are chosen for probes (rows of the target's train
store, no new extraction) and for live methods (a mixed GENIES-format distribution on disk).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from distributions.split_file import read_examples
from distributions.data import split_path
from common import UserError, write_text_atomic
from probes.labels import Labels
from probes.sources import FeatureSource


def choose_mixed_examples(n_examples: int, k: int, seed: int) -> np.ndarray:
    """Sorted positions of the K examples (out of the first ``n_examples``) to mix in."""
    if k > n_examples:
        raise UserError(f"--mix-target {k}: the target has only {n_examples} training examples")
    return np.sort(np.random.default_rng(seed).choice(n_examples, size=k, replace=False))


class MixedSource(FeatureSource):
    """A source's training features followed by those of K examples of the target."""

    def __init__(self, source: FeatureSource, target: FeatureSource, k: int, seed: int):
        target_examples = np.unique(target.labels.example)
        chosen = target_examples[choose_mixed_examples(len(target_examples), k, seed)]
        self.parts = (source, target.subset(np.flatnonzero(np.isin(target.labels.example, chosen))))
        # Example ids must stay distinct across the two datasets: shift the target's past the source's.
        offset = int(source.labels.example.max()) + 1
        mixed = self.parts[1].labels
        self.labels = Labels(np.concatenate([source.labels.example, mixed.example + offset]),
                             np.concatenate([source.labels.is_best, mixed.is_best]))
        self.meta = {**source.meta, "name": f"{source.name}+{k}x{target.name}"}

    @property
    def name(self) -> str:
        return self.meta["name"]

    def _concat(self, read) -> np.ndarray:
        return np.concatenate([read(part) for part in self.parts])

    def residual(self, view: str, layer: int) -> np.ndarray:
        return self._concat(lambda part: part.residual(view, layer))

    def heads(self, view: str, layer: int) -> np.ndarray:
        return self._concat(lambda part: part.heads(view, layer))

    def loglik(self) -> np.ndarray:
        return self._concat(lambda part: part.loglik())

    def layers(self, view: str) -> list[int]:
        return [layer for layer in self.parts[0].layers(view) if layer in set(self.parts[1].layers(view))]

    def head_layers(self, view: str) -> list[int]:
        return [layer for layer in self.parts[0].head_layers(view) if layer in set(self.parts[1].head_layers(view))]

    def require(self, views: tuple[str, ...], *, heads: bool = False, loglik: bool = False) -> None:
        for part in self.parts:
            part.require(views, heads=heads, loglik=loglik)

    def release(self) -> None:
        for part in self.parts:
            part.release()


def write_mixed_distribution(data_dir: Path, source: str, target: str, k: int, seed: int, out_data_dir: Path,
                             limit: int | None = None) -> str:
    """Write ``<source>+<k>x<target>`` (train: the source's first ``limit`` examples, then K of the
    target's first ``limit``; test: the source's) under ``out_data_dir/distributions``; return its name."""
    source_train, _ = read_examples(split_path(data_dir, source, "train"))
    target_train, _ = read_examples(split_path(data_dir, target, "train"))
    source_test, _ = read_examples(split_path(data_dir, source, "test"))
    target_train = target_train[:limit] if limit else target_train
    chosen = [target_train[i] for i in choose_mixed_examples(len(target_train), k, seed)]
    name = f"{source}+{k}x{target}"
    directory = Path(out_data_dir) / "distributions" / name
    # atomic: under `genies run` in several processes, two may write (the same) files while a third reads them
    write_text_atomic(directory / "train.json", json.dumps((source_train[:limit] if limit else source_train) + chosen))
    write_text_atomic(directory / "test.json", json.dumps(source_test))
    return name
