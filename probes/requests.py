"""What `probes fit` and `probes sweep` are asked for: config dataclasses that are their options.

One set of fit options serves every method: each estimator takes those it has a parameter for
(``probes.estimator.make_probe``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from actstore.store.locations import STORE_HELP
from common.settings import SEED_MAX, available_cpus, check_choices, setting
from actstore.engine.views import PromptFormat


@dataclass(frozen=True, kw_only=True)
class ProbeOptions:
    """How methods fit, how metrics are computed, and where store names are looked up."""

    seed: int = setting(0, "Seeds every random choice (splits, orientations, restarts, bootstrap).",
                         at_least=0, at_most=SEED_MAX)
    normalize: Literal["none", "center", "standardize"] | None = setting(
        None, "Override the method's default normalization (fitted on train).")
    alpha: float = setting(1.0, "cra: contrast h_yes - alpha * h_no.")
    top_k: int = setting(16, "lat-stim / head-wise methods: layers or heads kept.")
    calibration: Literal["binned", "reference"] = setting(
        "binned", "RMS calibration error formula (reference = the GENIES code's, for comparison).")
    threads: int = setting(1, "BLAS threads while fitting (1 is fastest on a busy machine; 0 = library default).",
                           at_least=0, at_most=available_cpus)
    store_root: str | None = setting(None, "Where store names are looked up (default: the per-user store directory).")
    names_limit: int | None = setting(None, "Read the first N examples of each store (it may hold more; extract with a larger --limit to grow one).",
                                      option="--limit")
    names_prompt_format: PromptFormat = setting("raw", "Store names refer to stores extracted with this "
                                                       "--prompt-format.", option="--prompt-format")

    def __post_init__(self):
        check_choices(self)

    def estimator_options(self) -> dict:
        """The fit options; each method takes those it has a parameter for."""
        return {"seed": self.seed, "normalize": self.normalize, "alpha": self.alpha, "top_k": self.top_k}

    @property
    def blas_threads(self) -> int | None:
        return self.threads or None

    def names(self):
        from actstore.store.locations import StoreNames

        return StoreNames(self.store_root, self.names_limit, self.names_prompt_format)


@dataclass(frozen=True, kw_only=True)
class FitRequest(ProbeOptions):
    """`probes fit`: each documented field is one of its options."""

    method: str = setting(help="See `probes methods`.")
    layer: int | None = setting(None, "Layer (0 = embeddings, l = output of block l); per-layer methods only.")
    train: str = setting(help=STORE_HELP)
    eval_stores: tuple[str, ...] = setting((), "Store to evaluate on (repeatable). " + STORE_HELP, option="--eval",
                                           multiple=True)
    out: Path | None = setting(None, "Save the probe in this directory (probe.json + tensors.safetensors).")
    bootstrap: int = setting(1000, "Bootstrap resamples for the accuracy CI (0 = none).")


@dataclass(frozen=True, kw_only=True)
class SweepRequest(ProbeOptions):
    """`probes sweep`: each documented field is one of its options."""

    methods: str = setting("mms,lat,ccs,cra,logreg", "Comma-separated per-layer methods.")
    train: str = setting(help=STORE_HELP)
    eval_stores: tuple[str, ...] = setting((), "Store to evaluate on (repeatable). " + STORE_HELP, option="--eval",
                                           multiple=True)
    layers: str = setting("all", "all, 0,10,20, 10:20 (inclusive) or a mix.")
    out: Path = setting(help="Directory for sweep.csv and sweep.png.")
    val_fraction: float = setting(0.3, "Share of training examples held out to choose layers.")
    refit: bool = setting(False, "Refit on all training data before scoring eval stores (twice the fits).")
    bootstrap: int = setting(200, "Bootstrap resamples per row (0 = none).")
