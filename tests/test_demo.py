"""The demo command: the double, the embedded engine and the bot, end to end in one process."""
import io

from PIL import Image

from devtools import demo


def test_demo_posts_stylize_and_saves_the_bots_reply(tmp_path, content_image, style_image, capsys):
    content, style = tmp_path / "photo.png", tmp_path / "painting.jpg"
    content_image.save(content)
    style_image.save(style)
    out = tmp_path / "reply.png"
    code = demo.main(["--content", str(content), "--style", str(style), "-o", str(out), "--size", "32",
                      "--steps", "3", "--timeout", "240"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    with Image.open(io.BytesIO(out.read_bytes())) as reply:
        assert reply.size == (32, 20)
    assert "posts: !stylize" in printed and "is done" in printed
    assert f"saved the bot's reply image to {out.resolve()}" in printed


def test_demo_missing_file_is_one_line(tmp_path, capsys):
    code = demo.main(["--content", str(tmp_path / "nope.png"), "--style", str(tmp_path / "nope.png")])
    assert code == 1
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope.png'}: no such file"
