"""Every typed `web.AppKey` of the engine app, in one place (state lives on the app, not in globals)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from ..images.presets import PresetLibrary
from .jobs import Job, JobStore
from .metrics import EngineMetrics
from .queue import FairQueue
from .settings import EngineSettings
from .worker import StylizerFactory, Worker

SETTINGS_KEY = web.AppKey("settings", EngineSettings)
METRICS_KEY = web.AppKey("metrics", EngineMetrics)
JOBS_KEY = web.AppKey("jobs", JobStore)
QUEUE_KEY = web.AppKey("queue", FairQueue[Job])
PRESETS_KEY = web.AppKey("presets", PresetLibrary)
WORKERS_KEY = web.AppKey("workers", list[Worker])
STYLIZER_FACTORY_KEY = web.AppKey("stylizer_factory", StylizerFactory)
IMAGE_EXECUTOR_KEY = web.AppKey("image_executor", ThreadPoolExecutor)
"""Threads for Pillow work in handlers (decode uploads, load presets), off the event loop."""
