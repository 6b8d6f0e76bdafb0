"""{var} interpolation looks names up and never evaluates code."""

from __future__ import annotations

import contextlib
import re
from collections import ChainMap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sm_magic.batch import batch_prompts
from sm_magic.errors import ConfigError
from sm_magic.interpolate import InterpolationError, field_names, interpolate, plain_fields


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
    assert info.value.explain().startswith("The braces in the prompt hold '\"a\"', which is not a name")
    with pytest.raises(InterpolationError, match="braces in the prompt hold 'return x;', which is not a name"):
        interpolate("int f() {\n  return x;\n}", {})
    with pytest.raises(InterpolationError, match=r"refers to \{first nam\}, not defined"):  # a column, misspelt
        interpolate("{first nam}", {"first name": "Ada"})
    assert "{{" in info.value.explain()


@pytest.mark.parametrize("template", ["{}", "x {} y", "{0}", "{x:{}}"])
def test_a_positional_field_is_named_as_written(template):
    written = "{0}" if "0" in template else "{}"
    with pytest.raises(InterpolationError, match=f"^{re.escape(written)}: positional fields are not allowed"):
        interpolate(template, {"x": 1})


def test_field_names_include_nested_specs():
    assert field_names("{a.b} {c[0]:{width}} {{literal}}") == ["a", "c", "width"]


@given(st.text(max_size=60))
def test_any_text_gives_a_string_or_our_error(text):
    with contextlib.suppress(ConfigError):
        assert isinstance(interpolate(text, {"x": 1, "y": "two"}), str)


class Shown:
    def __format__(self, spec: str) -> str:
        return f"<shown{spec}>"


class Unshowable:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


ITEMS = ["plain", 7, 2.5, None, Shown(), ["a", "b"]]
RECORDS = [{"question": "why?", "text": "field text", 3: "int key"}, {"question": Shown(), "other": "German"}]


@given(st.lists(st.one_of(st.sampled_from(["{text}", "{item}", "{question}", "{lang}", "{{", "}}"]),
                          st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=8)), min_size=1,
                max_size=8))
def test_a_batch_fills_a_plain_template_as_interpolate_does(parts):
    template = "{text}" + "".join(parts)  # every batch template uses the item
    namespace = {"lang": "French", "question": "from the notebook"}
    assert plain_fields(template) is not None
    for items in (ITEMS, RECORDS):
        expected = []
        for item in items:
            fields = item if isinstance(item, dict) else {}
            expected.append(interpolate(template, ChainMap({"text": item, "item": item}, fields, namespace)))
        assert batch_prompts(template, items, namespace) == expected


@pytest.mark.parametrize("template", ["{text.upper}", "{text[0]}", "{text!r}", "{text:>9}", "{_text}", "{0}", "{}",
                                      "{text"])
def test_other_templates_are_not_plain(template):
    assert plain_fields(template) is None


def test_a_batch_item_that_cannot_be_filled_is_named_as_before():
    with pytest.raises(InterpolationError, match=r"Batch item 0: The prompt refers to \{nope\}"):
        batch_prompts("{text} {nope}", ["a", "b"], {})
    with pytest.raises(InterpolationError, match=r"Batch item 2: \{text\} could not be turned into text: "
                                                  "RuntimeError: no text for you"):
        batch_prompts("Q: {text}", ["a", "b", Unshowable()], {})


def test_a_record_without_a_field_the_others_have_is_refused_not_filled_from_the_notebook():
    namespace = {"q": "GLOBAL"}
    for records in ([{"q": "a"}, {"other": "b"}], [{"other": "b"}, {"q": "a"}]):
        with pytest.raises(ConfigError, match=r"Batch item [01] has no field q, which other items have"):
            batch_prompts("Q: {q}", records, namespace)
    assert batch_prompts("{q} in {lang}", [{"q": "a"}, {"q": "b"}], {"lang": "French"}) == ["a in French",
                                                                                            "b in French"]
