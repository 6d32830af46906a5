"""Choosing and configuring the torch device: availability (and why not), precision flags, compile, memory."""
from __future__ import annotations

import ctypes
import math
import shutil
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

# bf16 tensor cores arrived with Ampere (compute capability 8.0); Turing and Volta emulate bf16 slowly.
BF16_MIN_CAPABILITY = (8, 0)
# torch.compile keeps one graph per guard set; per model (so per device) that is the no-grad and the grad pass,
# times, on the CPU, the size ranges where its convolution backend changes (measured with inductor: 4 graphs after
# sizes from 50x75 to 300x200; at most 12 possible). On CUDA no such ranges are expected: 2.
COMPILE_ENTRIES_PER_MODEL = 16

# Device memory one job needs, measured on the CPU with the same tensors (see docs/self-hosting.md): the
# activations kept for backward (max-pool indices included), the gradients in flight, L-BFGS's 50-pair history,
# the best/last images. Per pixel of the output (the finest scale dominates).
JOB_BYTES_PER_PIXEL = 4096
# The no-grad style pass (Gram targets) per pixel of the resized style image: the tapped activations it returns
# plus the two live ones of the first block (64 channels of fp32 each).
STYLE_PASS_BYTES_PER_PIXEL = 1024
# The truncated VGG19's weights, fp32 (~13 M parameters), and slack for cuDNN workspaces and allocator rounding.
MODEL_BYTES = 64 * 2**20
WORKSPACE_BYTES = 256 * 2**20


class DeviceUnavailable(RuntimeError):
    """The requested device does not exist here; the message says which ones do, or why the GPU is not visible."""


class CompileUnavailable(DeviceUnavailable):
    """torch.compile cannot build its kernels for this device here (no C compiler or no Python headers)."""


# -- which devices ---------------------------------------------------------------------------------------------


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
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(f"device {name!r} is not available here: {why_no_cuda()}")
    ok = (
        device.type == "cpu"
        or (device.type == "cuda" and (device.index or 0) < torch.cuda.device_count())
        or (device.type == "mps" and torch.backends.mps.is_available())
    )
    if not ok:
        raise DeviceUnavailable(f"device {name!r} is not available here; available: {', '.join(available_devices())}")
    return device


@dataclass(frozen=True)
class CudaProbe:
    """What the CUDA driver says when torch sees no GPU (gathered by `probe_cuda`, explained by `explain`)."""

    torch_cuda: str | None
    """The CUDA version this PyTorch was built for ('13.0'), None for a CPU-only build."""
    driver_loaded: bool = False
    """libcuda.so.1, the driver's user-space library, could be loaded."""
    driver_cuda: int | None = None
    """cuDriverGetVersion: the newest CUDA the driver supports, e.g. 12020 for 12.2."""
    init_error: str | None = None
    """cuInit's error name and text, None when it succeeded."""

    def explain(self) -> str:
        if self.torch_cuda is None:
            return "this PyTorch build has no CUDA support (install the CUDA build of torch)"
        if not self.driver_loaded:
            return ("the NVIDIA driver library libcuda.so.1 cannot be loaded: the host has no NVIDIA driver, or the "
                    "container was started without GPU access (check the NVIDIA Container Toolkit with "
                    "`docker run --rm --gpus all debian:bookworm-slim nvidia-smi`)")
        needed = _cuda_major(self.torch_cuda)
        if self.driver_cuda is not None and needed is not None and self.driver_cuda < needed * 1000:
            return (f"the NVIDIA driver supports CUDA up to {_cuda_version_text(self.driver_cuda)} but this "
                    f"PyTorch is built for CUDA {self.torch_cuda}: update the host's NVIDIA driver (R580 or newer)")
        if self.init_error is not None:
            return f"the NVIDIA driver cannot start CUDA ({self.init_error})"
        return "the NVIDIA driver is loaded but PyTorch finds no usable GPU (check CUDA_VISIBLE_DEVICES)"


def _cuda_major(text: str) -> int | None:
    """'13.0' -> 13: a driver for any 13.x runs every 13.y build (CUDA's minor version compatibility)."""
    try:
        return int(text.split(".")[0])
    except ValueError:
        return None


def _cuda_version_text(number: int) -> str:
    return f"{number // 1000}.{number % 1000 // 10}"


def probe_cuda() -> CudaProbe:
    """Ask the driver directly (ctypes) what torch.cuda.is_available() only answers with False."""
    torch_cuda = torch.version.cuda
    if torch_cuda is None:
        return CudaProbe(None)
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return CudaProbe(torch_cuda)
    version = ctypes.c_int(0)
    driver_cuda = version.value if lib.cuDriverGetVersion(ctypes.byref(version)) == 0 else None
    code = lib.cuInit(0)
    init_error = None
    if code != 0:
        name, text = ctypes.c_char_p(), ctypes.c_char_p()
        lib.cuGetErrorName(code, ctypes.byref(name))
        lib.cuGetErrorString(code, ctypes.byref(text))
        init_error = ": ".join(v.decode(errors="replace") for v in (name.value, text.value) if v) or f"error {code}"
    return CudaProbe(torch_cuda, True, driver_cuda, init_error)


def why_no_cuda() -> str:
    """One clause saying why no CUDA device is visible (call it when torch.cuda.is_available() is False)."""
    try:
        return probe_cuda().explain()
    except Exception as exc:  # a broken driver must not turn a clear start-up error into a traceback
        return f"no CUDA device is visible (probing the driver failed: {exc})"


# -- precision ---------------------------------------------------------------------------------------------------


def configure_tf32(enabled: bool) -> None:
    """TF32 for cuDNN convolutions only (Ampere and newer GPUs; ignored elsewhere); matmuls stay IEEE fp32.

    The Gram matrices and the colour transform are matmuls and keep full precision. Only the legacy flags are
    set: mixing them with the new `fp32_precision` ones makes `torch.get_float32_matmul_precision()` and
    `torch.backends.cuda.matmul.allow_tf32` raise for the rest of the process, and setting the legacy ones
    also brings the new ones back to a consistent state. Process-wide: the engine sets them once per process.
    """
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = enabled


def bf16_unsupported(device: torch.device) -> str | None:
    """Why bf16 autocast would be slow on `device` (no bf16 tensor cores), or None when it is fine."""
    if device.type != "cuda":
        return None
    capability = torch.cuda.get_device_capability(device)
    if tuple(capability) >= BF16_MIN_CAPABILITY:
        return None
    name = torch.cuda.get_device_name(device)
    return (f"{name} (compute capability {capability[0]}.{capability[1]}) has no bf16 tensor cores "
            f"(Ampere, 8.0, and newer have them)")


# -- torch.compile -------------------------------------------------------------------------------------------------


def compile_unavailable(device_type: str) -> str | None:
    """Why torch.compile cannot build kernels for `device_type` here, or None when it can.

    On CUDA, triton builds a small C launcher at first use: it needs a C compiler and Python's headers.
    On the CPU, inductor compiles C++: it needs a C++ compiler.
    """
    if device_type == "cuda":
        if _c_compiler() is None:
            return "torch.compile on CUDA needs a C compiler (gcc or clang) for triton, and none is installed"
        headers = _python_include_dir()
        if not (headers / "Python.h").is_file():
            return f"torch.compile on CUDA needs Python's C headers for triton, and {headers}/Python.h is missing"
        return None
    if device_type == "cpu" and not any(shutil.which(cxx) for cxx in ("g++", "clang++", "c++")):
        return "torch.compile on the CPU needs a C++ compiler (g++ or clang++), and none is installed"
    return None


def _c_compiler() -> str | None:
    # triton's search (triton.runtime.build._find_compiler), less its $CC override.
    return shutil.which("gcc") or shutil.which("clang")


def _python_include_dir() -> Path:
    scheme = sysconfig.get_default_scheme()
    if scheme == "posix_local":  # as triton does on Debian's system Python
        scheme = "posix_prefix"
    return Path(sysconfig.get_paths(scheme=scheme)["include"])


def reserve_compile_entries() -> int:
    """Raise dynamo's per-function recompile limit for one more compiled model; returns the new limit.

    Every device's model shares VGG19Features.forward's code object, so its cache holds the graphs of all
    devices together: past the limit, dynamo silently runs the later devices uncompiled.
    """
    import torch._dynamo

    global _compiled_models
    with _compile_lock:  # workers build their models in their own threads
        _compiled_models += 1
        limit = max(torch._dynamo.config.recompile_limit, COMPILE_ENTRIES_PER_MODEL * _compiled_models)
        torch._dynamo.config.recompile_limit = limit
    return limit


_compiled_models = 0
_compile_lock = threading.Lock()


# -- memory --------------------------------------------------------------------------------------------------------


def job_memory_bytes(output_pixels: int, style_pixels: int = 0) -> int:
    """Device memory one job needs: its optimisation at the output size, or its largest style pass."""
    return MODEL_BYTES + WORKSPACE_BYTES + max(JOB_BYTES_PER_PIXEL * output_pixels,
                                               STYLE_PASS_BYTES_PER_PIXEL * style_pixels)


def pixels_that_fit(available: int, output_pixels: int, style_pixels: int = 0) -> int:
    """The most output pixels a job of this shape can have in `available` bytes (style area scales along)."""
    room = available - MODEL_BYTES - WORKSPACE_BYTES
    if room <= 0:
        return 0
    per_output_pixel = max(JOB_BYTES_PER_PIXEL, STYLE_PASS_BYTES_PER_PIXEL * style_pixels / max(output_pixels, 1))
    return int(room / per_output_pixel)


def side_scale_to_fit(available: int, output_pixels: int, style_pixels: int = 0) -> float:
    """Factor (<= 1) for the output's sides so that the job fits in `available` bytes; 0 when nothing fits."""
    fit = pixels_that_fit(available, output_pixels, style_pixels)
    return min(1.0, math.sqrt(fit / output_pixels)) if output_pixels > 0 else 1.0


@dataclass(frozen=True)
class DeviceMemory:
    free: int
    """Free on the device, plus what PyTorch's cache holds but no tensor uses (it reuses that first)."""
    total: int


def device_memory(device: str) -> DeviceMemory | None:
    """Free and total memory of a CUDA device; None for other devices (nothing to check there)."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return DeviceMemory(free + max(cached, 0), total)


def reset_peak_memory(device: str) -> None:
    """Start counting a new peak of PyTorch's allocations on a CUDA device (nothing elsewhere)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: str) -> int | None:
    """The most PyTorch had allocated on a CUDA device since `reset_peak_memory`; None elsewhere."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated(device))
    return None
