"""The stylize CLI: flags, formats, progress, and one clear line for bad input."""
import contextlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from nst_engine.__main__ import main
from nst_engine.cli import build_parser, params_from_args
from nst_engine.images import procedural

TINY = ["--size", "32", "--steps", "2", "--seed", "0"]


@pytest.fixture
def files(tmp_path, content_image, style_image):
    content, style = tmp_path / "content.jpg", tmp_path / "style.png"
    content_image.save(content)
    style_image.save(style)
    return tmp_path, str(content), str(style)


@pytest.mark.parametrize("name, fmt", [("out.png", "PNG"), ("out.jpg", "JPEG"), ("out.webp", "WEBP")])
def test_writes_the_format_named_by_the_extension(files, capsys, name, fmt):
    folder, content, style = files
    assert main(["stylize", content, style, "-o", str(folder / name), *TINY]) == 0
    with Image.open(folder / name) as im:
        assert im.format == fmt and im.size == (32, 20)
    captured = capsys.readouterr()
    assert "wrote" in captured.out
    assert "it/s" in captured.err or "it]" in captured.err  # the tqdm progress bar


def test_builtin_generated_style_and_alpha_kept(tmp_path, content_image):
    rgba = content_image.convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 128))
    rgba.save(tmp_path / "c.png")
    out = tmp_path / "o.png"
    assert main(["stylize", str(tmp_path / "c.png"), "mosaic", "-o", str(out), *TINY, "-q"]) == 0
    with Image.open(out) as im:
        assert im.mode == "RGBA"
        assert abs(np.asarray(im)[..., 3].astype(int) - 128).max() <= 2


@pytest.mark.parametrize("make, message", [
    (lambda d: str(d / "missing.png"), "no such file"),
    (lambda d: (d / "text.png").write_text("not an image") and str(d / "text.png"), "not an image"),
    (lambda d: (d / "cut.jpg").write_bytes(Image.new("RGB", (64, 64), "red").tobytes()[:10]) and str(d / "cut.jpg"),
     "not an image"),
])
def test_bad_content_file_is_one_line_and_non_zero(files, capsys, make, message):
    folder, _, style = files
    code = main(["stylize", make(folder), style, "-o", str(folder / "o.png"), *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("error: content image:") and message in err.lower()
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_truncated_jpeg_is_rejected(files, capsys, content_image):
    folder, _, style = files
    import io

    buf = io.BytesIO()
    content_image.resize((200, 200)).save(buf, "JPEG")
    (folder / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert main(["stylize", str(folder / "trunc.jpg"), style, "-o", str(folder / "o.png"), *TINY]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: content image:") and "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (["--strength", "12"], "strength"),
    (["--size", "abc"], "invalid int value"),
    (["--pooling", "median"], "invalid choice"),
    (["--device", "cuda:7"], "not available"),
    (["-o", "out.gif"], ".png"),
])
def test_bad_flag_values_are_one_line_and_non_zero(files, capsys, args, message):
    folder, content, style = files
    argv = ["stylize", content, style, "-o", str(folder / "o.png"), *args]
    with pytest.raises(SystemExit) if "invalid" in message else contextlib.nullcontext():
        code = main(argv)
        assert code == 1
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_every_switch_is_documented_in_help():
    text = build_parser().format_help()
    for flag in ["--size", "--steps", "--seed", "--device", "--strength", "--preserve-colors", "--color-method",
                 "--style-blend", "--style-scale", "--tv-weight", "--pooling", "--content-layer", "--style-layers",
                 "--style-layer-weights", "--content-weight", "--style-weight", "--optimizer", "--init",
                 "--init-image", "--scales", "--early-stop", "--backbone", "--no-channels-last", "--no-tf32",
                 "--bf16", "--compile"]:
        assert flag in text, flag


def test_flags_map_onto_style_params():
    args = build_parser().parse_args([
        "c.png", "a.png", "b.png", "-o", "o.png", "--size", "300", "--strength", "7", "--preserve-colors",
        "--color-method", "match", "--style-blend", "2", "1", "--style-scale", "0.5", "--tv-weight", "3",
        "--pooling", "avg", "--style-layers", "relu1_1", "relu2_1", "--style-layer-weights", "1", "2",
        "--optimizer", "adam", "--init", "noise", "--scales", "2", "--early-stop", "0", "--seed", "9",
    ])
    p = params_from_args(args)
    assert (p.size, p.strength, p.preserve_colors, p.color_method) == (300, 7.0, True, "match")
    assert p.style_blend == (2.0, 1.0) and p.style_scale == 0.5 and p.tv_weight == 3.0
    assert p.pooling == "avg" and p.style_layers == ("relu1_1", "relu2_1") and p.style_layer_weights == (1.0, 2.0)
    assert (p.optimizer, p.init, p.scales, p.early_stop, p.seed) == ("adam", "noise", 2, 0.0, 9)
    assert args.channels_last and args.tf32 and not args.bf16 and not args.compile


def test_module_entry_point_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nst_engine", "stylize", str(tmp_path / "none.png"), "mosaic",
                           "-o", str(tmp_path / "o.png")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: content image: none.png: no such file."
    unknown = subprocess.run([sys.executable, "-m", "nst_engine", "paint"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown command" in unknown.stderr


def test_procedural_styles_are_deterministic_and_distinct():
    a = np.asarray(procedural.generate("mosaic", 64, seed=1))
    assert np.array_equal(a, np.asarray(procedural.generate("mosaic", 64, seed=1)))
    assert not np.array_equal(a, np.asarray(procedural.generate("mosaic", 64, seed=2)))
    for name in procedural.NAMES:
        image = procedural.generate(name, 48)
        assert image.size == (48, 48) and image.mode == "RGB"
        assert np.asarray(image).std() > 20  # a real pattern, not a flat colour
    with pytest.raises(KeyError):
        procedural.generate("cubism")


# --- texture and explain ------------------------------------------------------------------------------

@pytest.mark.parametrize("extra, size", [([], (40, 40)), (["--tileable"], (32, 32))])
def test_texture_writes_a_square_of_the_style_alone(files, capsys, extra, size):
    folder, _, style = files
    out = folder / "texture.png"
    assert main(["texture", style, "-o", str(out), "--size", "40", "--steps", "2", *extra]) == 0
    with Image.open(out) as im:
        assert im.size == size and im.mode == "RGB"  # a tile's side is rounded so every scale wraps
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "scale 1/1" in captured.err


def test_explain_writes_one_sheet(tmp_path, capsys):
    out = tmp_path / "sheet.webp"
    assert main(["explain", "mosaic", "-o", str(out), "--size", "32", "--steps", "1"]) == 0
    with Image.open(out) as im:
        assert im.format == "WEBP" and im.width > 800 and im.width / im.height > 1.3
    assert "layer 5/5" in capsys.readouterr().err  # the bar counts the five reconstructions


@pytest.mark.parametrize("command", ["texture", "explain"])
@pytest.mark.parametrize("make, message", [
    (lambda d, s: (d / "text.png").write_text("not an image") and d / "text.png", "not an image"),
    (lambda d, s: (d / "cut.jpg").write_bytes(s.truncated_jpeg()) and d / "cut.jpg", "cut.jpg"),
    (lambda d, s: (d / "bomb.png").write_bytes(s.huge_png()) and d / "bomb.png", "pixels"),
    (lambda d, s: (d / "tiny.png").write_bytes(s.png(20, 20)) and d / "tiny.png", "too small (20x20)"),
])
def test_bad_paintings_get_one_line(tmp_path, capsys, samples, command, make, message):
    path = make(tmp_path, samples)
    assert main([command, str(path), "-o", str(tmp_path / "o.png"), "--size", "32", "--steps", "1", "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


def test_texture_and_explain_help_name_their_switches():
    from nst_engine.cli import build_explain_parser, build_texture_parser

    texture = build_texture_parser().format_help()
    for flag in ["--size", "--steps", "--seed", "--tileable", "--device", "--quiet"]:
        assert flag in texture, flag
    explain = build_explain_parser().format_help()
    for flag in ["--size", "--steps", "--seed", "--name", "--device"]:
        assert flag in explain, flag
    assert "texture" in subprocess.run([sys.executable, "-m", "nst_engine", "--help"], capture_output=True,
                                       text=True).stdout
