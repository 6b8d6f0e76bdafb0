"""What results look like: text reprs (terminal), live streams in both frontends, and where a background
stream's output goes in a real kernel."""

from __future__ import annotations

import os
import re
from collections import defaultdict

import pytest
from IPython.utils.capture import capture_output

from sm_magic.display import LiveText
from sm_magic.local import Fault, LocalEndpoint
from sm_magic.result import Result
from tests.conftest import SEED_CONTEXT

QUESTION = "How long was Elizabeth hospitalized?"


@pytest.fixture
def terminal_shell(ip):
    """The in-process shell as a terminal sees it: text/plain only."""
    active = ip.display_formatter.active_types
    ip.display_formatter.active_types = ["text/plain"]
    yield ip
    ip.display_formatter.active_types = active


# -- Result ---------------------------------------------------------------------------------------------
def test_result_text_is_the_answer_then_one_footer_line(ip):
    result = ip.run_cell_magic("sagemaker", "tgi-messages", "hello")
    text = result._repr_mimebundle_()[0]["text/plain"]
    answer, footer = text.split("\n")
    assert answer == "You said: hello" and repr(result) == text
    assert re.fullmatch(r"\[tgi-messages · tgi-messages · \d+ ms · \d+ tokens · ok\]", footer)
    assert footer == result.footer_line()


@pytest.mark.parametrize("flag", ["interrupted", "truncated", "partial"])
def test_result_footer_says_when_a_result_is_not_whole(flag):
    result = Result("Half an ans", "ep", "lmi", latency=0.25, usage={"completion_tokens": 3}, **{flag: True})
    assert repr(result) == f"Half an ans\n[ep · lmi · 250 ms · 3 tokens · {flag}]"


def test_qa_result_shows_the_answer_and_its_sources(ip):
    ip.user_ns["memo"] = SEED_CONTEXT
    with capture_output():
        result = ip.run_cell_magic("sagemaker", "tgi --docs memo --max-new-tokens 64", QUESTION)
    text = repr(result)
    assert text.startswith(result.text + "\nSources:\n  1. ")
    assert "Peter and Elizabeth took a taxi" in text.splitlines()[2]  # the chunk's first words
    assert re.search(r"\[tgi · tgi · \d+ ms · ok · 1 source\]$", text)


def test_many_sources_are_listed_up_to_ten():
    sources = [{"source": f"doc{i}.md", "chunk": i, "text": "word " * 100} for i in range(14)]
    text = repr(Result("The answer.", "ep", "tgi", sources=sources))
    listed = [line for line in text.splitlines() if re.match(r"  \d+\. doc", line)]
    assert len(listed) == 10 and all(len(line) < 110 and line.endswith("…") for line in listed)
    assert "  ... 4 more (all: .sources)" in text and text.endswith("· 14 sources]")


def test_dry_run_text_is_the_request_and_says_nothing_was_sent(ip):
    result = ip.run_cell_magic("sagemaker", "tgi --dry-run", "hello")
    text = repr(result)
    assert text.startswith("POST /endpoints/tgi/invocations") and '"inputs": "hello"' in text
    assert text.endswith("[tgi · tgi · nothing sent · dry run]")


# -- BatchResult -----------------------------------------------------------------------------------------
def test_batch_text_is_a_numbered_table_cut_to_twenty_rows(ip, local):
    ip.user_ns["items"] = [f"item {i}" for i in range(30)]
    ip.user_ns["items"][1] = "A long item\nover lines " + "word " * 60
    local.inject("faulty", Fault("model-error", times=1))
    with capture_output():
        batch = ip.run_cell_magic("sagemaker", "faulty --batch items --concurrency 1", "{text}")
    lines = repr(batch).splitlines()
    assert lines[0].startswith("Batch: 29/30 ok · 1 failed")
    assert re.match(r"#\s+status\s+answer\s+ms$", lines[1])
    rows = lines[2:22]
    assert [int(row.split()[0]) for row in rows] == list(range(20))
    assert re.match(r"0\s+ModelError\s+\S", rows[0])  # the error's own words, in its row
    assert re.match(r"1\s+ok\s+You said: over lines word word .*…\s+\d+$", rows[1])  # one line, cut
    assert max(len(row) for row in rows) < 110
    assert re.match(r"19\s+ok\s+You said: item 19\s+\d+$", rows[19])
    assert lines[22] == "... 10 more (every answer: .texts; every error: .failed)"
    assert len(lines) == 23 and "item 20" not in repr(batch)


def test_small_batch_has_no_more_line_and_markdown_matches(ip):
    ip.user_ns["items"] = ["one", "two"]
    with capture_output():
        batch = ip.run_cell_magic("sagemaker", "tgi --batch items", "Q {text}")
    text = repr(batch)
    assert "more" not in text and "You said: Q two" in text.splitlines()[3]
    assert "| 1 | ok | You said: Q two |" in batch._repr_markdown_()


# -- live streams --------------------------------------------------------------------------------------------
def test_terminal_stream_prints_each_chunk_once_then_the_footer_as_out(terminal_shell):
    ip = terminal_shell
    with capture_output() as captured:
        outcome = ip.run_cell("%%sagemaker trickle --stream --max-new-tokens 40\nstory", store_history=True)
    result = outcome.result
    assert isinstance(result, Result) and ip.user_ns["_"] is result
    assert ip.user_ns["Out"][outcome.execution_count] is result
    out = captured.stdout
    assert out.startswith(result.text + "\n") and out.count(result.text.split()[-1]) == 1
    assert out.endswith(f"Out[{outcome.execution_count}]: {result.footer_line()}\n")


def test_jupyter_stream_is_one_display_updated_then_rendered(ip):
    with capture_output() as captured:
        outcome = ip.run_cell("%%sagemaker trickle --stream --max-new-tokens 40\nstory", store_history=True)
    assert captured.stdout == ""  # nothing appended as text
    assert ip.user_ns["_"] is outcome.result
    markdown = [o.data.get("text/markdown", "") for o in captured.outputs]
    assert markdown and markdown[-1].startswith(outcome.result.text) and "<sub>" in markdown[-1]


def test_live_text_without_chunks_shows_only_the_result(terminal_shell):
    live = LiveText(rich=False)
    with capture_output() as captured:
        live.finish(Result("", "ep", "tgi"))
    assert captured.stdout.endswith("[ep · tgi · 0 ms · ok]\n") and not captured.stdout.startswith("\n")


# -- a real kernel: a background stream's output goes to the cell that started it ----------------------------
def test_background_stream_draws_into_the_cell_that_started_it(local: LocalEndpoint, sm_magic_home):
    from jupyter_client.manager import start_new_kernel

    env = {**os.environ, "SM_MAGIC_HOME": str(sm_magic_home)}
    manager, client = start_new_kernel(kernel_name="python3", env=env,
                                       extra_arguments=["--HistoryManager.enabled=False"])
    try:
        warm = f"%load_ext sm_magic\n%sagemaker session --local {local.url}"
        client.execute_interactive(warm, timeout=60, output_hook=lambda msg: None)
        client.execute_interactive("%%sagemaker tgi\nwarm up", timeout=60, output_hook=lambda msg: None)
        # The stream captures the request running when its call begins: the starting cell gives it a moment.
        started = client.execute(
            "import threading, time\n"
            "worker = threading.Thread(target=get_ipython().run_cell_magic,\n"
            "                          args=('sagemaker', 'trickle --stream --max-new-tokens 150', 'story'))\n"
            "worker.start()\n"
            "time.sleep(0.3)")
        foreground = client.execute("import time\ntime.sleep(1.0)\nprint('foreground cell')")
        joined = client.execute("worker.join()\nprint('joined')")
        by_parent: dict[str, list[dict]] = defaultdict(list)
        idle: set[str] = set()
        while joined not in idle:
            msg = client.get_iopub_msg(timeout=60)
            parent = msg["parent_header"].get("msg_id", "")
            by_parent[parent].append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                idle.add(parent)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)

    def answers(parent: str) -> list[dict]:
        return [m for m in by_parent[parent] if m["msg_type"] in ("display_data", "update_display_data")
                and "You said" in m["content"]["data"].get("text/plain", "")]

    assert len(answers(started)) >= 2  # the first draw and at least the final render
    assert answers(foreground) == [] and answers(joined) == []
    last = answers(started)[-1]["content"]["data"]["text/markdown"]
    assert "150 tokens" in last and "<sub>" in last  # the finished answer with its footer, in its own cell
    assert any(m["msg_type"] == "stream" and "foreground cell" in m["content"]["text"] for m in by_parent[foreground])
