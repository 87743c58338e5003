"""probes: representation methods fitted on activation stores; never imports transformers.

    from probes import LAT
    probe = LAT(layer=20).fit("stores/smollm2-135m/alpaca_mmlu/train.plain.zarr")
    probe.score("stores/smollm2-135m/truthful_qa/test.plain.zarr").accuracy

- ``probes.estimator``: the scikit-learn-shaped estimators' base (``fit`` / ``decision_function`` /
  ``score`` / ``save``), ``make_probe(name, layer, **options)`` and ``load_probe(dir)``.
- ``probes.arrays``: the contract of ``fit(X, y, groups)`` on arrays; ``probes.xy``: a method's arrays from stores.
- ``probes.methods``: one module per method (its estimator and its registry entry; see the registry package).
- ``common.metrics``: the one metrics module (pairs, margins, temperature, accuracy/AUROC/Brier/RMS CE).
- ``probes.sources``: ``StoreSource`` (the view stores of one split), ``ArraySource`` (arrays in memory).
- ``probes.probe``: ``FittedProbe`` and its files (probe.json + tensors.safetensors, sealed).
- ``probes.sweep``: ``run_sweep`` (every method x layer, best layer on a validation split); ``probes.plot``.
- ``probes.commands``: what the ``probes`` CLI commands do.
"""

from probes.estimator import load_probe, make_probe
from probes.methods.ccs import CCS
from probes.methods.cra import CRA
from probes.methods.heads import CRAHeads, MMSHeads
from probes.methods.lat import LAT
from probes.methods.lat_stim import LatStim
from probes.methods.logreg import LogReg
from probes.methods.mms import MMS
from probes.methods.random_direction import RandomDirection
from probes.methods.zero_shot import ZeroShot
from probes.xy import xy

__all__ = ["CCS", "CRA", "CRAHeads", "LAT", "LatStim", "LogReg", "MMS", "MMSHeads", "RandomDirection", "ZeroShot",
           "load_probe", "make_probe", "xy"]
