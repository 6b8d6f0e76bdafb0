"""%%sagemaker and %sagemaker in an in-process IPython shell, against the local endpoint."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from sm_magic.batch import BatchResult
from sm_magic.errors import ConfigError, EndpointNotFound, ModelError, SageMakerError, StreamError
from sm_magic.local import Fault
from sm_magic.resolve import CallSpec
from sm_magic.result import Result
from tests.conftest import SEED_CONTEXT, SEED_PROMPT, cell, line, runner

EXPECTED = "Therefore, Peter stayed with her at the hospital for 3 days without leaving."
QA_CELL = "Use the following pieces of context.\n\n{context}\n\nQuestion: How long was Elizabeth hospitalized?\nAnswer:"


def state(ip):
    return ip.user_ns["_sm_magics"].state


def markdown(value) -> str:
    if hasattr(value, "_repr_markdown_"):
        return value._repr_markdown_()
    return value._repr_mimebundle_()[0]["text/markdown"]


def test_cell_is_the_prompt_and_renders_with_a_footer(ip):
    ip.user_ns["context"] = SEED_CONTEXT
    value, _ = cell(ip, "tgi --max-new-tokens 64", QA_CELL)
    assert isinstance(value, Result) and value.text == EXPECTED
    data, metadata = value._repr_mimebundle_()
    assert data["text/markdown"].startswith(EXPECTED)
    assert "endpoint `tgi` · handler `tgi`" in data["text/markdown"]
    assert metadata["sm_magic"]["parameters"] == {"max_new_tokens": 64}


def test_interpolation_by_lookup_with_attributes_and_indexes(ip):
    class Row:
        text = "Peter stayed 3 days."

    ip.user_ns.update(row=Row(), docs=["first doc"])
    value, _ = cell(ip, "tgi", "{row.text} {docs[0]}")
    assert value.text == "You said: Peter stayed 3 days. first doc"


def test_interpolation_never_evaluates(ip, local, tmp_path):
    marker = tmp_path / "pwned"
    before = sum(local.calls.values())
    with capture_output() as captured:
        outcome = ip.run_cell(f"%%sagemaker tgi\n{{__import__('os').system('touch {marker}')}}")
    assert isinstance(outcome.error_in_exec, ConfigError)
    assert not marker.exists()
    assert sum(local.calls.values()) == before  # nothing was sent
    assert "Traceback" not in captured.stdout


def test_unknown_names_are_listed(ip):
    with pytest.raises(ConfigError) as info:
        cell(ip, "tgi", "{missing_one} and {missing_two}")
    assert "{missing_one}, {missing_two}" in info.value.explain()


def test_no_interpolate_sends_braces(ip):
    value, _ = cell(ip, "tgi --no-interpolate", '{"raw": "json"}')
    assert value.text == 'You said: {"raw": "json"}'


def test_model_parameters_and_json_kwargs_reach_the_body(ip):
    value, _ = cell(ip, """tgi --dry-run --temperature 0.3 --max-new-tokens 9 --top-p 0.8 --stop "\\n\\n" --stop END """
                        """--seed 4 -m '{"repetition_penalty": 1.1, "note": "two words"}'""")
    body = json.loads(value.request.body)
    assert body["parameters"] == {"temperature": 0.3, "max_new_tokens": 9, "top_p": 0.8, "stop": ["\n\n", "END"],
                                  "seed": 4, "repetition_penalty": 1.1, "note": "two words"}


def test_bad_model_kwargs_json_is_explained(ip):
    with pytest.raises(UsageError, match=r"not valid JSON.*Give one quoted JSON object"):
        cell(ip, "tgi -m '{oops'")
    with pytest.raises(UsageError, match="NaN"):
        cell(ip, """tgi -m '{"temperature": NaN}'""")


def test_handler_flag_and_auto_detection(ip):
    value, _ = cell(ip, "lmi --handler lmi", SEED_PROMPT)
    assert value.text == EXPECTED and value.handler == "lmi"
    value, _ = cell(ip, "lmi-chat --handler auto", "hello")  # the LMI image → lmi preset
    assert value.handler == "lmi" and value.text == "You said: hello"
    value, _ = cell(ip, "tgi-messages", "hello")  # default handler is auto
    assert value.handler == "tgi-messages"


def test_unknown_handler_suggests_the_closest(ip):
    with pytest.raises(ConfigError, match="Did you mean 'lmi'"):
        cell(ip, "tgi --handler lmj")


def test_invoke_header_flags(ip):
    value, _ = cell(ip, "multi --target-variant green --custom-attributes trace=1 --inference-id r1 "
                        "--session-id NEW_SESSION")
    assert value.variant == "green" and value.response_attributes == "trace=1" and value.new_session_id
    value, _ = cell(ip, "components --inference-component ic-small --handler tgi-messages")
    assert value.text == "You said: hi"
    value, _ = cell(ip, "tgi --dry-run --target-model m.tar.gz --target-container-hostname c1")
    assert "X-Amzn-SageMaker-Target-Model: m.tar.gz" in value.request.describe()
    assert "X-Amzn-SageMaker-Target-Container-Hostname: c1" in value.request.describe()


def test_region_override_for_one_cell(ip):
    with pytest.raises(EndpointNotFound) as info:
        cell(ip, "nope --region eu-west-3")
    assert "region eu-west-3" in info.value.explain()
    assert state(ip).session.region == "us-east-1"


def test_stream_shows_tokens_and_keeps_the_result(ip):
    value, captured = cell(ip, "lmi --stream --out streamed", SEED_PROMPT)
    assert value is None  # the live display is the output
    result = ip.user_ns["streamed"]
    assert result.text == EXPECTED and result.streamed and not result.interrupted
    assert result.first_token is not None and result.first_token <= result.latency
    final = captured.outputs[-1]
    assert final.data["text/plain"] == f"{EXPECTED}\n{result.footer_line()}"
    assert final.metadata["sm_magic"]["endpoint"] == "lmi"


def test_interrupt_stops_the_stream_and_keeps_what_arrived(ip, local):
    before = local.calls["trickle"]

    def interrupt_once_tokens_flow():
        while local.calls["trickle"] == before:
            time.sleep(0.01)
        time.sleep(0.3)  # ~30 tokens at 10 ms each
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_tokens_flow, daemon=True).start()
    _, _ = cell(ip, "trickle --stream --max-new-tokens 2000 --out partial", "go")
    result = ip.user_ns["partial"]
    assert result.interrupted
    assert 0 < len(result.text.split()) < 2000
    assert runner(ip).history[-1].status == "interrupted"
    assert cell(ip, "tgi")[0].text == "You said: hi"  # the kernel is usable afterwards


def test_stream_error_keeps_partial_text_and_raises(ip, local):
    local.inject("faulty-lmi", Fault("stream-error", after_parts=3))
    with pytest.raises(StreamError) as info:
        cell(ip, "faulty-lmi --stream --out broken", SEED_PROMPT)
    assert info.value.partial == "Therefore, Peter stayed"  # three parts arrived
    assert ip.user_ns["broken"].text == "Therefore, Peter stayed" and ip.user_ns["broken"].interrupted
    assert runner(ip).history[-1].status == "StreamError"


def test_out_variable_and_target_prefix(ip):
    cell(ip, "tgi --out first")
    cell(ip, "second << tgi", "again")
    assert ip.user_ns["first"].text == "You said: hi"
    assert ip.user_ns["second"].text == "You said: again"


def test_output_formats(ip):
    value, _ = cell(ip, "tgi -f json")
    assert value._repr_mimebundle_()[0]["application/json"]["endpoint"] == "tgi"
    value, _ = cell(ip, "tgi --format text")
    assert "text/markdown" not in value._repr_mimebundle_()[0]


def test_chat_mode_keeps_history_per_endpoint(ip):
    cell(ip, "tgi-messages --chat", "My name is Ada.")
    second, _ = cell(ip, "tgi-messages --chat --dry-run", "What is my name?")
    messages = json.loads(second.request.body)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"] == "My name is Ada."
    line(ip, "chat reset tgi-messages")
    third, _ = cell(ip, "tgi-messages --chat --dry-run", "Hello")
    assert len(json.loads(third.request.body)["messages"]) == 1
    with pytest.raises(ConfigError, match="messages-API handler"):
        cell(ip, "tgi --handler tgi --chat")


def test_errors_render_as_one_paragraph_and_still_raise(ip, local):
    local.inject("faulty", Fault("model-error", status=400, message="prompt too long"))
    with capture_output() as captured:
        outcome = ip.run_cell("%%sagemaker faulty\nhi")
    assert isinstance(outcome.error_in_exec, ModelError)
    assert "prompt too long" in captured.stdout and "cloudwatch" in captured.stdout
    assert "Traceback" not in captured.stdout and len(captured.stdout.strip().splitlines()) <= 2


def test_debug_on_shows_the_full_traceback(ip):
    line(ip, "debug on")
    with capture_output() as captured:
        ip.run_cell("%%sagemaker nope\nhi")
    assert "Traceback" in captured.stdout or "File " in captured.stdout
    line(ip, "debug off")


def test_session_show_and_local(ip, local):
    value, _ = line(ip, "session")
    text = markdown(value)
    assert "000000000000" in text and local.url in text
    value, _ = line(ip, f"session --local {local.url} --region us-west-2")
    assert "us-west-2" in markdown(value)
    assert cell(ip, "tgi")[0].text == "You said: hi"


def test_session_with_a_notebook_client_and_boto_session(ip, local):
    import boto3

    ip.user_ns["client"] = boto3.client("sagemaker-runtime", endpoint_url=local.url, region_name="ap-south-1",
                                        aws_access_key_id="k", aws_secret_access_key="s")
    line(ip, "session --client client")
    assert state(ip).session.runtime is ip.user_ns["client"]
    assert cell(ip, "tgi --handler tgi")[0].text == "You said: hi"
    ip.user_ns["sts"] = boto3.client("sts", region_name="us-east-1")
    with pytest.raises(ConfigError, match="sagemaker-runtime"):
        line(ip, "session --client sts")
    with pytest.raises(ConfigError, match="not defined"):
        line(ip, "session --client nothing_here")


def test_session_settings_and_reset(ip):
    line(ip, "session --read-timeout 12 --region eu-west-1")
    assert state(ip).session.settings.read_timeout == 12 and state(ip).session.region == "eu-west-1"
    line(ip, "session --reset")
    assert state(ip).session.settings.read_timeout == 80


def test_endpoints_list_and_describe(ip):
    value, _ = line(ip, "endpoints")
    rows = {r["name"]: r for r in value.rows}
    assert rows["lmi"]["format"] == "lmi" and rows["llama2-chat"]["format"] == "llama2-chat"
    assert rows["tgi"]["status"] == "InService" and "ml.g5.xlarge" in rows["tgi"]["instance"]
    value, _ = line(ip, "endpoints describe lmi")
    fields = {r["field"]: r["value"] for r in value.rows}
    assert "djl-inference" in fields["image"] and fields["handler (detected)"].startswith("lmi")


def test_handlers_list_register_json_detect_remove(ip):
    from tests.handlers.test_presets import SeedHandler

    names = [r["name"] for r in line(ip, "handlers")[0].rows]
    assert {"tgi", "tgi-messages", "lmi", "lmi-chat", "llama2-chat", "flan-t5", "embedding", "text"} <= set(names)
    ip.user_ns["seed_handler"] = SeedHandler()
    line(ip, "handlers register seed seed_handler")
    assert cell(ip, "tgi --handler seed", SEED_PROMPT)[0].text == EXPECTED
    line(ip, """handlers json flan --request '{"text_inputs": "{prompt}"}' --response generated_texts[0]""")
    assert cell(ip, "flan-t5 --handler flan", SEED_PROMPT)[0].text == EXPECTED
    detected = line(ip, "handlers detect lmi")[0].rows[0]
    assert detected["handler"] == "lmi"
    line(ip, "handlers remove seed")
    with pytest.raises(ConfigError):
        cell(ip, "tgi --handler seed")


def test_aliases_persist_and_reload_in_a_new_shell(ip, tmp_path):
    line(ip, "alias add qa lmi --handler lmi --max-new-tokens 5 --custom-attributes trace=7")
    assert "[qa]" in (tmp_path / "endpoints.ini").read_text()
    from sm_magic.magics import SageMakerMagics

    fresh = SageMakerMagics(shell=ip)  # as a new kernel would load it
    ip.register_magics(fresh)
    ip.user_ns["_sm_magics"] = fresh
    value, _ = cell(ip, "qa", SEED_PROMPT)
    assert value.endpoint == "lmi" and value.handler == "lmi"
    assert value.text == "Therefore, Peter stayed with her"  # 5 tokens, from the alias
    assert value.request.headers["X-Amzn-SageMaker-Custom-Attributes"] == "trace=7"
    assert [r["alias"] for r in line(ip, "alias list")[0].rows] == ["qa"]
    line(ip, "alias remove qa")
    assert line(ip, "alias list")[0].rows == []


def test_a_cell_run_again_follows_what_changed_between_runs(ip, tmp_path):
    """The same options line resolves to what is current: an alias another kernel rewrote, a default set
    with %config, a new session (the merged values are kept per line, never past a change)."""
    line(ip, "alias add short tgi --max-new-tokens 3")
    first, _ = cell(ip, "short", "hi")
    assert first.params["max_new_tokens"] == 3 and first.endpoint == "tgi"
    ini = tmp_path / "endpoints.ini"
    ini.write_text(ini.read_text().replace("= 3", "= 12"))  # as another kernel would
    again, _ = cell(ip, "short", "hi")
    assert again.params["max_new_tokens"] == 12
    ip.run_line_magic("config", "SageMaker.temperature = 0.25")
    warmer, _ = cell(ip, "short", "hi")
    assert warmer.params == {"max_new_tokens": 12, "temperature": 0.25}
    before = state(ip).session
    line(ip, f"session --local {before.settings.endpoint_url}")
    assert state(ip).session is not before
    assert state(ip).resolve(CallSpec("hi", {"endpoint": "short"})).session is state(ip).session
    sent = [state(ip).resolve(CallSpec("hi", {"endpoint": "tgi", "seed": v})).params["seed"] for v in (1, 1.0, True)]
    assert [type(v) for v in sent] == [int, float, bool]  # equal keys, yet each call sends its own value


def test_kept_settings_never_hold_a_notebooks_objects_nor_miss_a_change_in_place(ip):
    import sys
    import weakref

    st = state(ip)
    ip.user_ns["report"] = report = "Peter stayed 3 days. " * 10_000
    held = sys.getrefcount(report)
    cell(ip, "tgi --docs report --dry-run", "How long?")
    ip.user_ns["_sm_magics"].runner.last = None
    assert sys.getrefcount(report) == held  # --docs text: looked up per call, never kept
    old = type("Defaults", (dict,), {})(top_k=5)
    gone = weakref.ref(old)
    st.model_kwargs = old
    assert st.resolve(CallSpec("hi", {"endpoint": "tgi", "max_new_tokens": 2})).params == {
        "top_k": 5, "max_new_tokens": 2}
    st.model_kwargs["top_k"] = 50  # changed in place: no trait event, still sent
    assert cell(ip, "tgi --max-new-tokens 2", "hi")[0].params == {"top_k": 50, "max_new_tokens": 2}
    ip.user_ns["_sm_magics"].runner.history.clear()  # the history keeps each call's settings
    st.model_kwargs = {}
    st.resolve(CallSpec("hi", {"endpoint": "tgi"}))
    del old
    assert gone() is None  # a replaced default is not kept alive by what was merged from it
    first = st.resolve(CallSpec("hi", {"endpoint": "tgi"}))
    first.options.custom_attributes = "mine-only"
    assert cell(ip, "tgi", "hi")[0].request.headers == {}  # each call its own options


def test_a_numpy_number_from_the_notebook_is_a_usable_setting(ip):
    ip.run_cell("import numpy as np; temps = np.linspace(0.1, 0.9, 3)")
    ip.run_line_magic("config", "SageMaker.temperature = temps[1]")
    value, _ = cell(ip, "tgi", "hi")
    assert value.params == {"temperature": 0.5}


def test_an_alias_file_put_back_with_its_old_size_and_time_is_read_again(ip, tmp_path):
    line(ip, "alias add short tgi --max-new-tokens 3")
    ini = tmp_path / "endpoints.ini"
    assert cell(ip, "short", "hi")[0].params["max_new_tokens"] == 3
    before = ini.stat()
    copy = tmp_path / "copy.ini"
    copy.write_text(ini.read_text().replace("= 3", "= 7"))  # same size
    os.utime(copy, ns=(before.st_atime_ns, before.st_mtime_ns))  # as cp -p or rsync -t keep it
    os.replace(copy, ini)
    assert cell(ip, "short", "hi")[0].params["max_new_tokens"] == 7


def test_a_cell_sees_one_version_of_the_aliases_file_and_the_next_cell_sees_the_change(ip, tmp_path, monkeypatch):
    """The aliases file is looked at once per cell (a loop of calls in one cell does not stat it each time);
    the next cell, a panel run, or a long cell after RECHECK seconds sees what another kernel wrote."""
    import sm_magic.aliases

    monkeypatch.setattr(sm_magic.aliases, "RECHECK", 60.0)  # a slow machine's first call is no long cell
    line(ip, "alias add short tgi --max-new-tokens 3")
    assert cell(ip, "short", "hi")[0].params["max_new_tokens"] == 3
    ini = tmp_path / "endpoints.ini"
    ini.write_text(ini.read_text().replace("= 3", "= 12"))  # as another kernel would
    same_cell = ip.run_cell_magic("sagemaker", "short", "hi")  # no new cell started
    assert same_cell.params["max_new_tokens"] == 3
    assert cell(ip, "short", "hi")[0].params["max_new_tokens"] == 12  # the next cell
    ini.write_text(ini.read_text().replace("= 12", "= 20"))
    monkeypatch.setattr(sm_magic.aliases, "RECHECK", 0.05)
    time.sleep(0.06)  # a long cell looks again after RECHECK
    assert ip.run_cell_magic("sagemaker", "short", "hi").params["max_new_tokens"] == 20


def test_a_real_cell_run_looks_at_the_aliases_file_and_one_callback_serves_the_shell(ip, tmp_path):
    from sm_magic.magics import SageMakerMagics

    line(ip, "alias add short tgi --max-new-tokens 3")
    ip.run_cell("%%sagemaker short -o first\nhi")
    ini = tmp_path / "endpoints.ini"
    ini.write_text(ini.read_text().replace("= 3", "= 9"))
    ip.run_cell("%%sagemaker short -o second\nhi")
    assert (ip.user_ns["first"].params["max_new_tokens"], ip.user_ns["second"].params["max_new_tokens"]) == (3, 9)
    SageMakerMagics(shell=ip)  # as %reload_ext makes another: it replaces the first one's callback
    ours = [c for c in ip.events.callbacks["pre_execute"] if getattr(c, "__func__", None) is SageMakerMagics._new_cell]
    assert len(ours) == 1


def test_history_records_calls_and_can_be_stored(ip, local):
    cell(ip, "tgi", "first prompt")
    local.inject("faulty", Fault("model-error"))
    with pytest.raises(ModelError):
        cell(ip, "faulty", "second prompt")
    value, _ = line(ip, "history calls")
    rows = ip.user_ns["calls"]
    assert [r["status"] for r in rows[-2:]] == ["ok", "ModelError"]
    assert rows[-2]["prompt"] == "first prompt" and rows[-2]["latency_ms"] is not None
    assert value.rows == rows


@pytest.mark.parametrize(("flags", "words"), [
    ("--status bogus", "invalid choice: 'bogus'"),
    ("--status OK", "invalid choice: 'OK'"), ("--limit 0", "--limit must be a whole number of at least 1, not 0"),
    ("--limit -3", "at least 1, not -3"), ("--limit many", "at least 1, not many")])
def test_history_refuses_an_unknown_status_and_a_limit_below_one(ip, flags, words):
    cell(ip, "tgi", "a call")
    with pytest.raises(UsageError) as info:
        line(ip, f"history {flags}")
    assert words in str(info.value)
    if "status" in flags:
        assert all(status in str(info.value) for status in ("error", "interrupted", "ok", "partial", "truncated"))
    assert [r["status"] for r in line(ip, "history --status ok --limit 1")[0].rows] == ["ok"]


def test_config_shows_sources_and_sets_defaults(ip):
    line(ip, "config endpoint=tgi max_new_tokens=3 stop=xyz")
    rows = {r["setting"]: r for r in line(ip, "config")[0].rows}
    assert rows["endpoint"]["value"] == "tgi" and rows["endpoint"]["source"].startswith("this kernel")
    assert rows["read_timeout"]["value"] == 80.0
    value, _ = cell(ip, "", SEED_PROMPT)  # no endpoint named: the default
    assert value.endpoint == "tgi" and value.text == "Therefore, Peter stayed"
    with pytest.raises(ConfigError, match="Unknown setting"):
        line(ip, "config colour=blue")
    line(ip, "config read_timeout=90")
    assert state(ip).session.settings.read_timeout == 90


def test_traitlets_config(ip):
    ip.run_line_magic("config", "SageMaker.endpoint = 'lmi'")
    assert state(ip).endpoint == "lmi"
    assert cell(ip, "", "x")[0].endpoint == "lmi"
    rows = {r["setting"]: r for r in line(ip, "config")[0].rows}
    assert rows["endpoint"]["source"] == "config (SageMaker.endpoint)"


def test_no_endpoint_anywhere_says_what_to_do(ip):
    with pytest.raises(ConfigError, match="No endpoint given"):
        cell(ip, "")


def test_usage_errors_suggest_the_closest_command(ip):
    with pytest.raises(UsageError, match="Did you mean endpoints"):
        line(ip, "endpoint")
    with pytest.raises(UsageError, match="usage"):
        line(ip, "alias frobnicate")
    with pytest.raises(UsageError):
        cell(ip, "tgi --no-such-flag")


def test_help_texts(ip):
    value, _ = line(ip, "help")
    for command in ("session", "endpoints", "handlers", "alias", "history", "config", "chat", "retry", "panel"):
        assert f"%sagemaker {command}" in repr(value)
    doc = ip.find_cell_magic("sagemaker").__doc__
    for option in ("--max-new-tokens", "--stream", "--docs", "--batch", "--dry-run", "--inference-component"):
        assert option in doc


def test_batch_and_retry_subcommand(ip, local):
    ip.user_ns["questions"] = ["one", "two", "three", "four"]
    local.inject("faulty", Fault("model-error", times=2))
    value, _ = cell(ip, "faulty --batch questions --concurrency 1 --out answers", "Q: {text}")
    assert isinstance(value, BatchResult) and len(value.failed) == 2
    value, _ = line(ip, "retry answers")
    assert value.texts == ["You said: Q: one", "You said: Q: two", "You said: Q: three", "You said: Q: four"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_any_magic_line_parses_or_gives_a_usage_error(ip, text):
    assume("--docs" not in text and "--batch" not in text)  # those read files / variables by design
    with contextlib.suppress(UsageError, SageMakerError):
        ip.run_cell_magic("sagemaker", f"{text} --dry-run --handler tgi", "hi")


def test_the_options_line_is_not_expanded_by_ipython(ip, tmp_path):
    marker = tmp_path / "evaluated"
    ip.user_ns["x"] = "value"
    code = f"{{__import__('pathlib').Path('{marker}').touch()}}"
    value, _ = cell(ip, f"tgi --dry-run --stop {{x}} --stop {code}")
    first, second = json.loads(value.request.body)["parameters"]["stop"]
    assert first == "{x}" and second.startswith("{__import__(")  # sent as typed (quotes are the shell's)
    assert not marker.exists()
