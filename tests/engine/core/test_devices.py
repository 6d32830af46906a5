"""The GPU paths that can be checked without a GPU: why CUDA is not visible, precision flags, bf16 gating,
what torch.compile needs and how often it compiles, the memory estimate. CUDA availability and device
properties are monkeypatched where a test needs a GPU's answer."""
from __future__ import annotations

import ctypes
import logging

import numpy as np
import pytest
import torch
import torch._dynamo
from PIL import Image
from torch._dynamo.eval_frame import _debug_get_cache_entry_list

from nst_engine.core import devices
from nst_engine.core.devices import (
    COMPILE_ENTRIES_PER_MODEL,
    CompileUnavailable,
    CudaProbe,
    DeviceUnavailable,
    bf16_unsupported,
    compile_unavailable,
    configure_tf32,
    job_memory_bytes,
    pixels_that_fit,
    probe_cuda,
    reserve_compile_entries,
    resolve_device,
    side_scale_to_fit,
)
from nst_engine.core.optimize import Stylizer
from nst_engine.core.params import EngineOptions, StyleParams
from nst_engine.core.vgg import VGG19Features



def _picture(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def _libcuda_loads() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


# -- why no GPU ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("probe, expected", [
    (CudaProbe(None), "no CUDA support"),
    (CudaProbe("13.0"), "libcuda.so.1 cannot be loaded"),
    (CudaProbe("13.0", True, 12020), "supports CUDA up to 12.2 but this PyTorch is built for CUDA 13.0"),
    (CudaProbe("13.1", True, 13000, "CUDA_ERROR_NO_DEVICE: no CUDA-capable device is detected"),
     "cannot start CUDA (CUDA_ERROR_NO_DEVICE"),  # 13.0 runs 13.1 builds: the driver is not to blame
    (CudaProbe("13.0", True, 13000, "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH: system has unsupported display driver"),
     "cannot start CUDA (CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"),
    (CudaProbe("13.0", True, 13000, None), "finds no usable GPU"),
])
def test_each_reason_for_an_invisible_gpu_is_one_clause(probe, expected):
    text = probe.explain()
    assert expected in text
    assert "\n" not in text and not text.endswith(".")
    if probe.driver_cuda == 12020:
        assert "R580" in text  # what to install, not just what is wrong


@pytest.mark.skipif(_libcuda_loads(), reason="this machine has an NVIDIA driver")
def test_the_real_probe_finds_no_driver_here():
    probe = probe_cuda()
    assert probe.torch_cuda == torch.version.cuda
    if probe.torch_cuda is not None:
        assert not probe.driver_loaded and "libcuda.so.1" in probe.explain()


def test_asking_for_cuda_without_a_gpu_says_why(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "probe_cuda", lambda: CudaProbe("13.0", True, 12020))
    with pytest.raises(DeviceUnavailable, match=r"'cuda:0' is not available here: .*12\.2"):
        resolve_device("cuda:0")


def test_a_broken_driver_probe_still_gives_one_line(monkeypatch):
    def broken() -> CudaProbe:
        raise OSError("segfault avoided")

    monkeypatch.setattr(devices, "probe_cuda", broken)
    assert devices.why_no_cuda() == "no CUDA device is visible (probing the driver failed: segfault avoided)"


# -- precision -----------------------------------------------------------------------------------------------------


@pytest.fixture
def restore_precision_flags():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.set_float32_matmul_precision(saved[2])


def _flags() -> dict[str, object]:
    """Every reading of the flags; any of them raising is the bug this guards against."""
    return {
        "matmul_precision": torch.get_float32_matmul_precision(),
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_fp32": torch.backends.cuda.matmul.fp32_precision,
        "conv_fp32": torch.backends.cudnn.conv.fp32_precision,
    }


@pytest.mark.usefixtures("restore_precision_flags")
def test_tf32_is_for_convolutions_only_and_both_flag_apis_stay_readable():
    configure_tf32(True)
    assert _flags() == {"matmul_precision": "highest", "matmul_tf32": False, "cudnn_tf32": True,
                        "matmul_fp32": "ieee", "conv_fp32": "tf32"}
    configure_tf32(False)
    flags = _flags()
    assert flags["cudnn_tf32"] is False and flags["conv_fp32"] != "tf32"
    assert flags["matmul_tf32"] is False and flags["matmul_precision"] == "highest"


@pytest.mark.usefixtures("restore_precision_flags")
def test_tf32_setup_repairs_a_mixed_flag_state():
    torch.backends.cuda.matmul.fp32_precision = "tf32"  # the new API alone: the legacy readers now raise
    with pytest.raises(RuntimeError, match="mix of the legacy and new APIs"):
        torch.get_float32_matmul_precision()
    configure_tf32(True)
    assert _flags()["matmul_precision"] == "highest" and _flags()["matmul_fp32"] == "ieee"


def test_bf16_is_refused_on_gpus_without_bf16_tensor_cores(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    reason = bf16_unsupported(torch.device("cuda:1"))
    assert reason is not None and "Tesla T4" in reason and "7.5" in reason
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert bf16_unsupported(torch.device("cuda:1")) is None
    assert bf16_unsupported(torch.device("cpu")) is None


def test_the_stylizer_runs_fp32_where_bf16_is_refused_and_says_so(monkeypatch, caplog):
    import nst_engine.core.optimize as optimize

    monkeypatch.setattr(optimize, "bf16_unsupported", lambda device: "Tesla T4 has no bf16 tensor cores")
    with caplog.at_level(logging.WARNING, logger="nst_engine.core.optimize"):
        stylizer = Stylizer(EngineOptions(device="cpu", bf16=True))
    assert stylizer.options.bf16 is False
    assert "bf16 is off on cpu: Tesla T4 has no bf16 tensor cores" in caplog.text
    assert Stylizer(EngineOptions(device="cpu", bf16=False)).options.bf16 is False


# -- torch.compile -------------------------------------------------------------------------------------------------


def test_compile_needs_a_compiler_and_python_headers(monkeypatch, tmp_path):
    if devices._c_compiler() is None or not (devices._python_include_dir() / "Python.h").is_file():
        pytest.skip("this machine cannot build triton's launcher either")
    assert compile_unavailable("cuda") is None
    monkeypatch.setattr(devices, "_python_include_dir", lambda: tmp_path)
    assert "Python.h is missing" in compile_unavailable("cuda")
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler on the PATH
    assert "needs a C compiler (gcc or clang)" in compile_unavailable("cuda")
    assert "needs a C++ compiler" in compile_unavailable("cpu")
    assert compile_unavailable("mps") is None
    with pytest.raises(CompileUnavailable, match="C\\+\\+ compiler"):
        Stylizer(EngineOptions(device="cpu", compile=True))


@pytest.fixture
def dynamo_limit():
    saved = torch._dynamo.config.recompile_limit
    yield
    torch._dynamo.config.recompile_limit = saved


@pytest.mark.usefixtures("dynamo_limit")
def test_each_compiled_model_widens_the_recompile_limit():
    first = reserve_compile_entries()
    second = reserve_compile_entries()
    assert second == max(first, torch._dynamo.config.recompile_limit) and second >= first
    assert second - first in (0, COMPILE_ENTRIES_PER_MODEL)
    assert torch._dynamo.config.recompile_limit >= COMPILE_ENTRIES_PER_MODEL * 2


@pytest.mark.usefixtures("dynamo_limit")
def test_compiled_model_is_warmed_up_as_jobs_run_and_reused_across_sizes(monkeypatch):
    """Dynamo's graphs are the same whatever the backend: 'eager' counts them without minutes of codegen (inductor's
    own guards are checked through the options it gets).

    The sizes stay in one range of the CPU's convolution-backend heuristics (a CPU-only guard); on CUDA every
    size falls in one range.
    """
    asked: list[dict] = []
    real_compile = torch.compile

    def compile_eagerly(model, **kwargs):
        asked.append(kwargs)  # inductor's options mean nothing to the eager backend
        return real_compile(model, backend="eager", dynamic=kwargs["dynamic"])

    monkeypatch.setattr(torch, "compile", compile_eagerly)
    torch._dynamo.reset()
    try:
        stylizer = Stylizer(EngineOptions(device="cpu", compile=True))
        stylizer.warm_up()
        code = VGG19Features.forward.__code__
        assert len(_debug_get_cache_entry_list(code)) == 2  # the target pass (no grad) and the loop's pass
        for (width, height), size in (((72, 48), 72), ((64, 64), 64), ((56, 72), 72)):
            result = stylizer.stylize(_picture(width, height, 1), [_picture(64, 64, 2)],
                                      StyleParams(size=size, steps=2, scales=1))
            assert result.scales == [(width, height)]
        assert len(_debug_get_cache_entry_list(code)) == 2
        # With inductor, a convolution's backward stays dynamic only with the layout optimisation forced (on the
        # CPU, measured: 2 graphs after 2 more sizes with it, one more graph per size without).
        assert asked == [{"dynamic": True, "options": {"force_layout_optimization": True}}]
    finally:
        torch._dynamo.reset()


# -- memory --------------------------------------------------------------------------------------------------------


def test_the_memory_estimate_matches_the_documented_sizes():
    gib = 2**30
    # docs/self-hosting.md: a 1024 px 3:2 photo needs about 3.2 GB (+ the CUDA context).
    assert 3.1 * 10**9 < job_memory_bytes(1024 * 683) < 3.3 * 10**9
    assert job_memory_bytes(512 * 341) < 1 * gib
    # A style pass at 4x the output's area outweighs the optimisation's own memory only when it is huge.
    assert job_memory_bytes(1000, 16_000_000) > job_memory_bytes(1000)


def test_sizes_that_fit_are_found_before_the_job_starts():
    need = job_memory_bytes(600_000)
    assert pixels_that_fit(need, 600_000) >= 599_999
    assert side_scale_to_fit(need * 2, 600_000) == 1.0
    half = side_scale_to_fit(job_memory_bytes(150_000), 600_000)
    assert half == pytest.approx(0.5, abs=0.01)
    assert side_scale_to_fit(10 * 2**20, 600_000) == 0.0  # not even the model fits
    assert job_memory_bytes(int(600_000 * half**2)) <= job_memory_bytes(150_000) + 4096
