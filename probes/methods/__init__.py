"""The methods fitted from activation stores, one module each: its estimator class and its ``METHODS``
entry for the benchmark's method registry (the registry package collects every module of this package)."""
