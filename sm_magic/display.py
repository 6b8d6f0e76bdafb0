"""Rendering: live streamed text, tables, preformatted blocks. No AWS or parsing logic here.

In Jupyter a streamed answer is one display that is updated (paced, so the cost stays linear); in a
terminal (no rich frontend) only the new text is printed, as ``print(chunk, end="")`` would. Either
way the finished Result lands in ``Out[N]`` and ``_``, and a stream started from a background thread
draws into the cell that started it (its parent request is captured, as ipywidgets' ``Output`` does).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from sm_magic.result import Result


class Pacer:
    """When to redraw a growing text so that the total cost stays linear in its length.

    Each redraw re-sends the whole text, so redraws are spaced by at least ``min_interval`` and by
    a time proportional to the text's length: the characters sent per second stay bounded.
    """

    def __init__(self, min_interval: float = 0.05, chars_per_second: float = 400_000.0):
        self.min_interval = min_interval
        self.chars_per_second = chars_per_second
        self._last = 0.0

    def due(self, length: int) -> bool:
        now = time.perf_counter()
        if now - self._last >= max(self.min_interval, length / self.chars_per_second):
            self._last = now
            return True
        return False


def rich_frontend(shell: Any = None) -> bool:
    """True where rich output renders (a Jupyter kernel); False in terminal IPython or plain Python.

    Terminal IPython formats ``text/plain`` only; a kernel sends every format to its frontend."""
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    return shell is not None and "text/markdown" in shell.display_formatter.active_types


class LiveText:
    """A streamed answer as it arrives: an updated display in Jupyter, appended text in a terminal.

    Nothing is shown until the first chunk. ``rich=None`` asks :func:`rich_frontend` when first
    needed; ``shell`` defaults to the running one. In a kernel, the request that is running when the
    LiveText is made is its parent: output from another thread still goes to that cell, not to
    whichever cell runs in the foreground. Making one costs next to nothing: most calls never stream.
    """

    def __init__(self, pacer: Pacer | None = None, rich: bool | None = None, shell: Any = None):
        if shell is None:
            from IPython import get_ipython

            shell = get_ipython()
        self.pacer = pacer or Pacer()
        self._rich = rich
        self.chunks: list[str] = []
        self.length = 0
        self.updates = 0
        self.handle: Any = None
        self.shell = shell
        routes = shell is not None and hasattr(shell, "set_thread_parent")  # ipykernel's shell
        self.parent: dict | None = shell.get_parent() if routes else None
        self.thread = threading.current_thread()

    @property
    def rich(self) -> bool:
        if self._rich is None:
            self._rich = rich_frontend(self.shell)
        return self._rich

    def add(self, chunk: str) -> None:
        self.chunks.append(chunk)
        self.length += len(chunk)
        if not self.rich:
            with self.routed():
                sys.stdout.write(chunk)
                sys.stdout.flush()
        elif self.pacer.due(self.length):
            self._show("".join(self.chunks) + " ▌")

    def stopped(self) -> bool:
        return False

    @contextlib.contextmanager
    def routed(self) -> Iterator[None]:
        """Output inside this block goes to the cell that made this LiveText (this thread only)."""
        if not self.parent:
            yield
            return
        tokens = self.shell.set_thread_parent(self.parent)
        try:
            yield
        finally:
            self.shell.reset_thread_parent(tokens)

    def _show(self, text: str) -> None:
        from IPython.display import display

        self.updates += 1
        data = {"text/plain": text, "text/markdown": text}
        with self.routed():
            if self.handle is None:
                self.handle = display(data, raw=True, display_id=True)
            else:
                self.handle.update(data, raw=True)

    def finish(self, result: Result) -> None:
        """Jupyter: the growing text becomes the rendered result. Terminal: end the line, then the footer
        line as the cell's ``Out[N]``. The Result is kept in ``Out[N]`` and ``_`` (cells run in the main
        thread only: a background call has no cell number of its own)."""
        keep = self.shell is not None and self.thread is threading.main_thread() and self.shell.displayhook
        if not self.rich:
            with self.routed():
                if "".join(self.chunks)[-1:] not in ("", "\n"):  # end the answer's last line
                    sys.stdout.write("\n")
                if keep:
                    keep.write_output_prompt()
                sys.stdout.write(result.footer_line() + "\n")
                sys.stdout.flush()
        else:
            self.updates += 1
            data, metadata = result._repr_mimebundle_()
            with self.routed():
                if self.handle is None:
                    from IPython.display import display

                    display(data, metadata=metadata, raw=True)
                else:
                    self.handle.update(data, metadata=metadata, raw=True)
        if keep:
            keep.update_user_ns(result)
            keep.fill_exec_result(result)


class Preformatted:
    """Preformatted text (dry runs, help) shown as a code block in notebooks."""

    def __init__(self, text: str, title: str = ""):
        self.text = text
        self.title = title

    def _repr_markdown_(self) -> str:
        head = f"**{self.title}**\n\n" if self.title else ""
        return f"{head}```\n{self.text}\n```"

    def __repr__(self) -> str:
        return f"{self.title}\n{self.text}" if self.title else self.text
