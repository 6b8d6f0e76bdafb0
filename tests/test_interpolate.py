"""{var} interpolation looks names up and never evaluates code."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sm_magic.errors import ConfigError
from sm_magic.interpolate import InterpolationError, field_names, interpolate


class Row:
    text = "row text"
    _hidden = "private"


def test_names_attributes_indexes_conversions_and_specs():
    ns = {"name": "Ada", "row": Row(), "docs": ["first", "second"], "d": {"k": "v"}, "n": 7}
    template = "{name} {row.text} {docs[1]} {d[k]} {name!r} {n:>3}"
    assert interpolate(template, ns) == "Ada row text second v 'Ada'   7"


def test_double_braces_escape():
    assert interpolate('{{"inputs": "{x}"}}', {"x": "hi"}) == '{"inputs": "hi"}'


def test_unknown_names_are_listed_together():
    with pytest.raises(InterpolationError) as info:
        interpolate("{a} {b} {a} {c}", {"b": 1})
    assert "{a}, {c}" in info.value.explain()
    assert "--no-interpolate" in info.value.explain()


@pytest.mark.parametrize("template", [
    "{__import__('os').system('touch /tmp/sm_magic_pwned')}",
    "{x.__class__}",
    "{x.__class__.__init__.__globals__}",
    "{x._hidden}",
    "{_secret}",
    "{0}",
    "{}",
    "{x:{__import__}}",
    "{x!x}",
])
def test_code_and_dunder_walks_are_refused(template, tmp_path):
    with pytest.raises(ConfigError):
        interpolate(template, {"x": Row(), "_secret": "s", "__import__": __import__})


def test_unbalanced_braces_explain_how_to_escape():
    with pytest.raises(InterpolationError, match="braces do not balance"):
        interpolate("a } b", {})


def test_json_in_a_prompt_is_reported_not_evaluated():
    with pytest.raises(InterpolationError) as info:
        interpolate('{"a": 1}', {})
    assert "{{" in info.value.explain()


def test_field_names_include_nested_specs():
    assert field_names("{a.b} {c[0]:{width}} {{literal}}") == ["a", "c", "width"]


@given(st.text(max_size=60))
def test_any_text_gives_a_string_or_our_error(text):
    with contextlib.suppress(ConfigError):
        assert isinstance(interpolate(text, {"x": 1, "y": "two"}), str)
