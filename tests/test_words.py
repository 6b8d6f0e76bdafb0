"""The words users read: help, usage errors with a did-you-mean, handler descriptions, history columns."""

from __future__ import annotations

import re

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from sm_magic.commands import COMMANDS
from sm_magic.handlers.presets import PRESETS
from sm_magic.interpolate import InterpolationError, interpolate


def line(ip, text: str):
    with capture_output():
        return ip.run_line_magic("sagemaker", text)


def cell(ip, first: str, body: str = "hi"):
    with capture_output():
        return ip.run_cell_magic("sagemaker", first, body)


# -- a prompt on the line magic ----------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["endpoint-name How long was Elizabeth hospitalized",  # close to `endpoints`
                                  "my-llm What is the capital of France"])
def test_a_prompt_on_the_line_magic_says_prompts_go_in_a_cell(ip, text):
    name = text.split()[0]
    with pytest.raises(UsageError) as info:
        line(ip, text)
    message = str(info.value)
    assert f"Prompts go in a cell: %%sagemaker {name} on the first line, the prompt on the lines below." in message
    assert "Did you mean" not in message


def test_a_misspelt_command_alone_gets_a_did_you_mean(ip):
    with pytest.raises(UsageError, match=r"Unknown %sagemaker command 'histroy'\. Did you mean history\?"):
        line(ip, "histroy")


def test_prompt_words_after_a_misspelt_command_mention_both(ip):
    with pytest.raises(UsageError) as info:
        line(ip, "endpoint describe tgi")
    assert "Prompts go in a cell" in str(info.value) and "the command endpoints" in str(info.value)


# -- cell options ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("typed", "meant"), [("--temprature 0.2", "--temperature"),
                                              ("--max-new-token 5", "--max-new-tokens"),
                                              ("--strem", "--stream"), ("--dryrun", "--dry-run")])
def test_a_misspelt_flag_gets_a_did_you_mean(ip, typed, meant):
    with pytest.raises(UsageError, match=rf"^Unknown option {typed.split()[0]}\. Did you mean {meant}\?$"):
        cell(ip, f"tgi {typed}")


def test_a_flag_like_nothing_points_at_the_help(ip):
    with pytest.raises(UsageError, match=r"Unknown option --zzzzzz\. See %%sagemaker\? for the options\."):
        cell(ip, "tgi --zzzzzz")


@pytest.mark.parametrize("kwargs", ['{bad json}', '{"do_sample": true, "top_k": 5}', "{temperature:0.2}"])
def test_unquoted_model_kwargs_say_minus_m_takes_one_quoted_json_object(ip, kwargs):
    with pytest.raises(UsageError) as info:
        cell(ip, f"tgi --dry-run -m {kwargs}")
    assert "Give one quoted JSON object" in str(info.value) and "-m '{" in str(info.value)


def test_quoted_model_kwargs_still_work(ip):
    result = cell(ip, """tgi --dry-run -m '{"do_sample": true, "top_k": 5}'""")
    assert b'"top_k": 5' in result.request.body


# -- prompt variables --------------------------------------------------------------------------------------
def test_a_misspelt_prompt_variable_gets_a_did_you_mean(ip):
    ip.user_ns["context"] = "Peter stayed 3 days."
    with pytest.raises(InterpolationError) as info:
        cell(ip, "tgi", "{contxt}\nQuestion: how long?")
    assert "The prompt refers to {contxt}, not defined in the notebook. Did you mean {context}?" in str(info.value)


def test_several_misspelt_variables_are_matched_one_by_one():
    with pytest.raises(InterpolationError) as info:
        interpolate("{contxt} {questoin} {nothing_like_it}", {"context": 1, "question": 2, "_hidden": 3})
    message = str(info.value)
    assert "Did you mean {context} for {contxt}, {question} for {questoin}?" in message
    assert "{nothing_like_it}" in message.split("Did you mean")[0]


def test_no_did_you_mean_when_nothing_is_close():
    with pytest.raises(InterpolationError) as info:
        interpolate("{question}", {"context": 1, "_question": 2})  # private names are never suggested
    assert "Did you mean" not in str(info.value)


# -- help ----------------------------------------------------------------------------------------------------
def test_help_gives_each_command_its_usage_and_one_sentence(ip):
    text = repr(line(ip, "help"))
    lines = text.splitlines()
    for name, sentence in COMMANDS.items():
        usage = next(i for i, shown in enumerate(lines) if shown.startswith(f"%sagemaker {name}"))
        assert lines[usage + 1].strip() == sentence
        assert sentence.endswith(".") and sentence.count(". ") <= 1  # one sentence (a second one only as a tip)
    assert "prompts go in a cell: %%sagemaker ENDPOINT" in lines[0]


def test_cell_magic_help_has_the_cell_usage_and_grouped_options(ip):
    with capture_output() as captured:
        ip.run_cell("%%sagemaker?")
    shown = captured.stdout
    assert "%%sagemaker [VAR <<] [ENDPOINT] [options]" in shown
    assert "%sagemaker [-o VAR]" not in shown and "``" not in shown
    headings = re.findall(r"^(\S[^\n]*):$", shown, re.MULTILINE)
    for heading in ("the call", "model parameters", "invoke headers (SageMaker)", "document QA (--docs)",
                    "batches (--batch)", "output"):
        assert heading in headings
    assert shown.index("model parameters:") < shown.index("--temperature") < shown.index("invoke headers")


# -- handlers and history ------------------------------------------------------------------------------------
def test_every_preset_is_described_in_plain_words(ip):
    rows = {row["name"]: row for row in line(ip, "handlers").rows}
    for name in PRESETS:
        about = rows[name]["about"]
        assert "`" not in about and ":class:" not in about and about != name
        assert len(about.split()) >= 6
    assert "LMI" in rows["lmi-chat"]["about"] and "messages" in rows["lmi-chat"]["about"]
    assert '"inputs"' in rows["tgi"]["about"] and "generated_text" in rows["tgi"]["about"]


def test_a_registered_handler_without_a_docstring_says_so(ip):
    class Shout:
        content_type = accepts = "application/json"

        def transform_input(self, prompt, kwargs):
            return b"{}"

        def transform_output(self, output):
            return "x"

    ip.user_ns["shout"] = Shout()
    line(ip, "handlers register loud shout")
    rows = {row["name"]: row for row in line(ip, "handlers").rows}
    assert rows["loud"]["about"] == "Shout (no description)"


def test_history_tokens_column_is_filled_when_the_container_reports_usage(ip):
    cell(ip, "tgi-messages", "chat completions report usage")
    cell(ip, """tgi -m '{"details": true}'""", "TGI reports generated tokens when asked for details")
    rows = line(ip, "history").rows[-2:]
    assert [row["tokens"] for row in rows] == [len("You said: chat completions report usage".split()),
                                               len("You said: TGI reports generated tokens when asked for "
                                                   "details".split())]
