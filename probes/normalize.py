"""Feature normalization, fitted on training activations only and saved with the probe."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common import UserError

NORMALIZATIONS = ("none", "center", "standardize")


@dataclass(frozen=True, eq=False)
class Normalizer:
    """x -> (x - mean) / scale, per feature."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, kind: str) -> "Normalizer":
        if kind not in NORMALIZATIONS:
            raise UserError(f"unknown normalization {kind!r} (choose from {', '.join(NORMALIZATIONS)})")
        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(axis=0) if kind != "none" else np.zeros(x.shape[1:])
        scale = np.ones(x.shape[1:])
        if kind == "standardize":
            std = x.std(axis=0)
            # Constant features (std 0) would divide by zero; leave them unscaled, they are centred to 0 anyway.
            scale = np.where(std > 1e-8 * max(float(std.max()), 1e-30), std, 1.0)
        return cls(mean.astype(np.float32), scale.astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float32) - self.mean) / self.scale

    def raw_direction(self, direction: np.ndarray) -> np.ndarray:
        """The direction in raw activation space equivalent to ``direction`` in normalized space."""
        return np.asarray(direction) / self.scale

    def tensors(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}mean": self.mean, f"{prefix}scale": self.scale}

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], prefix: str) -> "Normalizer":
        return cls(np.asarray(tensors[f"{prefix}mean"]), np.asarray(tensors[f"{prefix}scale"]))
