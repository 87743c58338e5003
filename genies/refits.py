"""Refits: the fit repeated on resampled training data, so that intervals hold the fit's own variability.

A method fitted from stores is refitted ``--train-replicates`` times, refit r on the training examples drawn with
replacement (probes/resample.py) and with seeds of its own (validation split, layer choice, initialisations,
pair orientation). Live reward models are retrained ``--live-replicates`` times on such a draw
of their training examples. A chance baseline (random) is drawn ``CHANCE_DIRECTIONS`` times: its point value is the mean
over its directions. The bootstrap (genies/uncertainty.py) draws one refit per (method, training set) in each
replicate and carries it through the same test-example and shift resampling.
"""

from __future__ import annotations

from pathlib import Path

import registry
from genies.generalization import DIRECTIONS, REFITS
from genies.plan import CHANCE_DIRECTIONS, RunConfig
from registry import Kind

SUFFIX = ".refits"


def refit_count(config: RunConfig, method: str) -> int:
    """How many refits ``method``'s fits get beside the fit itself (0: none)."""
    spec = registry.get(method)
    if spec.kind is Kind.LIVE_TRAINED:
        return config.live_replicates
    if spec.kind is not Kind.PROBE:
        return 0
    return CHANCE_DIRECTIONS - 1 if spec.chance_baseline else config.train_replicates


def refit_kind(method: str) -> str:
    return DIRECTIONS if registry.get(method).chance_baseline else REFITS


def refit_paths(fit_path: Path, count: int) -> list[Path]:
    """Where a fit's refits are saved: FIT.refits/1 .. FIT.refits/count."""
    base = Path(fit_path).with_name(Path(fit_path).name + SUFFIX)
    return [base / str(r) for r in range(1, count + 1)]


def write_resampled_distribution(data_dir: Path, dataset: str, limit: int | None, seed: int, out_data_dir: Path,
                                 name: str) -> str:
    """Write ``name`` under ``out_data_dir/distributions``: train, the first ``limit`` examples of ``dataset``'s
    train split drawn with replacement (as many as there are, seeded); test, ``dataset``'s. Returns ``name``."""
    import json

    import numpy as np

    from common import write_text_atomic
    from distributions.data import split_path
    from distributions.split_file import read_examples

    train, _ = read_examples(split_path(data_dir, dataset, "train"))
    train = train[:limit] if limit else train
    drawn = np.sort(np.random.default_rng(seed).integers(0, len(train), size=len(train)))
    test, _ = read_examples(split_path(data_dir, dataset, "test"))
    directory = Path(out_data_dir) / "distributions" / name
    write_text_atomic(directory / "train.json", json.dumps([train[i] for i in drawn]))
    write_text_atomic(directory / "test.json", json.dumps(test))
    return name


def refit_seed(seed: int, refit: int) -> int:
    """The seed of refit ``refit`` (>= 1) of a run seeded ``seed``: distinct from the run's and every other refit's."""
    from genies.uncertainty import rng_for

    return int(rng_for(seed, "refit", str(refit)).integers(0, 2**31 - 1))
