"""The method registry: name -> what it reads and how it fits (DESIGN §7)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from actstore.common import UserError, parse_list
from probes.methods import ccs, cra, heads, lat, lat_stim, logreg, mms, random_direction, zero_shot
from probes.methods.common import FitConfig


@dataclass(frozen=True)
class Method:
    name: str
    views: tuple[str, ...]
    fit: Callable  # (source, layer | None, FitConfig) -> scorer
    per_layer: bool = True  # False: the method picks its own layers/heads (no --layer)
    heads: bool = False  # needs per-head activations (extract with --site heads)
    loglik: bool = False
    natural_scale: bool = False  # score differences are already logits: temperature 1, no Platt fit
    # A chance baseline never has its layer chosen on labels (the luckiest of many random
    # directions beats chance): a sweep's "best" layer for it is the middle swept layer.
    chance_baseline: bool = False
    summary: str = ""


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("mms", ("plain",), mms.fit, summary="mass-mean: mean(h | preferred) - mean(h | dispreferred)"),
    Method("lat", ("plain",), lat.fit, summary="RepE LAT: first PC of randomly oriented paired differences"),
    Method("lat-stim", ("stim",), lat_stim.fit, per_layer=False,
           summary="GENIES lat_stim_2: mass-mean on the stim view, top-k layers, cosine scoring"),
    Method("lat-stim-1", ("plain",), lat_stim.fit_plain, per_layer=False,
           summary="GENIES lat_stim_1: mass-mean on the plain view, top-k layers, cosine scoring"),
    Method("ccs", ("yes", "no"), ccs.fit, summary="contrast-consistent search (unsupervised; sign from train labels)"),
    Method("cra", ("yes", "no"), cra.fit, summary="contrastive representation arithmetic: mass-mean of h_yes - alpha h_no"),
    Method("logreg", ("plain",), logreg.fit, natural_scale=True,
           summary="L2 logistic regression on paired differences (scikit-learn)"),
    Method("random", ("plain",), random_direction.fit, chance_baseline=True, summary="a seeded random direction (baseline)"),
    Method("zero-shot", ("plain",), zero_shot.fit, per_layer=False, loglik=True, natural_scale=True,
           summary="total log-likelihood of response + EOS given the prompt"),
    Method("mms-heads", ("plain",), heads.fit_mms, per_layer=False, heads=True,
           summary="GENIES mms: mass-mean on per-head outputs, top-k heads, cosine scoring"),
    Method("cra-heads", ("yes", "no"), heads.fit_cra, per_layer=False, heads=True,
           summary="GENIES cra: contrast of per-head outputs, top-k heads, cosine scoring"),
)}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise UserError(f"unknown method {name!r} (choose from {', '.join(METHODS)})")
    return METHODS[name]


def parse_methods(spec: str) -> list[Method]:
    names = parse_list(spec)
    if not names:
        raise UserError("--methods: no method named")
    return [get_method(name) for name in dict.fromkeys(names)]


__all__ = ["METHODS", "FitConfig", "Method", "get_method", "parse_methods"]
