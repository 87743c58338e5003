"""probes: representation methods fitted on activation stores; never imports transformers.

- ``probes.metrics``: the one metrics module (pairs, margins, temperature, accuracy/AUROC/Brier/RMS CE).
- ``probes.sources``: ``StoreSource`` (the view stores of one split), ``ArraySource`` (arrays in memory).
- ``probes.methods``: the method registry ``METHODS`` and ``FitConfig``.
- ``probes.fitting``: ``fit_probe(method, source, layer, config) -> Probe``, ``evaluate(probe, source) -> Metrics``.
- ``probes.probe``: ``Probe``, ``save_probe`` / ``load_probe`` (probe.json + tensors.safetensors).
- ``probes.sweep``: ``run_sweep`` (every method x layer, best layer on a validation split); ``probes.plot``.
- ``probes.commands``: what the ``probes`` CLI commands do.
"""
