"""The URL table, and nothing else."""
from __future__ import annotations

from aiohttp import web

from . import handlers

API = "/v1"


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/healthz", handlers.healthz)
    r.add_get("/readyz", handlers.readyz)
    r.add_get("/metrics", handlers.metrics)

    r.add_post(f"{API}/jobs", handlers.create_job)
    r.add_get(f"{API}/jobs/{{job_id}}", handlers.get_job)
    r.add_delete(f"{API}/jobs/{{job_id}}", handlers.cancel_job)
    r.add_post(f"{API}/jobs/{{job_id}}/cancel", handlers.cancel_job)
    r.add_get(f"{API}/jobs/{{job_id}}/events", handlers.job_events)
    r.add_get(f"{API}/jobs/{{job_id}}/result", handlers.job_result)
    r.add_get(f"{API}/jobs/{{job_id}}/preview", handlers.job_preview)
    r.add_get(f"{API}/queue", handlers.queue_status)

    r.add_get(f"{API}/presets", handlers.list_presets)
    r.add_post(f"{API}/presets", handlers.add_preset)
    r.add_get(f"{API}/presets/{{name}}/image", handlers.preset_image)
    r.add_delete(f"{API}/presets/{{name}}", handlers.remove_preset)
