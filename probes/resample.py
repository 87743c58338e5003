"""A training source's examples drawn with replacement: what a refit that measures the fit's own variability
is trained on.

Examples, not sequences, are drawn (an example's responses share a prompt and form its pairs). Each draw
becomes an example of its own (a new id, so that two copies never pair with each other); copies of one example
keep it as their origin, so that a validation split carved from the resample keeps them on one side.
"""

from __future__ import annotations

import numpy as np

from probes.labels import Labels
from probes.sources import FeatureSource, SubsetSource


def resample_rows(labels: Labels, rng: np.random.Generator) -> tuple[np.ndarray, Labels]:
    """(rows of the source, their labels) for as many examples as ``labels`` has, drawn with replacement."""
    order = np.argsort(labels.example, kind="stable")  # each example's sequences, in their order
    examples, counts = np.unique(labels.example, return_counts=True)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    drawn = np.sort(rng.integers(0, examples.size, size=examples.size))
    rows = np.concatenate([order[starts[i]:starts[i] + counts[i]] for i in drawn])
    new_ids = np.repeat(np.arange(drawn.size), counts[drawn])
    return rows, Labels(new_ids, labels.is_best[rows], labels.origins[rows])


def resampled(source: FeatureSource, seed: int) -> FeatureSource:
    """``source`` with its examples drawn with replacement (seeded); the parent keeps the cache."""
    rows, labels = resample_rows(source.labels, np.random.default_rng(seed))
    subset = SubsetSource(source, rows)
    subset.labels = labels
    return subset
