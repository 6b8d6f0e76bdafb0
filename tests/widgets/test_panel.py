"""The panel in-process: every control and callback, errors shown, one state with the magics."""

from __future__ import annotations

import json
import time
import warnings
from datetime import UTC, datetime

import pytest

from sm_magic.widgets.panel import Panel
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET, FAKE_TOKEN, SEED_CONTEXT

EXPECTED = "Therefore, Peter stayed with her at the hospital for 3 days without leaving."


@pytest.fixture
def panel(ip, local):
    p = Panel(ip.user_ns["_sm_magics"].runner, ip)
    p.local_button.click()
    p.connect.click()
    return p


def run(panel: Panel, button=None) -> None:
    (button or panel.run).click()
    panel.wait()


def test_magic_opens_the_panel(ip):
    widget = ip.run_line_magic("sagemaker", "panel")
    assert "sm-panel" in widget._dom_classes
    assert [widget.children[0].get_title(i) for i in range(5)] == ["Session", "Endpoint", "Parameters", "Prompt",
                                                                   "History"]


def test_connect_to_the_local_endpoint_shows_the_identity(panel, local):
    assert panel.endpoint_url.value == local.url
    assert "account <b>000000000000</b>" in panel.identity.value
    assert panel.state.session.settings.endpoint_url == local.url


def test_connect_error_is_explained_in_the_panel(panel):
    panel.endpoint_url.value = "http://127.0.0.1:9"
    panel.connect.click()
    assert "Could not reach" in panel.identity.value


def test_static_keys_are_cleared_after_connect_and_never_shown(panel, local):
    panel._local = False
    panel.region.value = "us-east-1"
    for field, secret in ((panel.access_key, FAKE_KEY_ID), (panel.secret_key, FAKE_SECRET),
                          (panel.session_token, FAKE_TOKEN)):
        field._handle_custom_msg({"secret": secret}, [])  # what the browser sends on Enter
    panel.connect.click()
    assert not hasattr(panel.secret_key, "value") and panel.secret_key.placeholder == "optional"  # used, cleared
    state = json.dumps([w.get_state() for w in panel.widget.children[0].children[0].children], default=str)
    shown = state + panel.identity.value
    for secret in (FAKE_SECRET, FAKE_TOKEN, FAKE_KEY_ID):
        assert secret not in shown


def test_refresh_lists_endpoints_and_alias_picker_sets_the_endpoint(panel, ip):
    panel.refresh.click()
    assert "tgi" in panel.endpoint.options
    assert "tgi — InService" in panel.endpoint_list.value
    ip.run_line_magic("sagemaker", "alias add qa lmi --max-new-tokens 5")
    panel.state.session = panel.state.session  # refresh choices as a reconnect would
    panel._refresh_choices()
    panel.alias.value = "qa"
    assert panel.state.endpoint == "qa" and panel.endpoint.value == "qa"


def test_parameters_are_validated_as_typed(panel):
    panel.fields["temperature"].value = "0.5"
    panel.fields["max_new_tokens"].value = "12"
    panel.fields["top_p"].value = "0.9"
    panel.fields["stop"].value = "END\nSTOP"
    panel.fields["model_kwargs"].value = '{"do_sample": true}'
    s = panel.state
    assert (s.temperature, s.max_new_tokens, s.top_p, s.stop, s.model_kwargs) == (
        0.5, 12, 0.9, ["END", "STOP"], {"do_sample": True})
    panel.fields["max_new_tokens"].value = "twelve"
    assert "max_new_tokens must be an integer" in panel.param_errors.value
    assert s.max_new_tokens == 12  # unchanged while invalid
    panel.fields["max_new_tokens"].value = "7"
    panel.fields["model_kwargs"].value = "[1, 2]"
    assert "model_kwargs must be a JSON object" in panel.param_errors.value


def test_run_with_interpolation_shows_answer_footer_and_history(panel, ip):
    ip.user_ns["context"] = SEED_CONTEXT
    panel.endpoint.value = "tgi"
    panel.prompt.value = "{context}\nQuestion: How long was Elizabeth hospitalized?\nAnswer:"
    run(panel)
    assert EXPECTED in panel.answer.value
    assert "endpoint <code>tgi</code>" in panel.footer.value and " ms" in panel.footer.value
    assert not panel.run.disabled and panel.busy.layout.visibility == "hidden"
    assert "tgi" in panel.history.options[0][0] and "ok" in panel.history.options[0][0]
    assert panel.detected.value == "auto → <b>tgi</b>"  # what auto detection chose


def test_streaming_run(panel):
    panel.endpoint.value = "lmi"
    panel.handler.value = "lmi"
    panel.stream.value = True
    panel.prompt.value = SEED_CONTEXT + "\nQuestion: How long was Elizabeth hospitalized?\nAnswer:"
    run(panel)
    assert EXPECTED in panel.answer.value and "tokens" in panel.footer.value
    assert panel.runner.last.streamed


def test_stop_cancels_a_stream_and_keeps_what_arrived(panel):
    panel.endpoint.value = "trickle"
    panel.stream.value = True
    panel.fields["max_new_tokens"].value = "2000"
    panel.prompt.value = "go"
    panel.run.click()
    time.sleep(0.4)
    assert panel.run.disabled  # busy while running
    panel.stop.click()
    panel.wait()
    assert panel.runner.last.interrupted and "interrupted" in panel.footer.value
    assert 0 < len(panel.runner.last.text.split()) < 2000


def test_dry_run_shows_the_request(panel, local):
    panel.endpoint.value = "tgi"
    panel.handler.value = "tgi"
    panel.fields["temperature"].value = "0.3"
    panel.prompt.value = "Hello"
    before = sum(local.calls.values())
    run(panel, panel.dry_run)
    assert "POST /endpoints/tgi/invocations" in panel.answer.value and "temperature" in panel.answer.value
    assert sum(local.calls.values()) == before


def test_documents_from_the_namespace_and_uploads(panel, ip):
    ip.user_ns["notes"] = [SEED_CONTEXT]
    panel._refresh_choices()
    panel.endpoint.value = "tgi"
    panel.docs.value = "notes"
    panel.qa_mode.value = "stuff"
    panel.prompt.value = "How long was Elizabeth hospitalized?"
    run(panel)
    assert "3 days" in panel.answer.value and "sources: doc0" in panel.footer.value
    run(panel, panel.dry_run)  # the plan, nothing sent
    assert "mode: stuff" in panel.answer.value and "How long was Elizabeth hospitalized?" in panel.answer.value
    panel.docs.value = ""
    panel.upload.value = ({"name": "notes.md", "type": "text/markdown", "size": len(SEED_CONTEXT),
                           "content": memoryview(SEED_CONTEXT.encode()), "last_modified": datetime.now(UTC)},)
    run(panel)
    assert "3 days" in panel.answer.value


def test_retrieval_from_the_panel(panel, ip, tmp_path):
    notes = [f"Memo {i}: the committee discussed budgets again." for i in range(40)]
    notes[23] = "The spare key is kept in the blue tin box under the lighthouse stairs."
    ip.user_ns["memos"] = notes
    panel._refresh_choices()
    panel.endpoint.value = "tgi"
    panel.docs.value = "memos"
    panel.qa_mode.value = "retrieve"
    panel.fields["embeddings"].value = "tei-embedding"
    panel.prompt.value = "Where is the spare key kept?"
    run(panel, panel.dry_run)
    assert "mode: retrieve" in panel.answer.value and "Question: Where is the spare key kept?" in panel.answer.value
    run(panel)
    assert panel.runner.last.data["mode"] == "retrieve" and "sources:" in panel.footer.value


def test_errors_are_shown_in_the_panel(panel):
    panel.endpoint.value = "missing-endpoint"
    panel.prompt.value = "hi"
    run(panel)
    assert "EndpointNotFound" in panel.status.value and "%sagemaker endpoints" in panel.status.value
    panel.endpoint.value = "tgi"
    panel.prompt.value = "{undefined_name}"
    run(panel)
    assert "{undefined_name}" in panel.status.value
    panel.prompt.value = "fine"
    run(panel)
    assert panel.status.value == "" and "You said: fine" in panel.answer.value


def test_history_restore_brings_back_prompt_and_settings(panel):
    panel.endpoint.value = "tgi"
    panel.fields["max_new_tokens"].value = "9"
    panel.prompt.value = "first prompt"
    run(panel)
    panel.endpoint.value = "lmi"
    panel.fields["max_new_tokens"].value = ""
    panel.prompt.value = "something else"
    panel.history.value = panel.history.options[0][1]
    panel.restore.click()
    assert panel.prompt.value == "first prompt"
    assert panel.state.endpoint == "tgi" and panel.fields["max_new_tokens"].value == "9"


def test_panel_and_magics_share_one_state(panel, ip):
    panel.fields["temperature"].value = "0.25"
    panel.endpoint.value = "tgi"
    result = ip.run_cell_magic("sagemaker", "--dry-run --handler tgi", "Hi")
    assert result.endpoint == "tgi" and json.loads(result.request.body)["parameters"]["temperature"] == 0.25
    ip.run_line_magic("sagemaker", "config endpoint=lmi max_new_tokens=4")
    assert panel.endpoint.value == "lmi" and panel.fields["max_new_tokens"].value == "4"
    ip.run_cell_magic("sagemaker", "tgi --handler tgi", "from the magic")
    panel.wait()  # the history list is redrawn at a paced rate
    assert "from the magic" in panel.history.options[0][0]


def test_a_panel_run_sees_what_another_kernel_wrote_to_the_aliases_file(panel, ip, tmp_path):
    ip.run_line_magic("sagemaker", "alias add short tgi --max-new-tokens 3")
    panel.endpoint.value = "short"
    panel.prompt.value = "hi"
    run(panel)
    assert panel.runner.last.params["max_new_tokens"] == 3
    ini = tmp_path / "endpoints.ini"
    ini.write_text(ini.read_text().replace("= 3", "= 8"))  # as another kernel would, within the same second
    run(panel)
    assert panel.runner.last.params["max_new_tokens"] == 8


def test_restore_brings_back_every_setting_in_the_state_and_the_fields(panel, ip):
    ip.run_cell_magic("sagemaker", "tgi --handler tgi --temperature 0.3 --max-new-tokens 7 --seed 5 "
                                   "--custom-attributes a=b --stop END --stream", "hi")
    assert not panel.stream.value  # --stream was this cell's, not a setting
    panel.fields["temperature"].value = "0.9"
    panel.fields["seed"].value = "1"
    panel.fields["stop"].value = "OTHER"
    panel.wait()
    panel.history.value = panel.history.options[0][1]
    panel.restore.click()
    s = panel.state
    assert (s.temperature, s.max_new_tokens, s.seed, s.custom_attributes, s.stop) == (0.3, 7, 5, "a=b", ["END"])
    assert s.stream and panel.stream.value
    shown = {name: panel.fields[name].value for name in ("temperature", "max_new_tokens", "seed",
                                                          "custom_attributes", "stop")}
    assert shown == {"temperature": "0.3", "max_new_tokens": "7", "seed": "5", "custom_attributes": "a=b",
                     "stop": "END"}
    run(panel)  # and the next run sends them
    assert panel.runner.last.params == {"temperature": 0.3, "max_new_tokens": 7, "seed": 5, "stop": ["END"]}


def test_restoring_a_call_made_through_an_alias_runs_through_the_alias_again(panel, ip):
    ip.run_line_magic("sagemaker", "alias add qa tgi --region eu-west-3 --max-new-tokens 4")
    ip.run_cell_magic("sagemaker", "qa", "hello")
    panel.endpoint.value = "lmi"
    panel.prompt.value = "something else"
    panel.wait()
    panel.history.value = panel.history.options[0][1]
    panel.restore.click()
    assert panel.state.endpoint == "qa" and panel.endpoint.value == "qa"
    run(panel)
    last = panel.runner.last
    assert (last.endpoint, last.text, last.params["max_new_tokens"]) == ("tgi", "You said: hello", 4)
    calls = panel.runner.journal.history(limit=2)
    assert [(c.endpoint, c.region) for c in calls] == [("tgi", "eu-west-3")] * 2  # the alias's region, both times


def test_restore_leaves_an_alias_its_settings_and_auto_its_choice(panel, ip):
    ip.run_line_magic("sagemaker", "alias add myal lmi --handler lmi --temperature 0.3 --max-new-tokens 7")
    ip.run_cell_magic("sagemaker", "myal --seed 3", "via alias")
    panel.wait()
    panel.history.value = panel.history.options[0][1]
    panel.restore.click()
    s = panel.state
    assert (s.endpoint, s.handler, s.seed) == ("myal", "auto", 3)  # the cell's own flag comes back
    assert (s.temperature, s.max_new_tokens) == (None, None)  # the alias's stay the alias's
    other = ip.run_cell_magic("sagemaker", "tgi --dry-run", "after restore")
    assert other.handler == "tgi" and json.loads(other.request.body)["parameters"] == {"seed": 3}
    run(panel)  # the restored call still goes through the alias, with its settings
    assert panel.runner.last.handler == "lmi" and panel.runner.last.params == {
        "temperature": 0.3, "max_new_tokens": 7, "seed": 3}


def test_restore_refuses_a_batch_and_says_when_a_prompt_was_cut(panel, ip):
    ip.user_ns["items"] = ["x", "y"]
    ip.run_cell_magic("sagemaker", "tgi --batch items --yes", "Q {text}")
    panel.prompt.value = "kept"
    panel.wait()
    panel.history.value = panel.history.options[0][1]
    panel.restore.click()
    assert panel.prompt.value == "kept" and "A batch cannot be restored here" in panel.status.value
    ip.run_cell_magic("sagemaker", "tgi", "L" * 5000 + "END")
    panel.wait()
    panel.history.value = panel.history.options[0][1]
    panel.restore.click()
    assert panel.prompt.value == "L" * 4000
    assert "Only the first 4,000 characters of this prompt were kept (1,003 more were sent)" in panel.status.value


def test_restoring_a_call_whose_alias_broke_since_brings_back_its_name_and_run_says_what_is_wrong(panel, ip, tmp_path):
    ip.run_line_magic("sagemaker", "alias add myal lmi --max-new-tokens 7")
    ip.run_cell_magic("sagemaker", "myal", "via alias")
    ini = tmp_path / "endpoints.ini"
    ini.write_text(ini.read_text().replace("max_new_tokens = 7", "max_new_tokens = many"))  # edited by hand
    panel.wait()
    panel.history.value = panel.history.options[0][1]
    panel.state.aliases.new_cell()  # as the next cell would: the file is read again
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the damaged alias is reported once, when read
        panel.restore.click()
    assert panel.state.endpoint == "myal" and panel.prompt.value == "via alias"
    run(panel)
    assert "alias [myal]: max_new_tokens must be an integer, not &#x27;many&#x27;" in panel.status.value
