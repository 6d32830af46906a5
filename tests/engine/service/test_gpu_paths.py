"""The service's GPU paths, checked on the CPU: refusing to start without the GPU that was asked for, the health
check's device, every kind of out-of-memory, the memory pre-check, per-job peaks and device memory in /metrics.
Where a GPU's answer is needed (availability, free memory, peak), the torch call is monkeypatched."""
from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from aiohttp.test_utils import TestClient, TestServer

from nst_engine.core import devices
from nst_engine.core.devices import CudaProbe, DeviceMemory, DeviceUnavailable, job_memory_bytes
from nst_engine.service import metrics as metrics_module
from nst_engine.service import serve
from nst_engine.service import worker as worker_module
from nst_engine.service.app import create_app
from nst_engine.service.keys import WORKERS_KEY
from nst_engine.service.settings import EngineSettings
from nst_engine.service.worker import is_out_of_memory, worker_devices

REPO = Path(__file__).resolve().parents[3]
MiB = 2**20


def _clear_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("ENGINE_"):
            monkeypatch.delenv(key)


@pytest.fixture
def no_gpu(monkeypatch):
    """A host whose driver is older than the wheel's CUDA (the first-day failure), however this machine is."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "probe_cuda", lambda: CudaProbe("13.0", True, 12020))


# -- no silent CPU fallback ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_gpu")
def test_cuda_without_a_gpu_is_refused_with_the_reason():
    with pytest.raises(DeviceUnavailable, match=r"^no GPU is visible: the NVIDIA driver supports CUDA up to 12\.2"):
        worker_devices("cuda")
    with pytest.raises(DeviceUnavailable, match="'cuda:1' is not available here: the NVIDIA driver"):
        worker_devices("cuda:1")


@pytest.mark.usefixtures("no_gpu")
def test_auto_falls_back_to_the_cpu_and_says_why_once(caplog):
    worker_module._warn_no_gpu.cache_clear()
    with caplog.at_level(logging.WARNING, logger="nst_engine.service.worker"):
        assert worker_devices("auto") == ["cpu"]
        assert worker_devices("auto") == ["cpu"]  # serve.main, then the app
    worker_module._warn_no_gpu.cache_clear()
    assert caplog.text.count("no GPU is visible (the NVIDIA driver supports CUDA up to 12.2") == 1
    assert "ENGINE_DEVICE=cuda" in caplog.text


@pytest.mark.usefixtures("no_gpu")
def test_serve_stops_at_start_with_one_sentence_when_the_gpu_is_missing(monkeypatch, capsys):
    _clear_env(monkeypatch)
    monkeypatch.setenv("ENGINE_DEVICE", "cuda")
    assert serve.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("nst_engine serve: ENGINE_DEVICE=cuda: no GPU is visible: ")
    assert "R580" in err


def test_the_real_engine_process_refuses_cuda_on_this_gpu_less_machine(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    env = {"PATH": "/usr/bin:/bin", "ENGINE_DEVICE": "cuda", "ENGINE_PRESETS_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "nst_engine", "serve"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("nst_engine serve: ENGINE_DEVICE=cuda: no GPU is visible: ")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_serve_refuses_compile_without_a_compiler(monkeypatch, capsys, tmp_path):
    _clear_env(monkeypatch)
    monkeypatch.setenv("ENGINE_DEVICE", "cpu")
    monkeypatch.setenv("ENGINE_COMPILE", "true")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert serve.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("nst_engine serve: ENGINE_COMPILE=true: torch.compile on the CPU needs a C++ compiler")
    assert err.rstrip().endswith("set ENGINE_COMPILE=false")


# -- the health check's device -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_readyz_shows_the_device_and_precision_in_use(start_engine):
    engine = await start_engine()
    await engine.wait_for(lambda: engine.app[WORKERS_KEY][0].ready)
    ready = await engine.get_json("/readyz", headers={})
    worker = ready["workers"][0]
    assert ready["status"] == "ready"
    assert (worker["device"], worker["device_name"], worker["precision"]) == ("cpu", None, "fp32")


class _ElsewhereStylizer:
    """A stylizer that ended up on another device than the one asked for (what a silent fallback looks like)."""

    def __init__(self, options) -> None:
        self.options = options
        self.device = "cuda:0" if options.device == "cpu" else "cpu"

    def warm_up(self, params=None) -> None:
        pass


@pytest.mark.asyncio
async def test_a_worker_on_the_wrong_device_is_not_ready(engine_settings):
    app = create_app(EngineSettings(**engine_settings), stylizer_factory=_ElsewhereStylizer)
    async with TestClient(TestServer(app)) as client:
        workers = app[WORKERS_KEY]
        for _ in range(1000):
            if workers and workers[0].state != "starting":
                break
            await asyncio.sleep(0.01)
        async with client.get("/readyz") as resp:
            body = await resp.json()
            assert resp.status == 503
    assert body["status"] == "unavailable"
    assert "asked for cpu but the model runs on cuda:0" in body["workers"][0]["error"]


# -- out of memory -----------------------------------------------------------------------------------------------


def _chained() -> RuntimeError:
    try:
        try:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        except torch.OutOfMemoryError as exc:
            raise RuntimeError("while running the loss") from exc
    except RuntimeError as exc:
        return exc


@pytest.mark.parametrize("exc, expected", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"), True),
    (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), True),
    (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), True),
    (RuntimeError("CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`"), True),
    (RuntimeError("GET was unable to find an engine to execute this computation"), True),
    (RuntimeError("CUDA error: out of memory\nCompile with `TORCH_USE_CUDA_DSA` to enable device-side assertions."),
     True),
    (_chained(), True),
    (RuntimeError("Expected all tensors to be on the same device"), False),
    (ValueError("out of memory"), False),
])
def test_out_of_memory_in_all_its_spellings(exc, expected):
    assert is_out_of_memory(exc) is expected


@pytest.mark.asyncio
async def test_a_cudnn_allocation_failure_is_retried_smaller(start_engine, samples):
    engine = await start_engine()
    engine.fake.fail_with, engine.fake.fail_once = RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), True
    body = await engine.submit_ok(samples.png(48, 32), [samples.png()], size=60)
    final = await engine.wait(body["job_id"])
    assert final["type"] == "done" and final["result"]["width"] == 42
    assert [n["code"] for n in final["notes"]] == ["oom_retry"]
    assert [c["size"] for c in engine.fake.calls] == [60, 42]


# -- memory before the job ---------------------------------------------------------------------------------------


def _free(monkeypatch, free: int) -> None:
    monkeypatch.setattr(worker_module, "device_memory", lambda device: DeviceMemory(free, 16 * 2**30))


@pytest.mark.asyncio
async def test_a_job_that_cannot_fit_is_shrunk_before_it_starts(start_engine, samples, monkeypatch):
    _free(monkeypatch, job_memory_bytes(60_000))  # a quarter of the 600x400 px asked for
    engine = await start_engine(max_size=1024)
    body = await engine.submit_ok(samples.png(48, 32), [samples.png()], size=600)
    final = await engine.wait(body["job_id"])
    assert final["type"] == "done", final
    assert [c["size"] for c in engine.fake.calls] == [300]  # half the sides; never tried at 600
    notes = {n["code"]: n["message"] for n in final["notes"]}
    assert "size reduced from 600 to 300 px to fit" in notes["memory_capped"]


@pytest.mark.asyncio
async def test_a_job_that_fits_runs_as_asked(start_engine, samples, monkeypatch):
    _free(monkeypatch, job_memory_bytes(2400))
    engine = await start_engine()
    body = await engine.submit_ok(samples.png(48, 32), [samples.png()], size=60)
    final = await engine.wait(body["job_id"])
    assert final["type"] == "done" and final["notes"] == []
    assert [c["size"] for c in engine.fake.calls] == [60]


@pytest.mark.asyncio
async def test_a_job_is_refused_when_the_device_is_nearly_full(start_engine, samples, monkeypatch):
    _free(monkeypatch, 300 * MiB)  # less than the model and its workspace
    engine = await start_engine()
    body = await engine.submit_ok(samples.png(48, 32), [samples.png()], size=60)
    final = await engine.wait(body["job_id"])
    assert final["type"] == "failed" and final["error"]["code"] == "out_of_memory"
    assert "300 MiB free" in final["error"]["message"]
    assert engine.fake.calls == []


# -- what /metrics shows -----------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_each_jobs_peak_is_in_its_stats_and_in_metrics(start_engine, samples, monkeypatch):
    monkeypatch.setattr(worker_module, "peak_memory", lambda device: 123 * MiB)
    engine = await start_engine()
    body = await engine.submit_ok(samples.png(48, 32), [samples.png()], size=48)
    final = await engine.wait(body["job_id"])
    assert final["stats"]["peak_memory_bytes"] == 123 * MiB
    async with engine.client.get("/metrics", headers=engine.auth) as resp:
        text = await resp.text()
    values = [line.split()[-1] for line in text.splitlines() if line.startswith('nst_job_peak_memory_bytes{device="cpu"}')]
    assert [float(v) for v in values] == [123 * MiB]


def test_cuda_memory_metrics_include_free_and_total(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (5 * 2**30, 24 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 2**30)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 2 * 2**30)
    kinds = dict(metrics_module._device_memory("cuda:0"))
    assert kinds == {"allocated": 2**30, "reserved": 2 * 2**30, "free": 5 * 2**30, "total": 24 * 2**30}
    # What the pre-check counts as free: the device's free memory plus PyTorch's unused cache.
    assert devices.device_memory("cuda:0") == DeviceMemory(6 * 2**30, 24 * 2**30)
    assert devices.device_memory("cpu") is None
