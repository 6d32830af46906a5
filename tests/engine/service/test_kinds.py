"""Job kinds in the API: texture and explain take one painting, no photo, and share stylize's checks."""
from __future__ import annotations

import io

import aiohttp
import pytest
from PIL import Image

from nst_engine.service.keys import WORKERS_KEY

pytestmark = pytest.mark.asyncio


async def _submit(engine, *, content: bytes | None = None, styles=(), presets=(), **fields) -> tuple[int, dict]:
    """POST a job that may have no file at all (a preset painting): still multipart, as the API wants."""
    form = aiohttp.FormData(default_to_multipart=True)
    if content is not None:
        form.add_field("content", content, filename="content.png", content_type="application/octet-stream")
    for style in styles:
        form.add_field("style", style, filename="painting.png", content_type="application/octet-stream")
    for name in presets:
        form.add_field("preset", name)
    for key, value in fields.items():
        form.add_field(key, str(value))
    async with engine.client.post("/v1/jobs", data=form, headers=engine.auth) as resp:
        return resp.status, await resp.json()


async def _result(engine, final: dict) -> Image.Image:
    async with engine.client.get(final["result"]["url"], headers=engine.auth) as resp:
        assert resp.status == 200
        image = Image.open(io.BytesIO(await resp.read()))
        image.load()
        return image


async def test_texture_job_runs_the_style_alone_through_the_same_queue(start_engine, procedural):
    engine = await start_engine()
    status, body = await _submit(engine, presets=[procedural.NAMES[0]], kind="texture", size=40, tileable="true",
                                 requester="u1")
    assert status == 202, body
    assert body["kind"] == "texture" and body["params"]["tileable"] is True
    final = await engine.wait(body["job_id"])
    assert final["type"] == "done", final
    # The optimiser got a square grey canvas whose side wraps exactly (40 -> 32) and one painting.
    call = engine.fake.calls[-1]
    assert call["content_size"] == (32, 32) and call["n_styles"] == 1 and call["size"] == 32
    assert call["style_keys"][0].startswith(f"preset:{procedural.NAMES[0]}:")
    assert (await _result(engine, final)).size == (32, 32)


@pytest.mark.parametrize("fields, status, code", [
    ({"kind": "texture", "presets": ["mosaic"], "content": b"photo"}, 400, "unexpected_content"),
    ({"kind": "explain", "presets": ["mosaic", "swirls"]}, 400, "too_many_styles"),
    ({"kind": "texture"}, 400, "missing_style"),
    ({"kind": "paint", "presets": ["mosaic"]}, 400, "invalid_parameter"),
    ({"kind": "texture", "presets": ["mosaic"], "tileable": "maybe"}, 400, "invalid_parameter"),
    ({"kind": "texture", "presets": ["nosuch"]}, 400, "unknown_preset"),
])
async def test_painting_only_jobs_refuse_other_shapes(start_engine, fields, status, code):
    engine = await start_engine()
    got, body = await _submit(engine, **fields)
    assert got == status and body["error"]["code"] == code, body
    assert "Traceback" not in body["error"]["message"]


@pytest.mark.parametrize("make, status, code", [
    (lambda s: s.text_as_png(), 415, "not_an_image"),
    (lambda s: s.huge_png(), 413, "too_many_pixels"),
    (lambda s: s.truncated_jpeg(), 422, "corrupt_image"),
    (lambda s: s.png(20, 24), 400, "invalid_parameter"),
])
async def test_bad_paintings_get_the_stylize_answers(start_engine, samples, make, status, code):
    engine = await start_engine()
    got, body = await _submit(engine, styles=[make(samples)], kind="texture")
    assert got == status and body["error"]["code"] == code, body
    if code == "invalid_parameter":
        assert "too small (20x24)" in body["error"]["message"]
    assert not engine.fake.calls  # refused at the door, nothing queued


async def test_real_explain_job_returns_one_sheet_and_caches_it(start_engine, procedural):
    engine = await start_engine(fake=False, default_size=32, default_steps=2)
    await engine.wait_for(lambda: all(w.state != "starting" for w in engine.app[WORKERS_KEY]), timeout=120)
    finals = []
    for _ in range(2):
        status, body = await _submit(engine, presets=[procedural.NAMES[0]], kind="explain", size=32, steps=1)
        assert status == 202, body
        finals.append(await engine.wait(body["job_id"]))
    first, second = finals
    assert first["type"] == second["type"] == "done", finals
    sheet = await _result(engine, first)
    assert sheet.width > 800 and sheet.width / sheet.height > 1.3
    notes = [n["code"] for n in engine.job(body["job_id"]).notes]
    assert "cached" in notes  # the second explanation of the same preset comes from the worker's cache
