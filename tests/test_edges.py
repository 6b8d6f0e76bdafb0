"""No silent wrong answers: bad input is refused before anything is sent, a cut-off stream says so, and
every error says only what is true. Each test reproduces one way things went wrong, for real."""

from __future__ import annotations

import json

import pytest
from IPython.core.error import UsageError

from sm_magic.calls import REALTIME_BODY_LIMIT, build_request, invoke, stream
from sm_magic.errors import (
    ConfigError,
    EncodingError,
    RequestTooLarge,
    SageMakerError,
    StreamError,
)
from sm_magic.handlers.presets import JSONTemplate
from sm_magic.handlers.registry import Registry
from sm_magic.local import Fault
from sm_magic.params import BY_NAME
from sm_magic.result import BODY_SHOWN, Result
from sm_magic.streaming import StreamDecoder
from tests.conftest import SEED_PROMPT, cell, line, runner

REGISTRY = Registry()
TGI, MESSAGES, LMI = REGISTRY.get("tgi"), REGISTRY.get("tgi-messages"), REGISTRY.get("lmi")
SURROGATE = "abc\udcff\ud800def"
FULL = "Therefore, Peter stayed with her at the hospital for 3 days without leaving."


def one_paragraph(error: SageMakerError) -> str:
    text = error.explain()
    assert "\n" not in text and "Traceback" not in text, text
    return text


# -- 1. validation at the edge: encodable text, the 6 MiB body limit, a cut dry-run preview --------------

def test_a_lone_surrogate_in_the_prompt_is_refused_before_sending(session, local):
    before = local.calls["tgi"]
    with pytest.raises(EncodingError) as info:
        invoke(session, "tgi", SURROGATE, TGI)
    text = one_paragraph(info.value)
    assert isinstance(info.value, ConfigError)
    assert "index 3" in text and "'\\udcff'" in text and "abc\\udcff\\ud800def" in text
    assert "surrogateescape" in text  # where such text comes from, and what to do
    assert local.calls["tgi"] == before  # nothing was sent


def test_a_lone_surrogate_is_refused_on_every_path(session, local):
    before = local.calls["tgi-messages"]
    with pytest.raises(EncodingError, match="message 2 \\(user\\)"):
        stream(session, "tgi-messages", [{"role": "system", "content": "ok"},
                                         {"role": "user", "content": SURROGATE}], MESSAGES)
    with pytest.raises(EncodingError, match="parameter 'stop'"):
        build_request("tgi", "fine", TGI, {"stop": ["\udcff"]})
    assert local.calls["tgi-messages"] == before


def test_a_long_prompt_shows_only_the_text_around_the_bad_character():
    prompt = "x" * 10_000 + "\udcff" + "y" * 10_000
    with pytest.raises(EncodingError) as info:
        build_request("tgi", prompt, TGI, {})
    text = one_paragraph(info.value)
    assert "index 10000" in text and len(text) < 800
    assert "…" + "x" * 20 + "\\udcff" + "y" * 19 + "…" in text


def test_a_lone_surrogate_from_a_notebook_variable_is_one_paragraph_in_the_magic(ip, local):
    ip.user_ns["s"] = SURROGATE
    before = local.calls["tgi"]
    with pytest.raises(EncodingError) as info:
        cell(ip, "tgi", "Summarize: {s}")
    text = one_paragraph(info.value)
    assert "index 3" in text  # the position in the filled prompt
    assert local.calls["tgi"] == before
    value, _ = cell(ip, "tgi", "hi")  # the next call works
    assert value.text == "You said: hi"


def test_the_magic_names_the_variable_holding_a_lone_surrogate(ip):
    ip.user_ns["s"] = SURROGATE
    with pytest.raises(EncodingError, match=r"variable \{s\}"):
        cell(ip, "tgi", "Summarize: {s}")


def body_of_size(size: int) -> str:
    """A prompt whose TGI request body is exactly ``size`` bytes."""
    overhead = len(build_request("tgi", "", TGI, {}).body)
    return "a" * (size - overhead)


def test_a_body_above_6_mib_is_refused_with_its_size_and_what_to_do(session, local):
    assert REALTIME_BODY_LIMIT == 6_291_456  # botocore's Body max for both invoke operations
    assert len(build_request("tgi", body_of_size(REALTIME_BODY_LIMIT), TGI, {}).body) == REALTIME_BODY_LIMIT
    before = local.calls["tgi"]
    with pytest.raises(RequestTooLarge) as info:
        invoke(session, "tgi", body_of_size(REALTIME_BODY_LIMIT + 1), TGI)
    text = one_paragraph(info.value)
    assert "6,291,457 bytes" in text and "6,291,456 bytes" in text
    assert "--docs" in text and "--async" in text and "nothing was sent" in text
    with pytest.raises(RequestTooLarge):
        stream(session, "tgi", "a" * 7_000_000, TGI)
    assert local.calls["tgi"] == before
    assert build_request("tgi", "a" * 7_000_000, TGI, {}, limit=None).body  # a caller with its own limit


def test_a_7_mb_prompt_in_the_magic_is_refused_and_so_is_its_dry_run(ip, local):
    ip.user_ns["big"] = "word " * 1_400_000
    before = local.calls["tgi"]
    for flags in ("tgi", "tgi --dry-run"):
        with pytest.raises(RequestTooLarge, match="MiB"):
            cell(ip, flags, "{big}")
    assert local.calls["tgi"] == before


def test_the_dry_run_of_a_large_body_shows_a_cut_preview(ip):
    ip.user_ns["big"] = "word " * 200_000  # 1 MB: allowed, too long to print
    value, _ = cell(ip, "tgi --dry-run", "{big}")
    assert isinstance(value, Result) and len(value.request.body) > 1_000_000
    for shown in (value.plain(), value._repr_mimebundle_()[0]["text/markdown"], value.request.describe()):
        assert len(shown) < BODY_SHOWN + 2_000
        assert "more characters not shown" in shown and f"{len(value.request.body):,} bytes" in shown
    small, _ = cell(ip, "tgi --dry-run", "hi")
    assert "not shown" not in small.request.describe()
    assert json.loads(small.request.body)["inputs"] == "hi"


# -- 2. a stream without its container's end marker is truncated ----------------------------------------

@pytest.mark.parametrize(("endpoint", "handler", "shown"), [("tgi-messages", MESSAGES, 4), ("tgi", TGI, 5)])
def test_a_stream_that_ends_before_its_end_marker_is_truncated(session, local, endpoint, handler, shown):
    params = {"max_new_tokens": 64}
    whole = stream(session, endpoint, SEED_PROMPT, handler, params)
    assert "".join(whole) == FULL and whole.result.status == "ok" and not whole.result.truncated
    local.inject(endpoint, Fault("lmi-error", after_parts=5))  # on TGI: the stream just ends, cleanly
    cut = stream(session, endpoint, SEED_PROMPT, handler, params)
    chunks = list(cut)  # no error: the connection closed normally
    result = cut.result
    assert len([c for c in chunks if c]) == shown and FULL.startswith(result.text) and result.text != FULL
    assert result.truncated and not result.interrupted and result.status == "truncated"
    assert "⚠ truncated" in result.footer() and "truncated" in result.footer_line()


def test_every_preset_stream_that_ends_properly_is_not_truncated(session):
    for endpoint in ("tgi", "tgi-messages", "lmi", "lmi-chat", "sliced", "flan-t5"):
        s = stream(session, endpoint, SEED_PROMPT, REGISTRY.get("tgi" if endpoint == "sliced" else endpoint),
                   {"max_new_tokens": 64})
        assert "".join(s) == FULL, endpoint
        assert s.result.status == "ok" and not s.result.truncated, endpoint


def test_a_truncated_stream_is_truncated_in_history_and_the_rendered_footer(ip, local):
    local.inject("tgi-messages", Fault("lmi-error", after_parts=5))
    cell(ip, "tgi-messages --stream --max-new-tokens 64 -o cut", SEED_PROMPT)
    cut = ip.user_ns["cut"]
    assert cut.status == "truncated" and cut.text and cut.text != FULL
    assert runner(ip).history[-1].status == "truncated"
    line(ip, "history rows")
    assert ip.user_ns["rows"][-1]["status"] == "truncated"
    assert "⚠ truncated" in cut._repr_mimebundle_()[0]["text/markdown"]


def test_handlers_without_an_end_marker_are_never_called_truncated():
    template = JSONTemplate('{"inputs": "{prompt}"}', "generated_text", stream_path="token.text", name="mine")
    decoder = StreamDecoder(template)
    assert "".join(o.text for o in decoder.decode([b'data:{"token": {"text": "a"}}\n\n'])) == "a"
    assert not decoder.truncated
    from sm_magic.handlers.base import adapt

    class Seed:  # LangChain's handler duck type
        content_type = accepts = "application/json"

        def transform_input(self, prompt, kwargs):
            return json.dumps({"inputs": prompt}).encode()

        def transform_output(self, output):
            return json.loads(output.read())[0]["generated_text"]

    decoder = StreamDecoder(adapt(Seed()))
    assert [o.text for o in decoder.decode([b'[{"generated_text": "x"}]'])] == ["x"] and not decoder.truncated


# -- 3. every error message says only what is true --------------------------------------------------------

def test_a_dropped_connection_on_a_non_streamed_call_says_nothing_is_kept(session, local):
    local.inject("faulty", Fault("drop", times=-1))
    with pytest.raises(StreamError) as info:
        invoke(session, "faulty", SEED_PROMPT, TGI)
    text = one_paragraph(info.value)
    assert "Nothing of the answer is kept" in text and "arrived are kept" not in text
    assert not info.value.streamed and info.value.partial == ""


def test_a_stream_broken_mid_way_says_how_much_is_kept(session, local):
    local.inject("faulty-lmi", Fault("drop", after_parts=3))
    s = stream(session, "faulty-lmi", SEED_PROMPT, LMI)
    with pytest.raises(StreamError) as info:
        list(s)
    partial = info.value.partial
    assert partial and s.result.text == partial
    assert f"The {len(partial)} characters that arrived are kept" in one_paragraph(info.value)


def test_a_stream_broken_before_any_text_says_nothing_arrived(session, local):
    local.inject("faulty-lmi", Fault("stream-error", after_parts=0))
    with pytest.raises(StreamError) as info:
        list(stream(session, "faulty-lmi", SEED_PROMPT, LMI))
    text = one_paragraph(info.value)
    assert "Nothing had arrived yet" in text and "are kept" not in text


def test_throttling_does_not_claim_retries_that_were_not_made(local):
    from sm_magic.errors import Throttled
    from sm_magic.session import Session

    once = Session.local(local.url, max_attempts=1)
    local.inject("faulty", Fault("throttle"))
    with pytest.raises(Throttled) as info:
        invoke(once, "faulty", "hi", TGI)
    assert "retries did not get through" not in one_paragraph(info.value)
    assert "max_attempts" in info.value.explain()


# -- 4. a {var} whose __str__ or __format__ raises --------------------------------------------------------

class Broken:
    def __str__(self) -> str:
        raise RuntimeError("cannot show myself")

    def __format__(self, spec: str) -> str:
        raise RuntimeError("cannot format myself")


@pytest.mark.parametrize("template", ["Tell me about {thing}", "Tell me about {thing!s}"])
def test_a_variable_that_cannot_be_shown_is_one_paragraph(ip, template):
    ip.user_ns["thing"] = Broken()
    with pytest.raises(ConfigError) as info:
        cell(ip, "tgi", template)
    text = one_paragraph(info.value)
    assert "{thing}" in text and "RuntimeError" in text


# -- what others built for this issue, checked here where no test covered it ----------------------------

@pytest.mark.parametrize("value", ["0", "-5"])
def test_concurrency_below_one_is_refused(ip, local, value):
    ip.user_ns["items"] = ["a", "b"]
    before = local.calls["tgi"]
    with pytest.raises(UsageError, match=f"concurrency must be between 1 and 256, not {value}"):
        cell(ip, f"tgi --batch items --concurrency {value}", "{text}")
    assert local.calls["tgi"] == before


@pytest.mark.parametrize("name", ["__builtins__", "1 bad-name", "In", "Out", "get_ipython", "exit", "len", "class"])
def test_out_must_be_a_plain_name_that_hides_nothing(ip, local, name):
    saved = {k: ip.user_ns.get(k) for k in ("__builtins__", "In", "Out", "get_ipython", "exit")}
    with pytest.raises(UsageError, match="-o"):
        cell(ip, f"tgi -o '{name}'", "hi")
    assert {k: ip.user_ns.get(k) for k in saved} == saved
    assert name in saved or name not in ip.user_ns
    ip.run_cell("__edge_check = len([1, 2])")
    assert ip.user_ns["__edge_check"] == 2  # the builtins still work


@pytest.mark.parametrize("body", ["", "  \n\t\n"])
def test_an_empty_cell_is_a_usage_error(ip, local, body):
    before = local.calls["tgi"]
    with pytest.raises(UsageError, match="empty"):
        cell(ip, "tgi", body)
    assert local.calls["tgi"] == before


def test_batch_over_a_dict_or_with_a_template_that_ignores_the_item_is_refused(ip, local):
    ip.user_ns.update(d={"x": 1, "y": 2}, items=["a", "b", "c"])
    before = local.calls["tgi"]
    with pytest.raises(ConfigError, match="not a dict"):
        cell(ip, "tgi --batch d", "{text}")
    with pytest.raises(ConfigError, match="does not use the item"):
        cell(ip, "tgi --batch items", "the same prompt")
    assert local.calls["tgi"] == before


@pytest.mark.parametrize(("setting", "words"), [
    ("read_timeout=0", "at least 1"), ("max_attempts=0", "between 1 and 20"),
    ("retry_mode=bogus", "standard, adaptive, legacy"), ("stream=maybe", "true or false"),
    ("concurrency=0", "between 1 and 256"), ("handler=tgl", "Unknown content handler 'tgl'.*tgi"),
    ("home=/proc/sm-magic-home", "home='/proc/sm-magic-home' cannot be used")])
def test_config_values_are_validated_when_set(ip, setting, words):
    name = setting.split("=")[0]
    before = getattr(ip.user_ns["_sm_magics"].state, name, None)
    with pytest.raises(ConfigError, match=words):
        line(ip, f"config {setting}")
    assert getattr(ip.user_ns["_sm_magics"].state, name, None) == before
    value, _ = cell(ip, "tgi", "hi")  # the next call is not broken by it
    assert value.text == "You said: hi"


def test_percent_config_checks_handler_and_home_as_the_config_command_does(ip, caplog):
    state = ip.user_ns["_sm_magics"].state
    ip.run_line_magic("config", "SageMaker.handler = 'tgl'")  # IPython shows the error, does not raise
    ip.run_line_magic("config", "SageMaker.home = '/proc/sm-magic-home'")
    said = caplog.text
    assert "Unknown content handler 'tgl'. Did you mean 'tgi'?" in said and "cannot be used" in said
    assert (state.handler, state.home) == ("auto", "")


def test_a_batch_above_the_call_budget_waits_for_yes(ip, local):
    ip.user_ns["items"] = ["a", "b", "c"]
    line(ip, "config max_calls=2")
    before = local.calls["tgi"]
    with pytest.raises(ConfigError) as info:
        cell(ip, "tgi --batch items", "{text}")
    text = one_paragraph(info.value)
    assert "3 calls" in text and "budget of 2" in text and "--yes" in text
    assert local.calls["tgi"] == before
    value, _ = cell(ip, "tgi --batch items --yes", "{text}")
    assert value.texts == ["You said: a", "You said: b", "You said: c"]


# -- invoke headers: checked here, since the runtime client skips botocore's parameter validation -------

# InvokeEndpoint's length limits (characters), from the API reference.
HEADER_LIMITS = {"custom_attributes": 1024, "target_model": 1024, "target_variant": 63,
                 "target_container_hostname": 63, "inference_id": 64, "enable_explanations": 64,
                 "inference_component": 63, "session_id": 256}


@pytest.mark.parametrize(("name", "limit"), HEADER_LIMITS.items())
def test_a_header_flag_above_its_limit_is_refused_before_sending(ip, local, name, limit):
    option, long = "--" + name.replace("_", "-"), "x" * (limit + 1)
    before = local.calls["tgi"]
    with pytest.raises(UsageError) as info:
        cell(ip, f"tgi {option} {long}")
    assert f"{option} is {limit + 1:,} characters long; SageMaker takes at most {limit:,}." in str(info.value)
    assert long not in str(info.value)  # the value is not echoed
    assert local.calls["tgi"] == before
    assert BY_NAME[name].parse("x" * limit) == "x" * limit  # the limit itself is fine


def test_a_long_header_is_refused_by_config_and_alias_add(ip, local):
    with pytest.raises(ConfigError) as info:
        line(ip, "config custom_attributes=" + "x" * 2000)
    assert one_paragraph(info.value) == "--custom-attributes is 2,000 characters long; SageMaker takes at most 1,024."
    assert ip.user_ns["_sm_magics"].state.custom_attributes is None
    with pytest.raises(UsageError, match="--target-variant is 64 characters long; SageMaker takes at most 63"):
        line(ip, "alias add blue multi --target-variant " + "b" * 64)
    assert line(ip, "alias list")[0].rows == []
    assert cell(ip, "tgi")[0].text == "You said: hi"  # the next call is not broken by it


def test_a_long_or_non_ascii_header_in_the_alias_file_is_refused_when_used(ip, local, tmp_path):
    (tmp_path / "endpoints.ini").write_text(
        f"[long]\nendpoint = tgi\ntarget_model = {'m' * 1025}\n[accent]\nendpoint = tgi\ncustom_attributes = café\n")
    before = local.calls["tgi"]
    long = "--target-model is 1,025 characters long; SageMaker takes at most 1,024"
    with pytest.warns(UserWarning, match=long), pytest.raises(ConfigError, match=long):
        cell(ip, "long")
    with pytest.raises(ConfigError, match=r"--custom-attributes travels as an HTTP header.*'é'"):
        cell(ip, "accent")
    assert local.calls["tgi"] == before


@pytest.mark.parametrize("value", ["café", "a\tb", "trace=1\r\nX-Injected: yes"])
def test_a_header_value_must_be_printable_ascii(value):
    with pytest.raises(ConfigError) as info:
        BY_NAME["custom_attributes"].parse(value)
    assert one_paragraph(info.value).startswith(
        "--custom-attributes travels as an HTTP header, which takes printable ASCII only; it holds ")


def test_a_non_ascii_header_flag_or_setting_is_refused_before_sending(ip, local):
    before = local.calls["tgi"]
    with pytest.raises(UsageError, match=r"--inference-id travels as an HTTP header.*'é' at character 4"):
        cell(ip, "tgi --inference-id café")
    with pytest.raises(ConfigError, match="--custom-attributes travels as an HTTP header"):
        line(ip, "config custom_attributes=trace=é")
    assert local.calls["tgi"] == before


def test_history_after_a_lone_surrogate_stays_printable(ip, local):
    ip.user_ns["s"] = SURROGATE
    with pytest.raises(EncodingError):
        cell(ip, "tgi", "{s}")
    cell(ip, "tgi", "hi")
    value, _ = line(ip, "history rows")
    shown = {"text/markdown": value._repr_markdown_(), "text/plain": repr(value)}
    json.dumps(shown, ensure_ascii=False).encode("utf-8")  # what a kernel sends: must not raise
    assert [r["status"] for r in ip.user_ns["rows"][-2:]] == ["EncodingError", "ok"]


# -- 6. a lone surrogate with the panel open, in a real kernel (widgets really serialize there) ------------

SURROGATE_NOTEBOOK = [
    "%load_ext sm_magic",
    "%sagemaker panel",
    "import json, time\nrunner = get_ipython().magics_manager.registry['SageMakerMagics'].runner\n"
    "panel = runner.listeners[-1].__self__\nlisteners = len(runner.listeners)\ns = 'abc\\udcff\\ud800def'",
    # {s} filled from a variable, on each path; then the surrogate as the cell's own text
    "errors = []\nfor line, body in (('tgi', 'Summarize {s}'), ('tgi --stream', 'Summarize {s}'),\n"
    "                   ('tgi --dry-run', 'Summarize {s}'), ('tgi', s)):\n"
    "    try:\n        get_ipython().run_cell_magic('sagemaker', line, body)\n"
    "    except Exception as e:\n"
    "        errors.append((type(e).__name__, e.explain() if hasattr(e, 'explain') else str(e)))",
    "time.sleep(1.5)  # the panel redraws its history at a bounded rate\n"
    "panel.history.value = len(runner.history) - 1  # the call whose text was the surrogate itself\n"
    "panel.restore.click()\nrestored = panel.prompt.value",
    "%%sagemaker tgi -o later\nhi",
    "%sagemaker history rows",
    "time.sleep(1.5)\nreport = {'errors': errors, 'later': later.text, 'status': [r['status'] for r in rows],\n"
    "          'listeners': [listeners, len(runner.listeners)], 'restored': restored,\n"
    "          'shown': list(panel.history.options), 'panel_status': panel.status.value}\nprint(json.dumps(report))",
]
RESTORE_CELL = 4


@pytest.fixture(scope="module")
def surrogate_run(local, tmp_path_factory) -> dict:
    """The notebook above, run in a real kernel with the panel displayed: its cells and its report."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from sm_magic.cli import environment, run_notebook

    root = tmp_path_factory.mktemp("surrogate")
    path = root / "surrogate.ipynb"
    nb = new_notebook(cells=[new_code_cell(c) for c in SURROGATE_NOTEBOOK])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, path)
    env = {**environment(local), "SM_MAGIC_ENDPOINTS": str(root / "endpoints.ini"), "SM_MAGIC_HOME": str(root)}
    done = run_notebook(path, root / "out", env, store_widget_state=True, timeout=120)  # a failing cell raises
    return {"cells": done.cells, "report": json.loads(done.cells[-1].outputs[-1]["text"])}


def test_a_lone_surrogate_with_the_panel_open_does_not_break_later_calls(surrogate_run):
    report = surrogate_run["report"]
    assert [name for name, _ in report["errors"]] == ["EncodingError"] * 4, report["errors"]
    assert all("variable {s}" in text and "index 3" in text for _, text in report["errors"][:3])
    assert "index 3" in report["errors"][3][1]  # the cell's own text
    assert all("\n" not in text for _, text in report["errors"])
    assert report["later"] == "You said: hi"  # the next call works and its variable is set
    assert report["status"][-2:] == ["EncodingError", "ok"]
    assert report["listeners"][0] >= 1 and report["listeners"][1] == report["listeners"][0]  # the panel still listens
    labels = [label for label, _ in report["shown"]]
    assert " ok " in labels[0] and "EncodingError" in labels[1] and "abc" in labels[1]
    assert "History:" not in report["panel_status"]
    for i, done in enumerate(surrogate_run["cells"]):
        if i != RESTORE_CELL:
            assert not [o for o in done.get("outputs", []) if o.get("output_type") == "error"], SURROGATE_NOTEBOOK[i]


def test_restoring_a_prompt_with_a_lone_surrogate_from_the_panel_history(surrogate_run):
    errors = [o for o in surrogate_run["cells"][RESTORE_CELL].get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors[0]["ename"] + ": " + errors[0]["evalue"]
    assert surrogate_run["report"]["restored"] == "abc\ufffd\ufffddef"


def test_changing_a_results_parameters_changes_no_later_call(ip, local):
    """Hostile pass: r.params shared its lists with the parsed cell line, so the next run sent them changed."""
    options = """tgi --handler tgi --stop END -m '{"extra": {"keep": [1]}}'"""
    first = ip.run_cell_magic("sagemaker", options, "hi")
    first.params["stop"].append("POISON")
    first.params["extra"]["keep"].append(2)
    again = ip.run_cell_magic("sagemaker", options, "hi")
    assert again.params["stop"] == ["END"] and again.params["extra"] == {"keep": [1]}


# -- a lone surrogate typed in a command: one paragraph, nothing changed ---------------------------------

@pytest.mark.parametrize(("flag", "what"), [("--search", "the text around it"), ("--endpoint", "plain ASCII")])
def test_a_lone_surrogate_in_a_history_filter_is_one_paragraph(ip, local, flag, what):
    cell(ip, "tgi", "hi")
    with pytest.raises(ConfigError) as info:
        line(ip, f"history {flag} ab\ud800")
    text = one_paragraph(info.value)
    assert (f"The {flag} text cannot be looked up: the character at index 2 ('\\ud800') is a lone surrogate, "
            "which UTF-8 cannot encode; around it: ab\\ud800.") in text
    assert what in text
    text.encode("utf-8")  # the explanation itself can be shown
    value, _ = line(ip, "history --search hi")  # the next search works
    assert [r["prompt"] for r in value.rows] == ["hi"]


@pytest.mark.parametrize(("words", "what"), [("s\ud800 tgi", "alias name"), ("s tgi\ud800", "endpoint name"),
                                             ("s tgi --region eu\ud800", "--region value"),
                                             ("s tgi --handler tgi\ud800", "--handler value")])
def test_a_lone_surrogate_in_alias_add_is_one_paragraph_and_leaves_the_file_as_it_was(ip, local, tmp_path, words,
                                                                                     what):
    line(ip, "alias add keep tgi --max-new-tokens 3")
    ini = tmp_path / "endpoints.ini"
    before = ini.read_bytes()
    with pytest.raises(ConfigError) as info:
        line(ip, f"alias add {words}")
    text = one_paragraph(info.value)
    assert f"The {what} cannot be saved (the aliases file {ini} was not changed): the character" in text
    assert "Type it again without that character" in text
    text.encode("utf-8")
    assert ini.read_bytes() == before
    with pytest.raises(ConfigError, match="alias name cannot be saved"):
        line(ip, "alias remove keep\ud800")
    assert ini.read_bytes() == before
    assert cell(ip, "keep")[0].params["max_new_tokens"] == 3  # the aliases still work


def test_stream_on_a_batch_line_is_refused_and_a_streaming_default_is_not(ip, local):
    ip.user_ns["items"] = ["a", "b"]
    before = local.calls["tgi"]
    with pytest.raises(ConfigError, match="--stream shows one answer as it arrives; a batch shows each answer"):
        cell(ip, "tgi --batch items --stream", "{text}")
    assert local.calls["tgi"] == before
    ip.run_line_magic("sagemaker", "config stream=true")
    assert cell(ip, "tgi --handler tgi --batch items", "{text}")[0].texts == ["You said: a", "You said: b"]
