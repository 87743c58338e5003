"""ccs: Contrast-Consistent Search (Burns et al.) on the ``yes`` / ``no`` views.

p = sigmoid(w . x + b); loss = mean((p_yes - (1 - p_no))^2) + mean(min(p_yes, p_no)^2).
Each view is normalized with its own TRAINING statistics. The fit never sees a label: all
restarts are optimised together (one (d, restarts) weight matrix, independent AdamW updates)
and the restart with the lowest loss wins. Only the final sign comes from the training labels.
"""

from __future__ import annotations

import numpy as np

from probes.methods.common import FitConfig, label_sign
from probes.normalize import Normalizer
from probes.scorers import CCSScorer
from probes.sources import FeatureSource


def ccs_loss(p_yes, p_no):
    """Per-restart CCS loss for probabilities of shape (n, restarts) (torch or numpy)."""
    consistency = ((p_yes - (1 - p_no)) ** 2).mean(0)
    confidence = (p_yes.minimum(p_no) if hasattr(p_yes, "minimum") else np.minimum(p_yes, p_no)) ** 2
    return consistency + confidence.mean(0)


def train_ccs(x_yes: np.ndarray, x_no: np.ndarray, config: FitConfig) -> tuple[np.ndarray, float, float]:
    """Unsupervised CCS fit on normalized activations; returns (weight, bias, loss) of the best restart."""
    import torch

    generator = torch.Generator().manual_seed(config.seed)
    yes = torch.as_tensor(np.ascontiguousarray(x_yes), dtype=torch.float32)
    no = torch.as_tensor(np.ascontiguousarray(x_no), dtype=torch.float32)
    d, restarts = yes.shape[1], config.ccs_restarts
    bound = 1.0 / np.sqrt(d)  # torch.nn.Linear's default initialisation range
    weight = ((torch.rand(d, restarts, generator=generator) * 2 - 1) * bound).requires_grad_()
    bias = ((torch.rand(restarts, generator=generator) * 2 - 1) * bound).requires_grad_()
    optimizer = torch.optim.AdamW([weight, bias], lr=config.ccs_lr, weight_decay=config.ccs_weight_decay)
    for _ in range(config.ccs_steps):
        optimizer.zero_grad(set_to_none=True)
        losses = ccs_loss(torch.sigmoid(yes @ weight + bias), torch.sigmoid(no @ weight + bias))
        losses.sum().backward()  # restarts do not interact, so each gets its own gradient
        optimizer.step()
    with torch.no_grad():
        losses = ccs_loss(torch.sigmoid(yes @ weight + bias), torch.sigmoid(no @ weight + bias))
        best = int(torch.argmin(losses))
        return weight[:, best].numpy().copy(), float(bias[best]), float(losses[best])


def fit(source: FeatureSource, layer: int, config: FitConfig) -> CCSScorer:
    kind = config.normalize or "standardize"
    raw_yes, raw_no = source.residual("yes", layer), source.residual("no", layer)
    normalize_yes, normalize_no = Normalizer.fit(raw_yes, kind), Normalizer.fit(raw_no, kind)
    weight, bias, _ = train_ccs(normalize_yes(raw_yes), normalize_no(raw_no), config)
    scorer = CCSScorer(layer, normalize_yes, normalize_no, weight.astype(np.float32), bias, 1.0)
    scorer.sign = label_sign(scorer.score(source), source.labels)
    return scorer
