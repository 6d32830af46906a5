"""EngineClient against small aiohttp servers on 127.0.0.1 that answer like the engine (docs/engine-api.md):
the multipart it sends, the answers it maps to errors, its retries, the token.

Backoffs are milliseconds, so the retry tests take no noticeable time.
"""
from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.engine.http import EngineClient, JobSpec
from bot.errors import EngineBusy, EngineError, EngineUnavailable, JobLost

pytestmark = pytest.mark.asyncio

TOKEN = "s3cret-token-0123456789abcdef"
FAST = {"attempts": 3, "backoff": 0.001, "max_backoff": 0.005}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
          **extra: Any) -> web.Response:
    """An error answer in the engine's format: {"error": {"code", "message", ...}}."""
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status, headers=headers)


def status_body(job_id: str, state: str = "queued") -> dict[str, Any]:
    return {"job_id": job_id, "state": state, "position": 1, "eta_s": None, "requester": "42",
            "links": {"self": f"/v1/jobs/{job_id}"}}


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None
    query: dict[str, str]
    at: float


@dataclass
class Engine:
    """One fake engine: `answers[(method, route)]` is a list of responses given in order (the last one
    repeats); every request is recorded in `seen`."""

    url: str = ""
    answers: dict[tuple[str, str], list[web.Response | Handler]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def paths(self, method: str | None = None) -> list[str]:
        return [s.path for s in self.seen if method is None or s.method == method]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.path, request.headers.get("Authorization"),
                              dict(request.query), time.monotonic()))
        route = request.match_info.route.resource.canonical  # type: ignore[union-attr]
        queue = self.answers.get((request.method, route))
        if not queue:
            return error(404, "not_found", "No such route.")
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if callable(answer):
            return await answer(request)
        # a response can be sent only once: the repeated last answer is sent as a copy
        return web.Response(body=answer.body, status=answer.status, headers=answer.headers.copy())


ROUTES = [("POST", "/v1/jobs"), ("GET", "/v1/jobs/{id}"), ("GET", "/v1/jobs/{id}/events"),
          ("GET", "/v1/jobs/{id}/result"), ("POST", "/v1/jobs/{id}/cancel"), ("GET", "/v1/queue"),
          ("GET", "/v1/presets"), ("GET", "/v1/presets/{name}/image"), ("GET", "/readyz")]


@pytest_asyncio.fixture
async def start_engine() -> AsyncIterator[Callable[[], Awaitable[Engine]]]:
    servers: list[TestServer] = []

    async def start() -> Engine:
        engine = Engine()
        app = web.Application()
        for method, route in ROUTES:
            app.router.add_route(method, route, engine.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        engine.url = str(server.make_url("/")).rstrip("/")
        return engine

    yield start
    for server in servers:
        await server.close()


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest_asyncio.fixture
async def engine(start_engine) -> Engine:
    return await start_engine()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- submit ---------------------------------------------------------------------------------------------------------


async def test_submit_sends_the_spec_as_multipart_with_the_token(engine, session):
    fields: list[tuple[str, str | None, bytes]] = []

    async def create(request: web.Request) -> web.Response:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            fields.append((part.name, part.filename, await part.read()))  # type: ignore[union-attr]
        return web.json_response(status_body("j1"), status=202)

    engine.answers[("POST", "/v1/jobs")] = [create]
    client = EngineClient(session, engine.url, TOKEN, **FAST)
    spec = JobSpec(requester="42", content=b"CONTENT", content_name="photo.jpg", style=b"STYLE",
                   style_name="starry.png", preset="mosaic", size=768, strength=6.5, preserve_colors=True,
                   seed=7, byte_budget=8_000_000)
    submitted = await client.submit(spec)

    assert (submitted.engine, submitted.job_id) == (engine.url, "j1")
    assert submitted.status == status_body("j1")
    assert engine.seen[0].authorization == f"Bearer {TOKEN}"
    assert sorted(fields) == sorted([
        ("content", "photo.jpg", b"CONTENT"), ("style", "starry.png", b"STYLE"), ("preset", None, b"mosaic"),
        ("requester", None, b"42"), ("preserve_colors", None, b"true"), ("size", None, b"768"),
        ("strength", None, b"6.5"), ("seed", None, b"7"), ("byte_budget", None, b"8000000"),
    ])  # no `steps`: it was not set, so the engine's default applies


async def test_submit_leaves_out_what_is_not_set(engine, session):
    fields: dict[str, tuple[str | None, bytes]] = {}

    async def create(request: web.Request) -> web.Response:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            fields[part.name] = (part.filename, await part.read())  # type: ignore[index,union-attr]
        return web.json_response(status_body("j2"), status=202)

    engine.answers[("POST", "/v1/jobs")] = [create]
    client = EngineClient(session, engine.url, None, **FAST)
    await client.submit(JobSpec(requester="9", content=b"C", content_name="c.png", style=b"S", seed=0))
    assert fields == {"content": ("c.png", b"C"), "style": ("style.png", b"S"), "requester": (None, b"9"),
                      "preserve_colors": (None, b"false"), "seed": (None, b"0")}
    assert engine.seen[0].authorization is None  # no token, no header


# --- status, result, cancel ---------------------------------------------------------------------------------------


async def test_status_result_and_cancel(engine, session):
    engine.answers[("GET", "/v1/jobs/{id}")] = [web.json_response(status_body("j1", "running"))]
    engine.answers[("GET", "/v1/jobs/{id}/result")] = [web.Response(body=b"\x89PNG...", content_type="image/png")]
    engine.answers[("POST", "/v1/jobs/{id}/cancel")] = [
        web.json_response({**status_body("j1", "running"), "cancel_requested": True}, status=202)]
    client = EngineClient(session, engine.url, TOKEN, **FAST)

    assert await client.status(engine.url, "j1") == status_body("j1", "running")
    assert await client.result(engine.url, "j1") == b"\x89PNG..."
    assert (await client.cancel(engine.url, "j1"))["cancel_requested"] is True
    assert engine.paths() == ["/v1/jobs/j1", "/v1/jobs/j1/result", "/v1/jobs/j1/cancel"]
    assert {s.authorization for s in engine.seen} == {f"Bearer {TOKEN}"}


async def test_an_unknown_job_is_lost_at_once(engine, session):
    engine.answers[("GET", "/v1/jobs/{id}")] = [error(404, "job_not_found", "No job gone.")]
    client = EngineClient(session, engine.url, TOKEN, **FAST)
    with pytest.raises(JobLost) as lost:
        await client.status(engine.url, "gone")
    assert lost.value.job_id == "gone" and lost.value.status == 404 and lost.value.code == "job_not_found"
    assert engine.paths() == ["/v1/jobs/gone"]  # a 404 is not retried


@pytest.mark.parametrize("answer", [error(404, "job_not_found", "No such job."),
                                    error(409, "already_finished", "The job is done.")])
async def test_cancel_of_a_finished_or_unknown_job_is_none(engine, session, answer):
    engine.answers[("POST", "/v1/jobs/{id}/cancel")] = [answer]
    client = EngineClient(session, engine.url, TOKEN, **FAST)
    assert await client.cancel(engine.url, "j1") is None
    assert len(engine.seen) == 1


async def test_result_before_done_is_the_engines_error(engine, session):
    engine.answers[("GET", "/v1/jobs/{id}/result")] = [error(409, "not_finished", "The job is still running.")]
    client = EngineClient(session, engine.url, TOKEN, **FAST)
    with pytest.raises(EngineError) as err:
        await client.result(engine.url, "j1")
    assert (err.value.status, err.value.code, err.value.message) == (409, "not_finished", "The job is still running.")


# --- busy and down ------------------------------------------------------------------------------------------------


async def test_429_is_retried_then_raised_as_busy_with_its_retry_after(engine, session):
    engine.answers[("GET", "/v1/jobs/{id}")] = [
        error(429, "queue_full", "The queue is full.", headers={"Retry-After": "5"})]
    client = EngineClient(session, engine.url, TOKEN, **FAST)  # max_backoff caps the 5 s
    with pytest.raises(EngineBusy) as busy:
        await asyncio.wait_for(client.status(engine.url, "j1"), 10)
    assert len(engine.seen) == 3  # FAST["attempts"]
    assert (busy.value.status, busy.value.code, busy.value.message) == (429, "queue_full", "The queue is full.")
    assert busy.value.retry_after == 5.0


async def test_429_then_accepted(engine, session):
    engine.answers[("POST", "/v1/jobs")] = [
        error(429, "too_many_jobs", "You have 3 jobs waiting.", headers={"Retry-After": "0"}),
        web.json_response(status_body("j9"), status=202)]
    client = EngineClient(session, engine.url, TOKEN, **FAST)
    assert (await client.submit(JobSpec(requester="1", content=b"c", content_name="c.png"))).job_id == "j9"
    assert engine.paths("POST") == ["/v1/jobs", "/v1/jobs"]


async def test_retry_after_is_waited_for_not_the_short_backoff(engine, session):
    engine.answers[("GET", "/v1/jobs/{id}")] = [
        error(429, "queue_full", "Full.", headers={"Retry-After": "0.2"}), web.json_response(status_body("j1"))]
    client = EngineClient(session, engine.url, TOKEN, attempts=2, backoff=0.001, max_backoff=5.0)
    await client.status(engine.url, "j1")
    first, second = engine.seen
    assert second.at - first.at >= 0.2  # a lower bound: sleeping never ends early


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_retried_then_unavailable(engine, session, status):
    engine.answers[("GET", "/v1/jobs/{id}")] = [error(status, "internal_error", "Oops.")]
    client = EngineClient(session, engine.url, TOKEN, **FAST)
    with pytest.raises(EngineUnavailable) as down:
        await client.status(engine.url, "j1")
    assert len(engine.seen) == 3
    assert down.value.code == "engine_unavailable" and down.value.status == 503
    assert down.value.detail == f"{status} internal_error: Oops."
    assert down.value.message == "The style engine is offline; your job will run when it is back."


async def test_a_5xx_then_an_answer(engine, session):
    engine.answers[("GET", "/v1/jobs/{id}")] = [
        error(503, "shutting_down", "Restarting.", headers={"Retry-After": "0"}),
        web.Response(status=502, text="<html>bad gateway</html>", content_type="text/html"),
        web.json_response(status_body("j1", "done"))]
    client = EngineClient(session, engine.url, TOKEN, **FAST)
    assert (await client.status(engine.url, "j1"))["state"] == "done"
    assert len(engine.seen) == 3


async def test_connection_refused_is_unavailable_after_its_tries(session, caplog):
    caplog.set_level(logging.DEBUG, logger="bot.engine.http")
    url = f"http://127.0.0.1:{closed_port()}"
    client = EngineClient(session, url, TOKEN, **FAST)
    with pytest.raises(EngineUnavailable) as down:
        await asyncio.wait_for(client.status(url, "j1"), 10)
    tries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("engine request failed")]
    assert [t.split(" (")[1][:8] for t in tries] == ["try 1/3)", "try 2/3)", "try 3/3)"]
    assert down.value.detail.startswith(f"GET {url}/v1/jobs/j1: ")
    with pytest.raises(EngineUnavailable):
        await asyncio.wait_for(client.submit(JobSpec(requester="1", content=b"c", content_name="c.png")), 10)
    assert TOKEN not in down.value.detail and TOKEN not in str(down.value)


# --- error bodies --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer, status, code, message, suggestions", [
    (error(400, "unknown_preset", "There is no preset `mosiac`.", suggestions=["mosaic", "mosaic2"]),
     400, "unknown_preset", "There is no preset `mosiac`.", ["mosaic", "mosaic2"]),
    (error(413, "too_many_pixels", "The content image is 30000×30000 pixels."),
     413, "too_many_pixels", "The content image is 30000×30000 pixels.", []),
    (web.Response(status=415, text="not json"), 415, "http_415", "The style engine answered 415.", []),
    (web.json_response({"error": "flat string"}, status=400), 400, "http_400", "The style engine answered 400.", []),
    (web.json_response(["a", "list"], status=422), 422, "http_422", "The style engine answered 422.", []),
    (web.json_response({"error": {"message": "No code."}}, status=401), 401, "http_401", "No code.", []),
])
async def test_error_bodies_become_engine_errors_without_retries(engine, session, answer, status, code, message,
                                                                  suggestions):
    engine.answers[("POST", "/v1/jobs")] = [answer]
    client = EngineClient(session, engine.url, TOKEN, **FAST)
    with pytest.raises(EngineError) as err:
        await client.submit(JobSpec(requester="1", content=b"c", content_name="c.png", preset="mosiac"))
    assert type(err.value) is EngineError
    assert (err.value.status, err.value.code, err.value.message) == (status, code, message)
    assert err.value.suggestions == suggestions
    assert len(engine.seen) == 1


# --- the token -------------------------------------------------------------------------------------------------------


async def test_the_token_goes_only_in_the_authorization_header(engine, session):
    engine.answers[("GET", "/v1/jobs/{id}")] = [web.json_response(status_body("j1"))]
    engine.answers[("GET", "/v1/presets")] = [web.json_response({"presets": [{"name": "b"}, {"name": "a"}]})]
    engine.answers[("GET", "/v1/presets/{name}/image")] = [web.Response(body=b"thumb", content_type="image/png")]
    client = EngineClient(session, engine.url, TOKEN, **FAST)
    await client.status(engine.url, "j1")
    assert await client.presets() == ["a", "b"]
    assert await client.preset_image("b", side=64) == b"thumb"
    assert [s.authorization for s in engine.seen] == [f"Bearer {TOKEN}"] * 3
    assert engine.seen[-1].query == {"size": "64"}
    assert all(TOKEN not in s.path and TOKEN not in json.dumps(s.query) for s in engine.seen)
    assert TOKEN not in repr(client) and TOKEN not in str(client) and engine.url in repr(client)


# --- events -----------------------------------------------------------------------------------------------------------


async def test_the_event_stream_ends_with_the_done_event(engine, session):
    lines = [{"type": "status", "seq": 1, **status_body("j1")},
             {"type": "progress", "seq": 2, "job_id": "j1", "iteration": 10, "total": 20},
             {"type": "done", "seq": 3, **status_body("j1", "done")},
             {"type": "progress", "seq": 4, "job_id": "j1"}]  # never read: the stream is over at `done`

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for line in lines:
            await resp.write(json.dumps(line).encode() + b"\n")
        await resp.write_eof()
        return resp

    engine.answers[("GET", "/v1/jobs/{id}/events")] = [events]
    client = EngineClient(session, engine.url, TOKEN, **FAST)
    received = [event async for event in client.events(engine.url, "j1")]
    assert len(received) == 3  # status, progress, done; and no "ended early" error
    assert engine.seen[0].authorization == f"Bearer {TOKEN}"


# --- readiness -----------------------------------------------------------------------------------------------------


async def test_ready_is_whether_the_engine_answers_200(start_engine, session):
    starting, ready = await start_engine(), await start_engine()
    starting.answers[("GET", "/readyz")] = [web.json_response({"status": "starting"}, status=503)]
    ready.answers[("GET", "/readyz")] = [web.json_response({"status": "ready"})]
    dead = f"http://127.0.0.1:{closed_port()}"
    assert await EngineClient(session, ready.url, TOKEN).ready() is True
    assert await EngineClient(session, starting.url, TOKEN).ready() is False
    assert await EngineClient(session, dead, TOKEN).ready() is False
    assert starting.seen[0].authorization is None  # /readyz needs no token, and gets none
