"""Transformers' own log lines silenced where our one-line message (or none) says what matters."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def transformers_errors_only():
    """Within it transformers logs errors only; its verbosity before is restored after."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
