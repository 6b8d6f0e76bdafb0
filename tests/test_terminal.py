"""A real terminal IPython (prompt_toolkit in a pty) against the local endpoint: what a terminal user sees.

Each cell is typed as a user types it; the bytes the terminal receives while the cell runs are what is
asserted (escape sequences included), so a stream that redraws its whole text would fail here.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator

import pexpect
import pytest

from sm_magic.local import LocalEndpoint

ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[@-Z\\-_])")
PROMPT = r"In \[(\d+)\]:"
STARTED = "\x1b[?2004l"  # prompt_toolkit leaves bracketed-paste mode when it hands the cell over


def screen_text(raw: str) -> str:
    """What the bytes show once escape sequences and carriage returns are dropped."""
    return ANSI.sub("", raw).replace("\r", "")


class Terminal:
    """``ipython`` in a pseudo-terminal, driven by keystrokes."""

    def __init__(self, env: dict[str, str]):
        self.child = pexpect.spawn(sys.executable, ["-m", "IPython", "--no-banner", "--colors=nocolor",
                                                    "--no-confirm-exit"],
                                   env=env, encoding="utf-8", timeout=60, dimensions=(50, 160))
        self.child.expect(PROMPT)

    def run(self, first: str, *body: str) -> str:
        """Type a cell (a line, or a cell magic with its body) and return the bytes it printed."""
        child = self.child
        child.send(first + "\r")
        for line in body:
            child.expect(r"\.\.\.:")
            child.send(line + "\r")
        if body:  # a cell magic ends with a blank line: press Enter until IPython takes the cell
            for _ in range(4):
                if child.expect_exact([STARTED, pexpect.TIMEOUT], timeout=1) == 0:
                    break
                child.send("\r")
            else:
                raise AssertionError(f"IPython did not run the cell: {child.before!r}")
        else:
            child.expect_exact(STARTED)
        child.expect(PROMPT)
        return child.before.rsplit("\x1b[?2004h", 1)[0]  # up to the next prompt's set-up

    def close(self) -> None:
        self.child.sendline("exit")
        self.child.expect(pexpect.EOF)
        self.child.close()


@pytest.fixture(scope="module")
def terminal(local: LocalEndpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Terminal]:
    home = tmp_path_factory.mktemp("terminal")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SM_MAGIC_", "JPY_"))}
    env.update(IPYTHONDIR=str(home / "ipython"), SM_MAGIC_HOME=str(home / "sm_magic"), TERM="xterm",
               PROMPT_TOOLKIT_NO_CPR="1")  # no cursor-position queries: nobody answers them in a pty
    term = Terminal(env)
    term.run("%load_ext sm_magic")
    term.run(f"%sagemaker session --local {local.url}")
    yield term
    term.close()


def test_stream_appends_only_new_text_and_leaves_the_result_in_out(terminal):
    raw = terminal.run("%%sagemaker trickle --stream --max-new-tokens 200", "Tell me a long story")
    cell = terminal.child.match.group(1)  # the prompt after the stream: the stream's number is one less
    number = int(cell) - 1
    facts = screen_text(terminal.run(f"r = Out[{number}]; print(type(r).__name__, r.streamed, _ is r, "
                                     f"len(r.text.encode()), r.text)"))
    kind, streamed, underscore, size, answer = facts.strip().split(" ", 4)
    assert (kind, streamed, underscore) == ("Result", "True", "True")
    assert int(size) > 800  # 200 tokens arrived one by one: a whole-text redraw would repeat them
    assert len(raw.encode()) <= 1.5 * int(size), f"{len(raw.encode())} bytes on screen for {size}"
    shown = screen_text(raw)
    assert shown.count(answer) == 1
    assert re.search(rf"Out\[{number}\]: \[trickle · lmi · \d+ ms · 200 tokens · ok\]", shown)


def test_a_call_shows_its_answer_and_one_footer_line(terminal):
    shown = screen_text(terminal.run("%%sagemaker tgi", "Is the footer there?"))
    lines = [line for line in shown.splitlines() if line.strip()]
    assert lines[-2].endswith("You said: Is the footer there?")
    assert re.fullmatch(r"\[tgi · tgi · \d+ ms · ok\]", lines[-1])


def test_batch_shows_a_numbered_table_of_answers_and_errors(terminal, local):
    from sm_magic.local import Fault

    terminal.run("qs = [f'question {i}' for i in range(25)]")
    local.inject("faulty", Fault("model-error", times=1))
    shown = screen_text(terminal.run("%%sagemaker faulty --batch qs --concurrency 1", "Q: {text}"))
    local.clear_faults()
    assert "Batch: 24/25 ok · 1 failed" in shown
    assert re.search(r"^0\s+ModelError\s+.*\S", shown, re.MULTILINE)  # the error, in its row
    assert re.search(r"^19\s+ok\s+You said: Q: question 19\s+\d+$", shown, re.MULTILINE)
    assert "question 20" not in shown and "... 5 more" in shown
    assert "<BatchResult" not in shown


def test_panel_in_a_terminal_says_it_needs_jupyter(terminal):
    shown = screen_text(terminal.run("%sagemaker panel"))
    assert "The panel is a Jupyter widget" in shown and "%sagemaker help" in shown
    assert "VBox" not in shown


def test_prompt_on_the_line_magic_points_at_the_cell_magic(terminal):
    shown = screen_text(terminal.run("%sagemaker endpoint-name How long was Elizabeth hospitalized"))
    assert "Prompts go in a cell: %%sagemaker endpoint-name" in shown
