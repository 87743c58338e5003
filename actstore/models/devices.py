"""Devices: which one this process computes on, which this machine has, and where a module runs."""

from __future__ import annotations

import os

import torch

from common import environment_int


def default_device(environ: dict | None = None) -> str:
    """This process's device, for every command: cuda (its GPU, ``cuda:LOCAL_RANK``, under a multi-process
    launch such as `accelerate launch` or torchrun) when available, else cpu."""
    if not torch.cuda.is_available():
        return "cpu"
    environ = os.environ if environ is None else environ
    if environment_int(environ, "WORLD_SIZE", 1) > 1:
        return f"cuda:{environment_int(environ, 'LOCAL_RANK', 0)}"
    return "cuda"


def execution_device(module: torch.nn.Module) -> torch.device:
    """The device ``module`` computes on: its accelerate hook's device for an offloaded module, else its weights'."""
    hook = getattr(module, "_hf_hook", None)
    if getattr(hook, "execution_device", None) is not None:
        return torch.device(hook.execution_device)
    return next(module.parameters()).device


def device_available(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    if device.type == "mps":
        return torch.backends.mps.is_available()
    return device.type in ("cpu", "meta")


def available_devices() -> list[str]:
    gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return ["cpu", *gpus, *(["mps"] if torch.backends.mps.is_available() else [])]
