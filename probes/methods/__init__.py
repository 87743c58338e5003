"""The methods fitted from activation stores, one module each: its estimator class and its ``METHODS``
entry for the benchmark's method registry (registry.py collects every module of this package)."""
