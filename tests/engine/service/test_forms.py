"""service/forms.py on its own: multipart caps and the typed JobRequest (no queue, no model)."""
import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from nst_engine.service.forms import MAX_FIELD_BYTES, Form, Upload, job_request, read_form
from nst_engine.service.middlewares import ApiError
from nst_engine.service.settings import EngineSettings

SETTINGS = EngineSettings(max_size=512, default_size=256, max_steps=100, default_steps=50, max_styles=2)


def form(files: dict[str, int] | None = None, **fields: str) -> Form:
    uploads = {name: [Upload(f"{name}{i}.png", b"x") for i in range(n)] for name, n in (files or {}).items()}
    return Form(files=uploads, fields={k: [v] for k, v in fields.items()})


def test_defaults_and_one_content_and_one_preset():
    req = job_request(form({"content": 1}, preset="starry", requester="u1"), SETTINGS)
    assert (req.params.size, req.params.steps) == (256, 50)
    assert req.presets == ["starry"] and req.style_uploads == [] and req.n_styles == 1
    assert (req.output_format, req.requester, req.notes) == ("png", "u1", [])
    assert req.content.filename == "content0.png"


def test_values_above_the_engines_limits_are_capped_with_a_note():
    req = job_request(form({"content": 1, "style": 1}, size="2048", steps="900"), SETTINGS)
    assert (req.params.size, req.params.steps) == (512, 100)
    assert [code for code, _ in req.notes] == ["size_capped", "steps_capped"]
    assert "2048 to 512" in req.notes[0][1]


@pytest.mark.parametrize(("files", "fields", "code"), [
    ({}, {"preset": "a"}, "missing_content"),
    ({"content": 2}, {"preset": "a"}, "too_many_content_images"),
    ({"content": 1}, {}, "missing_style"),
    ({"content": 1, "style": 2}, {"preset": "a"}, "too_many_styles"),
    ({"content": 1, "style": 1}, {"size": "big"}, "invalid_parameter"),
    ({"content": 1, "style": 1}, {"strength": "nan"}, "invalid_parameter"),
    ({"content": 1, "style": 2}, {"style_blend": "1,2,3"}, "invalid_parameter"),
    ({"content": 1, "style": 1}, {"byte_budget": "10"}, "invalid_parameter"),
])
def test_bad_requests_get_specific_codes(files, fields, code):
    with pytest.raises(ApiError) as err:
        job_request(form(files, **fields), SETTINGS)
    assert (err.value.status, err.value.code) == (400, code)


def test_blend_weights_and_a_long_requester():
    req = job_request(form({"content": 1, "style": 2}, style_blend="1; 3", requester="r" * 500), SETTINGS)
    assert req.params.style_blend == (1.0, 3.0)
    assert len(req.requester) == 128


async def _post(data: aiohttp.FormData | bytes, *, max_file: int = 100, headers: dict | None = None):
    seen: dict = {}

    async def handler(request: web.Request) -> web.Response:
        try:
            parsed = await read_form(request, file_fields={"content"}, known=frozenset({"content", "size"}),
                                     max_file=max_file, max_total=10_000)
        except ApiError as exc:
            return web.json_response({"code": exc.code}, status=exc.status)
        seen["form"] = parsed
        return web.json_response({"code": "ok"})

    app = web.Application()
    app.router.add_post("/", handler)
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/", data=data, headers=headers)
        return resp.status, (await resp.json())["code"], seen.get("form")


def _multipart(**parts: bytes | str) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for name, value in parts.items():
        if isinstance(value, bytes):
            data.add_field(name, value, filename=f"{name}.png", content_type="application/octet-stream")
        else:
            data.add_field(name, value)
    return data


@pytest.mark.asyncio
async def test_read_form_keeps_files_and_stripped_text():
    status, code, parsed = await _post(_multipart(content=b"12345", size=" 64 "))
    assert (status, code) == (200, "ok")
    assert parsed.files["content"][0].data == b"12345" and parsed.text("size") == "64"


@pytest.mark.asyncio
@pytest.mark.parametrize(("parts", "expected"), [
    ({"content": b"x" * 101}, (413, "file_too_large")),
    ({"content": b"x", "colour": "red"}, (400, "unknown_field")),
    ({"content": b"x", "size": "9" * (MAX_FIELD_BYTES + 1)}, (413, "file_too_large")),
])
async def test_read_form_caps_and_unknown_fields(parts, expected):
    status, code, _ = await _post(_multipart(**parts))
    assert (status, code) == expected


@pytest.mark.asyncio
async def test_read_form_wants_multipart_and_utf8():
    assert (await _post(b'{"content": 1}', headers={"Content-Type": "application/json"}))[:2] == (
        415, "expected_multipart")
    data = aiohttp.FormData()
    data.add_field("content", b"x", filename="c.png", content_type="application/octet-stream")
    data.add_field("size", b"\xff\xfe", filename="size.txt")  # a text field by name, whatever its framing
    assert (await _post(data))[:2] == (400, "invalid_parameter")
