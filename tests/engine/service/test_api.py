"""The engine service through a real HTTP client, with a fake stylizer (fast and controllable)."""
from __future__ import annotations

import base64
import io

import aiohttp
import numpy as np
import pytest
from PIL import Image

from nst_engine.service.keys import JOBS_KEY, WORKERS_KEY

pytestmark = pytest.mark.asyncio


async def _error(resp: aiohttp.ClientResponse) -> dict:
    body = await resp.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["message"]
    return body["error"]


async def test_submit_watch_fetch(start_engine, samples):
    engine = await start_engine()
    engine.fake.hold = True
    body = await engine.submit_ok(samples.jpeg(48, 32), [samples.png()], requester="u1", size=32, steps=3)
    assert body["state"] == "queued" and body["position"] == 1
    assert body["params"]["size"] == 32 and body["params"]["steps"] == 3
    assert body["links"]["events"] == f"/v1/jobs/{body['job_id']}/events"
    job_id = body["job_id"]
    events = await engine.watched(job_id)
    types = [e["type"] for e in events]
    assert types[0] == "status" and types[-1] == "done"
    assert events[0]["state"] in ("queued", "running") and "progress" in types
    progress = [e for e in events if e["type"] == "progress"]
    assert progress[-1]["iteration"] == progress[-1]["total"] == 3
    assert {"scale", "num_scales", "eta_s", "elapsed_s", "width", "height"} <= set(progress[0])
    assert [e["seq"] for e in events[1:]] == sorted(e["seq"] for e in events[1:])
    final = events[-1]
    assert final["result"]["url"] == f"/v1/jobs/{job_id}/result"
    async with engine.client.get(final["result"]["url"], headers=engine.auth) as resp:
        assert resp.status == 200
        assert resp.content_type == "image/png"
        assert resp.headers["X-Image-Width"] == "32"
        data = await resp.read()
    im = Image.open(io.BytesIO(data))
    assert im.size == (32, 21) and im.mode == "RGB"
    status = await engine.get_json(f"/v1/jobs/{job_id}")
    assert status["state"] == "done" and status["run_s"] is not None and status["queue_wait_s"] is not None
    # Watching a finished job answers at once with its final state.
    again = await engine.events(job_id)
    assert [e["type"] for e in again] == ["status", "done"]


async def test_started_event_when_watching_from_the_queue(start_engine, samples):
    engine = await start_engine()
    engine.fake.hold = True
    first = await engine.submit_ok(samples.png(), [samples.png()], requester="a")
    second = await engine.submit_ok(samples.png(), [samples.png()], requester="b")
    assert second["position"] == 1 or second["position"] == 2
    await engine.wait_for(lambda: engine.job(first["job_id"]).state == "running")
    events = await engine.watched(second["job_id"])
    types = [e["type"] for e in events]
    assert types[0] == "status" and events[0]["state"] == "queued" and events[0]["position"] == 1
    assert "started" in types and types[-1] == "done"
    started = next(e for e in events if e["type"] == "started")
    assert started["device"] == "cpu" and started["queue_wait_s"] >= 0


async def test_alpha_is_put_back(start_engine, samples):
    engine = await start_engine()
    body = await engine.submit_ok(samples.rgba_png(48, 32), [samples.jpeg()], size=32)
    final = await engine.wait(body["job_id"])
    assert final["type"] == "done"
    async with engine.client.get(final["result"]["url"], headers=engine.auth) as resp:
        im = Image.open(io.BytesIO(await resp.read()))
    assert im.mode == "RGBA" and im.size == (32, 21)
    alpha = np.asarray(im.getchannel("A"))
    assert alpha[10, 0] < 30 and alpha[10, -1] > 225  # the content's left-to-right alpha ramp


@pytest.mark.parametrize("fmt,ctype", [("jpeg", "image/jpeg"), ("webp", "image/webp"), ("png", "image/png")])
async def test_output_format(start_engine, samples, fmt, ctype):
    engine = await start_engine()
    body = await engine.submit_ok(samples.jpeg(), [samples.png()], format=fmt)
    final = await engine.wait(body["job_id"])
    assert final["result"]["content_type"] == ctype
    async with engine.client.get(final["result"]["url"], headers=engine.auth) as resp:
        assert resp.content_type == ctype
        assert resp.headers["Content-Disposition"].startswith("inline; filename=")


async def test_byte_budget_falls_back_to_lossy(start_engine, samples):
    engine = await start_engine(max_size=512)
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    body = await engine.submit_ok(samples.encode(noise, "PNG"), [samples.png()], size=256, byte_budget=100_000)
    final = await engine.wait(body["job_id"])
    assert final["type"] == "done"
    assert final["result"]["format"] == "jpeg" and final["result"]["bytes"] <= 100_000
    assert final["result"]["width"] >= 128


async def test_result_re_encoded_to_a_smaller_budget_on_request(start_engine, samples):
    engine = await start_engine(max_size=512)
    noise = Image.fromarray(np.random.default_rng(2).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    body = await engine.submit_ok(samples.encode(noise, "PNG"), [samples.png()], size=256)
    final = await engine.wait(body["job_id"])
    url = final["result"]["url"]
    assert final["result"]["format"] == "png" and final["result"]["bytes"] > 100_000
    async with engine.client.get(url, params={"max_bytes": "100000"}, headers=engine.auth) as resp:
        smaller = await resp.read()
        assert resp.status == 200 and resp.content_type == "image/jpeg"
        assert len(smaller) <= 100_000 and int(resp.headers["X-Image-Width"]) >= 128
    async with engine.client.get(url, params={"max_bytes": str(10**9)}, headers=engine.auth) as resp:
        assert resp.content_type == "image/png" and len(await resp.read()) == final["result"]["bytes"]
    for bad in ("10", "lots"):
        async with engine.client.get(url, params={"max_bytes": bad}, headers=engine.auth) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_parameter"


async def test_previews_on_request(start_engine, samples):
    engine = await start_engine()
    engine.fake.hold = True
    body = await engine.submit_ok(samples.jpeg(48, 32), [samples.png()], steps=3)
    events = await engine.watched(body["job_id"], preview=64)
    previews = [e for e in events if e["type"] == "preview"]
    assert previews, [e["type"] for e in events]
    im = Image.open(io.BytesIO(base64.b64decode(previews[0]["data"])))
    assert im.format == "JPEG" and max(im.size) <= 64
    async with engine.client.get(f"/v1/jobs/{body['job_id']}/preview", headers=engine.auth) as resp:
        assert resp.status == 200 and resp.content_type == "image/jpeg"
    # Without ?preview there are none.
    engine.fake.release.clear()
    body = await engine.submit_ok(samples.jpeg(48, 32), [samples.png()], steps=3)
    events = await engine.watched(body["job_id"])
    assert not [e for e in events if e["type"] == "preview"]


async def test_bad_preview_parameter(start_engine, samples):
    engine = await start_engine()
    body = await engine.submit_ok(samples.png(), [samples.png()])
    async with engine.client.get(f"/v1/jobs/{body['job_id']}/events?preview=9999", headers=engine.auth) as resp:
        assert resp.status == 400
        assert (await _error(resp))["code"] == "invalid_parameter"


# --- auth ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [
    None, "Bearer wrong-token-0123456789", "Basic {token}", "Bearer {token}x", "Bearer", "Bearer tökén",
])
async def test_wrong_or_missing_token_is_refused(start_engine, samples, header):
    engine = await start_engine()
    headers = {} if header is None else {"Authorization": header.format(token=engine.token)}
    for method, path in [("GET", "/v1/presets"), ("GET", "/v1/queue"), ("GET", "/metrics"),
                         ("GET", "/v1/jobs/abc"), ("DELETE", "/v1/presets/x"), ("POST", "/v1/jobs")]:
        async with engine.client.request(method, path, headers=headers) as resp:
            assert resp.status == 401, (method, path)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await _error(resp))["code"] == "unauthorized"
    async with await engine.submit(samples.png(), [samples.png()], headers=headers) as resp:
        assert resp.status == 401


async def test_health_checks_need_no_token(start_engine):
    engine = await start_engine()
    assert await engine.get_json("/healthz", headers={}) == {"status": "ok"}
    await engine.wait_for(lambda: all(w.ready for w in engine.app[WORKERS_KEY]))
    ready = await engine.get_json("/readyz", headers={})
    assert ready["status"] == "ready" and ready["workers"][0]["device"] == "cpu"


async def test_no_token_on_loopback(start_engine, samples):
    engine = await start_engine(token=None)
    body = await engine.submit_ok(samples.png(), [samples.png()])
    assert (await engine.wait(body["job_id"]))["type"] == "done"
    async with engine.client.get("/v1/presets") as resp:
        assert resp.status == 200


# --- bad input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,status,code", [
    ("truncated_jpeg", 422, "corrupt_image"),
    ("huge_png", 413, "too_many_pixels"),
    ("text_as_png", 415, "not_an_image"),
    ("svg", 415, "unsupported_format"),
    ("pdf", 415, "unsupported_format"),
    ("corrupt_png", 422, "corrupt_image"),
])
async def test_bad_content_files(start_engine, samples, kind, status, code):
    engine = await start_engine()
    async with await engine.submit(getattr(samples, kind)(), [samples.png()], content_name="photo.png") as resp:
        assert resp.status == status
        error = await _error(resp)
        assert error["code"] == code
        assert "content image" in error["message"]
    # ... and the same file as a style.
    async with await engine.submit(samples.png(), [getattr(samples, kind)()]) as resp:
        assert resp.status == status
        assert "style image" in (await _error(resp))["message"]
    # The engine is fine afterwards.
    body = await engine.submit_ok(samples.png(), [samples.png()])
    assert (await engine.wait(body["job_id"]))["type"] == "done"
    assert (await engine.get_json("/healthz"))["status"] == "ok"


async def test_empty_file(start_engine, samples):
    engine = await start_engine()
    async with await engine.submit(b"", [samples.png()]) as resp:
        assert resp.status == 400
        assert (await _error(resp))["code"] == "empty_file"


@pytest.mark.parametrize("kind", ["gif_3_frames", "cmyk_jpeg", "png16", "rgba_png", "palette_transparent_png",
                                  "exif_rotated_jpeg", "greyscale_png", "la_png", "webp", "bmp", "tiff",
                                  "icc_tagged_png", "lab_profile_jpeg"])
async def test_awkward_but_valid_files_are_stylized(start_engine, samples, kind):
    engine = await start_engine()
    data = getattr(samples, kind)()
    body = await engine.submit_ok(data, [data], size=32)
    final = await engine.wait(body["job_id"])
    assert final["type"] == "done", final
    assert engine.fake.calls[-1]["content_size"] == tuple(final["content_size"])


async def test_exif_rotation_reaches_the_optimiser(start_engine, samples):
    engine = await start_engine()
    body = await engine.submit_ok(samples.exif_rotated_jpeg(48, 32, 6), [samples.png()], size=32)
    assert body["content_size"] == [32, 48]
    final = await engine.wait(body["job_id"])
    assert (final["result"]["width"], final["result"]["height"]) == (21, 32)


async def test_upload_byte_limit(start_engine, samples):
    engine = await start_engine(max_upload_bytes=2000)
    big = samples.bmp(64, 64)
    assert len(big) > 2000
    async with await engine.submit(big, [samples.png(8, 8)]) as resp:
        assert resp.status == 413
        error = await _error(resp)
        assert error["code"] == "file_too_large" and "content image" in error["message"]
    async with engine.client.get("/healthz") as resp:
        assert resp.status == 200


async def test_request_too_large_by_content_length(start_engine, samples):
    engine = await start_engine(max_upload_bytes=1000, max_styles=1)
    payload = io.BytesIO(b"x" * (3 * 1024 * 1024))
    headers = {**engine.auth, "Content-Type": "multipart/form-data; boundary=zzz"}
    async with engine.client.post("/v1/jobs", data=payload, headers=headers) as resp:
        assert resp.status == 413
        assert (await _error(resp))["code"] == "request_too_large"


@pytest.mark.parametrize("fields,code", [
    ({"size": "abc"}, "invalid_parameter"),
    ({"size": "8"}, "invalid_parameter"),
    ({"strength": "11"}, "invalid_parameter"),
    ({"strength": "nan"}, "invalid_parameter"),
    ({"steps": "0"}, "invalid_parameter"),
    ({"style_scale": "100"}, "invalid_parameter"),
    ({"color_method": "purple"}, "invalid_parameter"),
    ({"preserve_colors": "maybe"}, "invalid_parameter"),
    ({"seed": "1.5"}, "invalid_parameter"),
    ({"style_blend": "1,2"}, "invalid_parameter"),
    ({"format": "bmp"}, "unsupported_output_format"),
    ({"byte_budget": "10"}, "invalid_parameter"),
    ({"colour": "red"}, "unknown_field"),
])
async def test_invalid_parameters(start_engine, samples, fields, code):
    engine = await start_engine()
    async with await engine.submit(samples.png(), [samples.png()], **fields) as resp:
        assert resp.status == 400
        assert (await _error(resp))["code"] == code


async def test_parameters_reach_the_optimiser_and_are_capped(start_engine, samples):
    engine = await start_engine(max_size=48, max_steps=4)
    body = await engine.submit_ok(samples.png(), [samples.png(), samples.jpeg()], size=4000, steps=99,
                                  strength=7.5, preserve_colors="yes", color_method="match", seed=3,
                                  style_scale=0.5, style_blend="1,3")
    p = body["params"]
    assert (p["size"], p["steps"], p["strength"], p["preserve_colors"]) == (48, 4, 7.5, True)
    assert p["color_method"] == "match" and p["seed"] == 3 and p["style_blend"] == [1.0, 3.0]
    assert {n["code"] for n in body["notes"]} == {"size_capped", "steps_capped"}
    await engine.wait(body["job_id"])
    call = engine.fake.calls[-1]
    assert (call["size"], call["steps"], call["n_styles"]) == (48, 4, 2)


@pytest.mark.parametrize("build,status,code", [
    (lambda s: {"styles": [s.png()]}, 400, "missing_content"),
    (lambda s: {"content": s.png()}, 400, "missing_style"),
    (lambda s: {"content": s.png(), "styles": [s.png()] * 5}, 400, "too_many_styles"),
])
async def test_missing_or_extra_parts(start_engine, samples, build, status, code):
    engine = await start_engine()
    async with await engine.submit(**build(samples)) as resp:
        assert resp.status == status
        assert (await _error(resp))["code"] == code


async def test_not_multipart(start_engine):
    engine = await start_engine()
    async with engine.client.post("/v1/jobs", json={"content": "x"}, headers=engine.auth) as resp:
        assert resp.status == 415
        assert (await _error(resp))["code"] == "expected_multipart"
    headers = {**engine.auth, "Content-Type": "multipart/form-data; boundary=abc"}
    async with engine.client.post("/v1/jobs", data=b"--abc\r\nnot a part", headers=headers) as resp:
        assert resp.status == 400
        assert (await _error(resp))["code"] in ("bad_multipart", "missing_content")


async def test_unknown_routes_and_methods_are_json(start_engine):
    engine = await start_engine()
    async with engine.client.get("/v1/nothing", headers=engine.auth) as resp:
        assert resp.status == 404
        assert (await _error(resp))["code"] == "not_found"
    async with engine.client.put("/v1/jobs", headers=engine.auth) as resp:
        assert resp.status == 405
        assert (await _error(resp))["code"] == "method_not_allowed"


# --- job endpoints -------------------------------------------------------------------------------------------


async def test_unknown_job(start_engine):
    engine = await start_engine()
    for method, path in [("GET", "/v1/jobs/nope"), ("GET", "/v1/jobs/nope/events"), ("GET", "/v1/jobs/nope/result"),
                         ("DELETE", "/v1/jobs/nope"), ("POST", "/v1/jobs/nope/cancel")]:
        async with engine.client.request(method, path, headers=engine.auth) as resp:
            assert resp.status == 404
            assert (await _error(resp))["code"] == "job_not_found"


async def test_result_before_done_and_after_failure(start_engine, samples):
    engine = await start_engine()
    engine.fake.hold = True
    body = await engine.submit_ok(samples.png(), [samples.png()])
    async with engine.client.get(f"/v1/jobs/{body['job_id']}/result", headers=engine.auth) as resp:
        assert resp.status == 409
        assert (await _error(resp))["code"] == "not_finished"
    engine.fake.release.set()
    await engine.wait(body["job_id"])
    engine.fake.fail_with = RuntimeError("boom")
    body = await engine.submit_ok(samples.png(), [samples.png()])
    final = await engine.wait(body["job_id"])
    assert final["type"] == "failed" and final["error"]["code"] == "internal_error"
    async with engine.client.get(f"/v1/jobs/{body['job_id']}/result", headers=engine.auth) as resp:
        assert resp.status == 409
        assert (await _error(resp))["code"] == "no_result"


async def test_results_expire(start_engine, samples):
    engine = await start_engine(result_ttl=0.2)
    body = await engine.submit_ok(samples.png(), [samples.png()])
    job_id = body["job_id"]
    assert (await engine.wait(job_id))["type"] == "done"
    await engine.wait_for(lambda: engine.job(job_id).state == "expired", timeout=5)
    async with engine.client.get(f"/v1/jobs/{job_id}/result", headers=engine.auth) as resp:
        assert resp.status == 410
        assert (await _error(resp))["code"] == "result_expired"
    assert (await engine.get_json(f"/v1/jobs/{job_id}"))["state"] == "expired"
    # One TTL later the record itself is gone.
    await engine.wait_for(lambda: job_id not in {j.id for j in engine.app[JOBS_KEY]}, timeout=5)
    async with engine.client.get(f"/v1/jobs/{job_id}", headers=engine.auth) as resp:
        assert resp.status == 404


async def test_queue_endpoint(start_engine, samples):
    engine = await start_engine()
    engine.fake.hold = True
    a = await engine.submit_ok(samples.png(), [samples.png()], requester="a")
    await engine.wait_for(lambda: engine.job(a["job_id"]).state == "running")
    b = await engine.submit_ok(samples.png(), [samples.png()], requester="b")
    q = await engine.get_json("/v1/queue")
    assert q["accepting"] and q["queued"] == 1 and q["order"] == [{"job_id": b["job_id"], "requester": "b"}]
    assert q["running"][0]["job_id"] == a["job_id"] and q["workers"][0]["job_id"] == a["job_id"]
    engine.fake.release.set()
    await engine.wait(b["job_id"])


# --- presets ------------------------------------------------------------------------------------------------


async def _add_preset(engine, name: str, data: bytes, **fields):
    form = aiohttp.FormData()
    form.add_field("name", name)
    form.add_field("image", data, filename="p.png", content_type="image/png")
    for k, v in fields.items():
        form.add_field(k, v)
    return await engine.client.post("/v1/presets", data=form, headers=engine.auth)


async def test_presets_list_add_use_remove(start_engine, samples, procedural):
    engine = await start_engine()
    listed = await engine.get_json("/v1/presets")
    assert {p["name"] for p in listed["presets"]} == set(procedural.NAMES)
    async with await _add_preset(engine, "Monet", samples.jpeg()) as resp:
        assert resp.status == 201
        assert (await resp.json())["name"] == "monet"
    async with await _add_preset(engine, "monet", samples.jpeg()) as resp:
        assert resp.status == 409
        assert (await _error(resp))["code"] == "preset_exists"
    async with await _add_preset(engine, "monet", samples.png(), replace="true") as resp:
        assert resp.status == 201
    listed = await engine.get_json("/v1/presets")
    assert "monet" in {p["name"] for p in listed["presets"]}
    body = await engine.submit_ok(samples.png(), presets=["monet", procedural.NAMES[0]])
    assert body["styles"] == ["preset:monet", f"preset:{procedural.NAMES[0]}"]
    assert (await engine.wait(body["job_id"]))["type"] == "done"
    keys = engine.fake.calls[-1]["style_keys"]
    assert keys[0].startswith("preset:monet:") and keys[1].startswith(f"preset:{procedural.NAMES[0]}:")
    async with engine.client.delete("/v1/presets/monet", headers=engine.auth) as resp:
        assert resp.status == 200
    async with engine.client.delete("/v1/presets/monet", headers=engine.auth) as resp:
        assert resp.status == 404
        assert (await _error(resp))["code"] == "unknown_preset"
    async with engine.client.delete(f"/v1/presets/{procedural.NAMES[0]}", headers=engine.auth) as resp:
        assert resp.status == 409
        assert (await _error(resp))["code"] == "preset_is_builtin"


async def test_a_too_thin_photo_is_refused_at_submit(start_engine, samples):
    engine = await start_engine()
    thin = samples.encode(samples.rgb(400, 4), "PNG")
    async with await engine.submit(thin, presets=["mosaic"], size="64") as resp:
        assert resp.status == 400
        error = await _error(resp)
        assert error["code"] == "invalid_parameter" and "too thin" in error["message"]


async def test_preset_thumbnail(start_engine, procedural):
    engine = await start_engine()
    name = procedural.NAMES[0]
    async with engine.client.get(f"/v1/presets/{name}/image", params={"size": "64"}, headers=engine.auth) as resp:
        assert resp.status == 200 and resp.content_type == "image/png"
        with Image.open(io.BytesIO(await resp.read())) as im:
            assert max(im.size) == 64
    async with engine.client.get(f"/v1/presets/{name}/image") as resp:
        assert resp.status == 401
    async with engine.client.get("/v1/presets/nope/image", headers=engine.auth) as resp:
        assert resp.status == 404 and (await _error(resp))["code"] == "unknown_preset"
    async with engine.client.get(f"/v1/presets/{name}/image", params={"size": "9999"}, headers=engine.auth) as resp:
        assert resp.status == 400 and (await _error(resp))["code"] == "invalid_parameter"


async def test_preset_errors(start_engine, samples, procedural):
    engine = await start_engine()
    async with await _add_preset(engine, "bad name!", samples.png()) as resp:
        assert resp.status == 400
        assert (await _error(resp))["code"] == "invalid_preset_name"
    async with await _add_preset(engine, "fake", samples.text_as_png()) as resp:
        assert resp.status == 415
        assert (await _error(resp))["code"] == "not_an_image"
    async with await _add_preset(engine, "bomb", samples.huge_png()) as resp:
        assert resp.status == 413
    misspelt = procedural.NAMES[0][:-1] + "x"
    async with await engine.submit(samples.png(), presets=[misspelt]) as resp:
        assert resp.status == 400
        error = await _error(resp)
        assert error["code"] == "unknown_preset"
        assert procedural.NAMES[0] in error["suggestions"]


# --- metrics ------------------------------------------------------------------------------------------------


async def test_metrics(start_engine, samples):
    engine = await start_engine()
    body = await engine.submit_ok(samples.png(), [samples.png()])
    await engine.wait(body["job_id"])
    async with await engine.submit(samples.text_as_png(), [samples.png()]) as resp:
        assert resp.status == 415
    async with engine.client.get("/metrics", headers=engine.auth) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    for needle in [
        'nst_jobs_total{outcome="done"} 1.0',
        'nst_rejected_requests_total{code="not_an_image"} 1.0',
        "nst_queue_depth 0.0",
        "nst_job_seconds_bucket",
        "nst_queue_wait_seconds_count 1.0",
        'nst_iterations_total{device="cpu"} 3.0',
        'nst_iterations_per_second{device="cpu"}',
        'nst_device_memory_bytes{device="cpu",kind="resident"}',
        "nst_ready 1.0",
    ]:
        assert needle in text, needle


async def test_big_uploads_are_shrunk_before_queueing(start_engine, samples):
    engine = await start_engine()
    body = await engine.submit_ok(samples.jpeg(400, 200), [samples.jpeg(1000, 800)], size=32)
    assert body["content_size"] == [400, 200]
    await engine.wait(body["job_id"])
    assert max(engine.fake.calls[-1]["content_size"]) == 64  # 2 x the output size is all the job needs
