"""Prometheus metrics for one engine app, on its own CollectorRegistry (so tests can build many apps)."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

OUTCOMES = ("done", "failed", "cancelled", "timed_out")
# Refusal codes exported from the start: a bug, and a client that hung up mid-request (not a bug).
WATCHED_CODES = ("internal_error", "client_aborted")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Queue waits and job times span sub-second (tiny CPU jobs) to the job time limit (minutes).
_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, float("inf"))
# Smoothing of the average job time used for ETAs and Retry-After (weight of the newest job).
_EMA_WEIGHT = 0.2


class _DeviceMemoryCollector(Collector):
    """Reads device memory at scrape time: CUDA allocated/reserved (PyTorch's allocator) and free/total (the whole
    device, other processes included) per device; process RSS for the CPU."""

    def __init__(self, devices: Callable[[], Sequence[str]]) -> None:
        self._devices = devices

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "nst_device_memory_bytes", "Memory of each worker device by kind", labels=["device", "kind"]
        )
        for device in self._devices():
            for kind, value in _device_memory(device):
                family.add_metric([device, kind], value)
        yield family


def _device_memory(device: str) -> list[tuple[str, float]]:
    if device.startswith("cuda"):
        import torch  # only here: the metrics module must not need torch to be imported

        if not torch.cuda.is_available():
            return []
        free, total = torch.cuda.mem_get_info(device)
        return [
            ("allocated", float(torch.cuda.memory_allocated(device))),
            ("reserved", float(torch.cuda.memory_reserved(device))),
            ("free", float(free)),
            ("total", float(total)),
        ]
    if device == "cpu":
        try:
            with open("/proc/self/statm") as f:
                resident_pages = int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            return []
        return [("resident", float(resident_pages * os.sysconf("SC_PAGE_SIZE")))]
    return []


class EngineMetrics:
    def __init__(self, *, queue_depth: Callable[[], float], devices: Callable[[], Sequence[str]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs = Counter("nst_jobs", "Finished jobs by outcome", ["outcome"], registry=r)
        self.rejected = Counter("nst_rejected_requests", "Refused requests by error code", ["code"], registry=r)
        self.submitted = Counter("nst_jobs_submitted", "Jobs accepted into the queue", registry=r)
        self.queue_depth = Gauge("nst_queue_depth", "Jobs waiting in the queue", registry=r)
        self.queue_depth.set_function(queue_depth)
        self.running = Gauge("nst_jobs_running", "Jobs running now", registry=r)
        self.job_seconds = Histogram(
            "nst_job_seconds", "Running time of finished jobs", ["outcome"], buckets=_SECONDS_BUCKETS, registry=r
        )
        self.queue_wait_seconds = Histogram(
            "nst_queue_wait_seconds", "Time from submission to start", buckets=_SECONDS_BUCKETS, registry=r
        )
        self.iterations = Counter("nst_iterations", "Optimiser iterations run", ["device"], registry=r)
        self.iterations_per_second = Gauge(
            "nst_iterations_per_second", "Iterations per second of the last job on each device", ["device"], registry=r
        )
        self.job_peak_memory = Gauge(
            "nst_job_peak_memory_bytes", "Peak PyTorch allocation of the last finished job on each CUDA device",
            ["device"], registry=r,
        )
        self.oom_retries = Counter("nst_oom_retries", "Jobs retried at a smaller size after out-of-memory", registry=r)
        self.ready = Gauge("nst_ready", "1 when every worker has loaded its weights", registry=r)
        r.register(_DeviceMemoryCollector(devices))
        for outcome in OUTCOMES:  # export zeros from the start, so rate() works on the first job
            self.jobs.labels(outcome)
        for code in WATCHED_CODES:
            self.rejected.labels(code)
        self._avg_job_seconds: float | None = None

    def job_finished(self, outcome: str, run_seconds: float | None) -> None:
        self.jobs.labels(outcome).inc()
        if run_seconds is not None:
            self.job_seconds.labels(outcome).observe(run_seconds)
            if outcome == "done":
                prev = self._avg_job_seconds
                self._avg_job_seconds = run_seconds if prev is None else prev + _EMA_WEIGHT * (run_seconds - prev)

    def job_started(self, wait_seconds: float) -> None:
        self.queue_wait_seconds.observe(wait_seconds)

    def iterations_done(self, device: str, count: int, seconds: float) -> None:
        if count > 0:
            self.iterations.labels(device).inc(count)
            if seconds > 0:
                self.iterations_per_second.labels(device).set(count / seconds)

    @property
    def avg_job_seconds(self) -> float | None:
        """Smoothed running time of recent successful jobs; None before the first."""
        return self._avg_job_seconds

    def render(self) -> bytes:
        return generate_latest(self.registry)
