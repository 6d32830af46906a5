"""nst_engine.images.presets: a directory of style images plus generated builtins."""
from __future__ import annotations

import os
import time

import pytest
from PIL import Image

from nst_engine.images.codec import ImageError
from nst_engine.images.presets import (
    BuiltinPreset,
    InvalidPresetName,
    PresetExists,
    PresetLibrary,
    UnknownPreset,
    normalize_name,
)


@pytest.fixture
def library(tmp_path, procedural):
    return PresetLibrary(tmp_path / "presets")


def test_builtins_listed_without_a_directory(library, procedural):
    infos = library.list()
    assert [i.name for i in infos] == sorted(procedural.NAMES)
    assert all(i.source == "builtin" and i.path is None for i in infos)


def test_builtins_can_be_disabled(tmp_path):
    assert PresetLibrary(tmp_path, builtins=False).list() == []


def test_builtin_load_and_key(library, procedural):
    name = procedural.NAMES[0]
    image = library.load(name)
    assert image.mode == "RGB" and max(image.size) > 0
    assert library.load(name.upper()) is image  # cached, and names are case-folded
    assert library.key(name) == library.key(name.upper())
    assert library.key(name).startswith(f"preset:{name}:")


def test_add_load_list_remove(library, samples):
    info = library.add("Starry_Night-2", samples.jpeg(48, 32))
    assert info.name == "starry_night-2" and info.source == "directory"
    assert info.path == library.directory / "starry_night-2.png"
    assert not [p for p in library.directory.iterdir() if p.name.startswith(".")]  # no temp file left
    image = library.load("starry_night-2")
    assert image.mode == "RGB" and image.size == (48, 32)
    assert "starry_night-2" in [i.name for i in library.list()]
    library.remove("STARRY_NIGHT-2")
    assert "starry_night-2" not in library.names()
    with pytest.raises(UnknownPreset):
        library.load("starry_night-2")


def test_add_rgba_stores_rgb_png(library, samples):
    library.add("glass", samples.rgba_png())
    with Image.open(library.directory / "glass.png") as im:
        assert im.format == "PNG" and im.mode == "RGB"


def test_add_refuses_existing_unless_replace(library, samples):
    library.add("wave", samples.png())
    with pytest.raises(PresetExists) as err:
        library.add("wave", samples.jpeg())
    assert err.value.status == 409
    library.add("wave", samples.jpeg(20, 10), replace=True)
    assert library.load("wave").size == (20, 10)


def test_key_changes_when_file_changes(library, samples):
    library.add("wave", samples.png())
    key = library.key("wave")
    assert library.key("wave") == key
    time.sleep(0.01)
    library.add("wave", samples.jpeg(20, 10), replace=True)
    new_key = library.key("wave")
    assert new_key != key
    image, resolved_key = library.resolve("wave")
    assert resolved_key == new_key and image.size == (20, 10)


@pytest.mark.parametrize("bad", ["", " ", "-dash", "a" * 33, "spa ce", "dot.png", "../etc", "é"])
def test_invalid_names(library, samples, bad):
    with pytest.raises(InvalidPresetName) as err:
        library.add(bad, samples.png())
    assert err.value.code == "invalid_preset_name" and err.value.status == 400
    with pytest.raises(InvalidPresetName):
        library.load(bad)


def test_normalize_name():
    assert normalize_name("  Monet_1 ") == "monet_1"
    assert normalize_name("a" * 32) == "a" * 32


def test_add_rejects_bad_images(library, samples):
    for data, code in [(samples.text_as_png(), "not_an_image"), (samples.truncated_jpeg(), "corrupt_image"),
                       (b"", "empty_file"), (samples.huge_png(), "too_many_pixels")]:
        with pytest.raises(ImageError) as err:
            library.add("bad", data)
        assert err.value.code == code
    assert not library.directory.exists() or not any(library.directory.iterdir())


def test_unknown_preset_suggests(library, samples):
    library.add("starry", samples.png())
    with pytest.raises(UnknownPreset) as err:
        library.load("stary")
    assert isinstance(err.value, KeyError)
    assert err.value.suggestions == ["starry"]
    assert "Did you mean 'starry'?" in str(err.value)
    with pytest.raises(UnknownPreset) as err:
        library.key("zzzzzz")
    assert err.value.suggestions == []
    with pytest.raises(UnknownPreset):
        library.remove("nothing-here")


def test_directory_overrides_builtin(library, procedural, samples):
    name = procedural.NAMES[0]
    builtin_key = library.key(name)
    info = library.add(name, samples.png(20, 10))
    assert info.overrides_builtin
    assert library.load(name).size == (20, 10)
    assert library.key(name) != builtin_key
    assert [i.source for i in library.list() if i.name == name] == ["directory"]
    library.remove(name)  # back to the builtin
    assert library.key(name) == builtin_key
    with pytest.raises(BuiltinPreset) as err:
        library.remove(name)
    assert err.value.status == 409


def test_files_dropped_into_directory(library, samples):
    library.directory.mkdir(parents=True)
    (library.directory / "Monet.JPG").write_bytes(samples.jpeg())
    (library.directory / "notes.txt").write_text("not a preset")
    (library.directory / ".hidden.png").write_bytes(samples.png())
    (library.directory / "bad name.png").write_bytes(samples.png())
    names = [i.name for i in library.list() if i.source == "directory"]
    assert names == ["monet"]
    assert library.load("monet").size == (48, 32)
    library.remove("monet")
    assert not (library.directory / "Monet.JPG").exists()


def test_damaged_file_in_directory_raises_image_error(library, samples):
    library.directory.mkdir(parents=True)
    (library.directory / "broken.png").write_bytes(samples.truncated_jpeg())
    with pytest.raises(ImageError):
        library.load("broken")


def test_add_replaces_other_extensions(library, samples):
    library.directory.mkdir(parents=True)
    (library.directory / "wave.jpg").write_bytes(samples.jpeg())
    library.add("wave", samples.png(20, 10), replace=True)
    assert sorted(os.listdir(library.directory)) == ["wave.png"]
