"""Choosing and configuring the torch device."""
from __future__ import annotations

import torch


class DeviceUnavailable(RuntimeError):
    """The requested device does not exist here; the message says which ones do."""


def available_devices() -> list[str]:
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU; anything else must exist on this machine."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DeviceUnavailable(f"unknown device {name!r}; available: {', '.join(available_devices())}") from exc
    ok = (
        device.type == "cpu"
        or (device.type == "cuda" and torch.cuda.is_available()
            and (device.index or 0) < torch.cuda.device_count())
        or (device.type == "mps" and torch.backends.mps.is_available())
    )
    if not ok:
        raise DeviceUnavailable(f"device {name!r} is not available here; available: {', '.join(available_devices())}")
    return device


def configure_tf32(enabled: bool) -> None:
    """TF32 for fp32 matmuls and cuDNN convolutions (Ampere and newer GPUs; ignored elsewhere).

    These are process-wide flags, so the engine sets them once per process.
    """
    precision = "tf32" if enabled else "ieee"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision
