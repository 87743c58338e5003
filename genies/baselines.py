"""Which methods may be the target-tuned capability (TTC) that DE and El divide by, and why others may not.

The TTC is the best method trained and tested on the target reference (genies/generalization.py). A method
that measured no capability there must not be it: a chance baseline (the registry says which), a live reward
model whose final training loss stayed within ``BARELY_TRAINED_MARGIN`` of chance (ln 2: it prefers neither
response, so its accuracy is noise), and a degenerate fit (constant scores, no separation of its own training
pairs, a calibration temperature at its bound). This module names the live fits that hardly trained, from the
records their run directories keep; pure functions apart from reading them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from common import UserError

CHANCE_LOSS = math.log(2)  # the pair loss of a reward model that prefers neither response
BARELY_TRAINED_MARGIN = 0.03  # a final training loss within this of chance: the adapter has hardly learned
FINAL_FRACTION = 0.2  # the final loss: the mean over the last 20% of steps (single steps are noisy)


def final_loss(losses: Sequence[float]) -> float:
    """The mean training loss over the last ``FINAL_FRACTION`` of the steps (finetune's own summary)."""
    k = max(1, int(len(losses) * FINAL_FRACTION))
    window = list(losses)[-k:]
    return float(sum(window) / len(window))


def barely_trained(losses: Sequence[float]) -> str | None:
    """Why a live fit with these per-step training losses measures no capability, or None."""
    if not losses:
        return None
    final = final_loss(losses)
    if final > CHANCE_LOSS - BARELY_TRAINED_MARGIN:
        return (f"barely trained: final training loss {final:.3f}, within {BARELY_TRAINED_MARGIN} of chance "
                f"(ln 2 = {CHANCE_LOSS:.3f})")
    return None


def live_training_reasons(fits_dir: Path, methods: Sequence[str]) -> dict[tuple[str, str], str]:
    """{(method, training set): why} for each live fit under ``fits_dir/<method>/<training set>`` that barely
    trained (a fit directory that cannot be read is left to `genies run`, which trains it again)."""
    records = [path for method in methods for path in sorted((Path(fits_dir) / method).glob("*/finetune.json"))]
    if not records:  # no live fit: finetune (and torch's training stack) is never imported
        return {}
    from finetune.checkpoint import read_record

    found = {}
    for method in methods:
        for record_path in sorted((Path(fits_dir) / method).glob("*/finetune.json")):
            try:
                record = read_record(record_path.parent)
            except UserError:
                continue
            why = barely_trained(record.get("result", {}).get("losses") or [])
            if why:
                found[(method, record_path.parent.name)] = why
    return found
