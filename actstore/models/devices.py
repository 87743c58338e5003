"""Devices: which one this process computes on, which this machine has, and where a module runs."""

from __future__ import annotations

import os

import torch

from common import describe, environment_int

DEVICE_VARIABLE = "GENIES_DEVICE"  # cpu, cuda or cuda:N: the device every command defaults to (the tests: cpu)


def default_device(environ: dict | None = None) -> str:
    """This process's device, for every command: ``$GENIES_DEVICE`` when set, else cuda (its GPU,
    ``cuda:LOCAL_RANK``, under a multi-process launch such as `accelerate launch` or torchrun) when
    available, else cpu."""
    environ = os.environ if environ is None else environ
    if environ.get(DEVICE_VARIABLE):
        return environ[DEVICE_VARIABLE]
    if not torch.cuda.is_available():
        return "cpu"
    if environment_int(environ, "WORLD_SIZE", 1) > 1:
        return f"cuda:{environment_int(environ, 'LOCAL_RANK', 0)}"
    return "cuda"


def execution_device(module: torch.nn.Module) -> torch.device:
    """The device ``module`` computes on: its accelerate hook's device for an offloaded module, else its weights'."""
    hook = getattr(module, "_hf_hook", None)
    if getattr(hook, "execution_device", None) is not None:
        return torch.device(hook.execution_device)
    return next(module.parameters()).device


def unavailable_device_message(device: torch.device) -> str:
    """One line: ``device`` was asked for and cannot be used here, and why."""
    reason = cuda_unavailable_reason() if device.type == "cuda" else None
    if reason and not (device.type == "cuda" and torch.cuda.is_available()):
        return f"device {device} was asked for, but {reason}"
    return f"device {device} is not on this machine (it has: {', '.join(available_devices())})"


def device_available(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    if device.type == "mps":
        return torch.backends.mps.is_available()
    return device.type in ("cpu", "meta")


def available_devices() -> list[str]:
    gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return ["cpu", *gpus, *(["mps"] if torch.backends.mps.is_available() else [])]


def cuda_unavailable_reason() -> str | None:
    """Why CUDA cannot be used in this process, in a few words (a CPU build of torch, a driver too old for this
    torch, no device visible); None when it can."""
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return f"this torch ({torch.__version__}) is a CPU build; install a CUDA build of torch"
    if torch.cuda.is_available():
        return None
    try:
        torch.cuda.init()
    except Exception as err:  # noqa: BLE001 - the driver's own words: too old for this torch, none found
        return f"CUDA does not start ({describe(err)})"
    return "no CUDA device is visible to this process (CUDA_VISIBLE_DEVICES?)"


def device_choice(device: str, environ: dict | None = None) -> str:
    """``device`` and why it was chosen, for the line a command prints when the user named none."""
    environ = os.environ if environ is None else environ
    if environ.get(DEVICE_VARIABLE):
        return f"{device} (from {DEVICE_VARIABLE})"
    if torch.device(device).type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    reason = cuda_unavailable_reason()
    return f"{device} (no GPU: {reason})" if reason else device
