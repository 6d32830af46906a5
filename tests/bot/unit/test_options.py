"""parse_options: the words after `!stylize` as people type them, and the messages for the words it refuses."""
from __future__ import annotations

import pytest

from bot.errors import UsageError
from bot.options import StyleOptions, normalize_preset_name, parse_options, usage

STRENGTH_LIST = "`subtle`, `light`, `balanced`, `strong`, `bold`, `intense`"
NAME_RULE = "1-32 characters: lowercase letters, digits, '-' and '_', starting with a letter or digit"


def refused(text: str, prefix: str = "!") -> str:
    with pytest.raises(UsageError) as err:
        parse_options(text, prefix)
    return err.value.message


@pytest.mark.parametrize("text", [None, "", "   ", ",,"])
def test_nothing_means_all_defaults(text):
    assert parse_options(text) == StyleOptions(None, None, None, None, None)


def test_everything_at_once():
    assert parse_options("starry strong size=768 keep-colours seed=7") == StyleOptions(
        preset="starry", strength="strong", size=768, keep_colours=True, seed=7)


def test_words_are_case_folded_and_commas_and_backticks_are_separators_of_no_meaning():
    assert parse_options("Starry, BOLD,SIZE=512 `Keep-Colours`") == StyleOptions(
        preset="starry", strength="bold", size=512, keep_colours=True)
    assert parse_options("Strength=INTENSE Preset=Mosaic") == StyleOptions(preset="mosaic", strength="intense")


def test_a_preset_name_in_backticks_is_read_like_every_other_word():
    # `!presets` lists names as `mosaic`; a user who types them that way means the preset.
    assert parse_options("`Mosaic` `strong`") == StyleOptions(preset="mosaic", strength="strong")


@pytest.mark.parametrize("word", ["subtle", "light", "balanced", "strong", "bold", "intense"])
def test_every_strength_word(word):
    assert parse_options(word).strength == word
    assert parse_options(f"strength={word}").strength == word
    assert parse_options(f"s:{word}").strength == word


def test_the_last_strength_wins():
    assert parse_options("strong subtle").strength == "subtle"


@pytest.mark.parametrize("text, size", [("768", 768), ("768px", 768), ("64PX", 64), ("1024", 1024),
                                        ("size=256", 256), ("size:2048px", 2048), ("SIZE=10", 10)])
def test_size_forms(text, size):
    assert parse_options(text).size == size


@pytest.mark.parametrize("value", ["5", "12345", "big", "", "-512", "512.5"])
def test_bad_sizes(value):
    assert refused(f"size={value}") == "Size must be a number of pixels, e.g. `size=768`."


@pytest.mark.parametrize("text", ["keep-colours", "keep-colors", "keep_colours", "keep_colors", "keepcolours",
                                  "keepcolors", "colours", "colors", "keep colours", "Keep Colors", "KEEP-COLOURS"])
def test_keep_colours_words(text):
    assert parse_options(text) == StyleOptions(keep_colours=True)


@pytest.mark.parametrize("value, kept", [("yes", True), ("true", True), ("1", True), ("on", True), ("y", True),
                                         ("no", False), ("false", False), ("0", False), ("off", False),
                                         ("N", False)])
def test_keep_colours_as_an_option(value, kept):
    assert parse_options(f"keep-colours={value}").keep_colours is kept
    assert parse_options(f"colors:{value}").keep_colours is kept
    assert parse_options(f"keep_colors={value}").keep_colours is kept


def test_bad_keep_colours_value():
    assert refused("keep-colours=maybe") == "keep-colours is `yes` or `no`."


@pytest.mark.parametrize("text, seed", [("seed=0", 0), ("seed=42", 42), ("SEED:9999999999", 9_999_999_999)])
def test_seeds(text, seed):
    assert parse_options(text).seed == seed


@pytest.mark.parametrize("value", ["-1", "abc", "4.2", "", "12345678901"])
def test_bad_seeds(value):
    assert refused(f"seed={value}") == "Seed must be a whole number, e.g. `seed=42`."


def test_bad_strength():
    assert refused("strength=extreme") == f"Strength must be one of {STRENGTH_LIST}."


def test_preset_by_option_and_by_style_alias():
    assert parse_options("preset=mosaic").preset == "mosaic"
    assert parse_options("style:wave_2").preset == "wave_2"


def test_a_bad_preset_name_says_the_rule():
    assert refused("preset=no!") == f"`no!` is not a valid preset name ({NAME_RULE})."
    assert refused("Über") == f"`Über` is not a valid preset name ({NAME_RULE})."
    assert refused("a" * 33) == f"`{'a' * 33}` is not a valid preset name ({NAME_RULE})."
    longer = "b" * 60  # the message quotes at most 40 characters of it
    assert refused(longer) == f"`{'b' * 40}` is not a valid preset name ({NAME_RULE})."


def test_a_second_bare_word_is_not_understood_and_the_usage_follows():
    message = refused("starry mosaic", prefix="?")
    assert message.startswith("I don't understand `mosaic`.\n**How to use `?stylize`**\n")
    assert "`?presets` lists them" in message and "{p}" not in message
    assert refused("preset=starry mosaic").startswith("I don't understand `mosaic`.\n")


def test_an_unknown_option_is_named_with_the_usage():
    message = refused("colour=red")
    assert message.startswith("I don't know the option `colour=red`.\n**How to use `!stylize`**")
    assert refused("Steps=300").startswith("I don't know the option `Steps=300`.")  # quoted as typed


def test_usage_fills_in_the_prefix():
    text = usage("$")
    assert text.startswith("**How to use `$stylize`**\n") and "`$stylize mosaic`" in text
    assert "{p}" not in text and "`!" not in text


@pytest.mark.parametrize("raw, name", [("Mosaic", "mosaic"), ("  wave-2 ", "wave-2"), ("0_a", "0_a"),
                                       ("x" * 32, "x" * 32)])
def test_normalize_preset_name(raw, name):
    assert normalize_preset_name(raw) == name


@pytest.mark.parametrize("raw", ["", "-lead", "_lead", "has space", "dot.png", "x" * 33])
def test_normalize_preset_name_refuses(raw):
    with pytest.raises(UsageError, match="is not a valid preset name"):
        normalize_preset_name(raw)


def test_merged_slash_options_win_over_words_but_none_means_not_given():
    words = StyleOptions(preset="starry", strength="strong", size=512, keep_colours=True, seed=None)
    merged = words.merged(strength="bold", size=None, keep_colours=False, seed=3)
    assert merged == StyleOptions(preset="starry", strength="bold", size=512, keep_colours=False, seed=3)
    assert words == StyleOptions(preset="starry", strength="strong", size=512, keep_colours=True)  # unchanged
    assert words.merged() == words
    with pytest.raises(TypeError):
        words.merged(colour="red")  # a typo in the cog fails loudly
