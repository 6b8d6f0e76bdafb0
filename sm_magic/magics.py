"""``%%sagemaker`` (the cell is the prompt) and ``%sagemaker COMMAND``: a thin view.

The cell magic parses its line (flags generated from :mod:`sm_magic.params`), looks names up in the
notebook, hands a :class:`~sm_magic.resolve.CallSpec` to the shell's :class:`~sm_magic.runner.Runner`
and shows what comes back. Commands live in :mod:`sm_magic.commands`. Errors render as one paragraph
(their ``explain()``) and are re-raised so "Run all" stops.
"""

from __future__ import annotations

import builtins
import difflib
import functools
import keyword
import re
import unicodedata
from pathlib import Path
from typing import Any

from IPython import get_ipython
from IPython.core.error import UsageError
from IPython.core.magic import (
    MAGIC_NO_VAR_EXPAND_ATTR,
    MAGIC_OUTPUT_CAN_BE_SILENCED,
    Magics,
    line_cell_magic,
    magics_class,
    no_var_expand,
)

from sm_magic.display import LiveText, Preformatted
from sm_magic.errors import EncodingError, SageMakerError
from sm_magic.interpolate import field_names, interpolate
from sm_magic.params import PARAMS, SECTIONS
from sm_magic.resolve import CallSpec, SageMaker
from sm_magic.result import Result

_TARGET = re.compile(r"^\s*([A-Za-z_]\w*)\s*<<\s*(.*)$")
CELL_USAGE = "%%sagemaker [VAR <<] [ENDPOINT] [options]"
RESERVED = {"In", "Out", "get_ipython", "exit", "quit", "display", "_", "__", "___"}
_SURROGATES = re.compile("[\ud800-\udfff]")
IPYTHON_NAMES = re.compile(r"^_(oh|ih|dh|i+|i?\d+)$")  # _oh, _ih, _i, _ii, _i7, _7: IPython's history


@functools.cache
def cell_parser() -> Any:
    """The cell magic's parser, in sections (built on first use: %load_ext stays cheap)."""
    from IPython.core.magic_arguments import MagicArgumentParser

    parser = MagicArgumentParser(prog="%%sagemaker", usage=CELL_USAGE, add_help=False)
    parser.add_argument("endpoint", nargs="?", help="endpoint name or saved alias (default: the configured one)")
    for section, title in SECTIONS.items():
        group = parser.add_argument_group(title)
        for param in PARAMS:
            if param.flag and param.section == section:
                param.add_to(group)
                if param.name == "stream":
                    group.add_argument("--no-stream", dest="stream", action="store_false",
                                       help="do not stream (overrides the default)")
    return parser


def option_reference() -> str:
    """The README's option reference, generated from the parsers (a test keeps it in sync)."""
    from sm_magic.commands import help_text

    rows = ["| option | meaning |", "|---|---|"]
    for action in cell_parser()._actions:
        flags = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest.upper()}`"
        meaning = (action.help or "").replace("%%", "%").replace("|", "\\|")  # argparse's %% is a %
        if action.choices:
            meaning += f" ({', '.join(map(str, action.choices))})"
        rows.append(f"| {flags} | {meaning} |")
    return "\n".join(rows) + "\n\n```\n" + help_text() + "\n```"


_LINE_WITH_WORDS = re.compile(r"^\s*%sagemaker\s+(\S.*?\?+)\s*$")


def question_marks_stay_in_the_line(lines: list[str]) -> list[str]:
    """A ``%sagemaker`` line with words ending in ``?`` goes to the magic (which says prompts go in a
    cell), not to IPython's help syntax."""
    if len(lines) == 1 and (match := _LINE_WITH_WORDS.match(lines[0])):
        return [f"get_ipython().run_line_magic('sagemaker', {match.group(1)!r})\n"]
    return lines


def _argv(line: str) -> list[str]:
    """Shell-like words: quotes and spaces survive (JSON in -m, stop sequences)."""
    from IPython.utils.process import arg_split

    try:
        return arg_split(line, posix=True)
    except ValueError as e:
        raise UsageError(f"Could not read the options ({e}): {line!r}. Close the quote, or escape it.") from None


def cell_values(line: str) -> dict[str, Any]:
    """The flags given on a cell's line, by parameter name (parsed once per distinct line)."""
    return dict(_cell_values(line))


@functools.lru_cache(maxsize=256)
def _cell_values(line: str) -> dict[str, Any]:
    return {k: v for k, v in vars(parse_cell_line(line)).items() if v is not None}


def parse_cell_line(line: str) -> Any:
    """The cell's options; an unknown flag gets a did-you-mean."""
    parser = cell_parser()
    words = _argv(line)
    unknown = [w for w in words if w.startswith("--") and w.split("=")[0] not in parser._option_string_actions]
    if unknown:
        flag = unknown[0].split("=")[0]
        near = difflib.get_close_matches(flag, list(parser._option_string_actions), n=1, cutoff=0.6)
        hint = f" Did you mean {near[0]}?" if near else " See %%sagemaker? for the options."
        raise UsageError(f"Unknown option {flag}.{hint}")
    return parser.parse_args(words)


def check_target(name: str, namespace: dict[str, Any]) -> str:
    """``-o VAR`` must be a plain variable name that hides nothing the notebook relies on; returned as
    Python reads it in code (NFKC: a full-width letter is the plain one)."""
    name = unicodedata.normalize("NFKC", name)
    if not name.isidentifier() or keyword.iskeyword(name):
        raise UsageError(f"-o/--out needs a variable name (letters, digits, _), not {name!r}.")
    shell = get_ipython()
    hidden = getattr(shell, "user_ns_hidden", {}) if shell is not None else {}
    if (name in RESERVED or name in hidden or IPYTHON_NAMES.match(name) or name.startswith("__")
            or hasattr(builtins, name)):
        raise UsageError(f"-o {name} would hide Python's or IPython's own '{name}'; choose another name.")
    return name


_IPYTHON_FLAGS = (MAGIC_NO_VAR_EXPAND_ATTR, MAGIC_OUTPUT_CAN_BE_SILENCED, "needs_local_scope")


class _Documented:
    """The magic as IPython calls it; ``%%sagemaker?`` builds the options' help on demand (not at %load_ext)."""

    def __init__(self, method: Any):
        self._method = method
        for flag in _IPYTHON_FLAGS:  # read on every call: answered here, not by a failing __getattr__
            setattr(self, flag, getattr(method, flag, False))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._method(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # IPython reads the magic's flags (no_var_expand...)
        return getattr(self._method, name)

    @property  # type: ignore[override]
    def __doc__(self) -> str:
        return f"{self._method.__doc__}\n{cell_parser().format_help()}"


@magics_class
class SageMakerMagics(Magics):
    """Run prompts against Amazon SageMaker endpoints; defaults with ``%config SageMaker.<name>``."""

    def __init__(self, shell: Any = None, **kwargs: Any):
        super().__init__(shell=shell, **kwargs)
        self.state = SageMaker(parent=self)
        self._runner: Any = None
        if shell is not None and self.state not in shell.configurables:  # %config SageMaker.<name>; an earlier
            shell.configurables[:] = [c for c in shell.configurables if not isinstance(c, SageMaker)]  # %load_ext's
            shell.configurables.append(self.state)  # state is no magic's now: %config must not reach it
        if shell is not None:
            self._watch_cells(shell)
        for kind in ("line", "cell"):
            self.magics[kind]["sagemaker"] = _Documented(self.magics[kind]["sagemaker"])

    def _watch_cells(self, shell: Any) -> None:
        """Each cell looks at the aliases file once (other kernels may have changed it), not at every call
        of a loop; this instance's callback replaces an earlier instance's (%reload_ext, a new magics)."""
        self.state.aliases.per_cell = True
        for callback in list(shell.events.callbacks["pre_execute"]):
            if getattr(callback, "__func__", None) is SageMakerMagics._new_cell:
                shell.events.unregister("pre_execute", callback)
        shell.events.register("pre_execute", self._new_cell)

    def _new_cell(self) -> None:
        aliases = self.state.aliases  # also a store put in place after %load_ext
        aliases.per_cell = True
        aliases.new_cell()

    @property
    def runner(self) -> Any:
        """The shell's :class:`~sm_magic.runner.Runner` (made on first use: %load_ext stays cheap)."""
        if self._runner is None:
            from sm_magic.runner import Runner

            self._runner = Runner(self.state)
        return self._runner

    @line_cell_magic
    @no_var_expand  # IPython would evaluate {expr} in the options line; we never evaluate
    def sagemaker(self, line: str, cell: str | None = None) -> Any:
        """Run the cell as a prompt on a SageMaker endpoint; %sagemaker COMMAND manages the session.

        The first line names the endpoint and the options, the lines below it are the prompt; {name} in
        the prompt is filled from the notebook's variables (looked up, never evaluated).
        %sagemaker help lists the commands.
        """
        try:
            return self._line(line) if cell is None else self._cell(line, cell)
        except SageMakerError as e:
            e.show_traceback = self.state.debug
            raise

    # -- cell ----------------------------------------------------------------------------------------
    def _cell(self, line: str, cell: str) -> Any:
        target = None
        match = _TARGET.match(line)
        if match:
            target, line = match.groups()
        values = cell_values(line)
        namespace = self.shell.user_ns
        target = values.pop("out", None) or target
        if target:
            target = check_target(target, namespace)
        template = cell.strip("\n")
        if not template.strip():
            raise UsageError("The cell is empty: write the prompt in the cell, under %%sagemaker ENDPOINT.")
        if "docs" in values:  # a notebook variable, else files: a name that is neither is an error, not text
            name = values["docs"]
            values["docs"] = namespace[name] if name in namespace else Path(name).expanduser()
        if "template" in values:  # a variable, or the template itself
            name = values["template"]
            values["template"] = name if "{" in name and name not in namespace else self._variable(name, "Template")
        if "batch" in values:
            values.update(batch=self._variable(values["batch"], "Batch variable"), namespace=namespace)
        prompt = template if values.get("no_interpolate") or "batch" in values else interpolate(template, namespace)
        live = LiveText(shell=self.shell)
        try:
            result = self.runner.run(CallSpec(prompt, values, template), live)
        except SageMakerError as e:
            if isinstance(e, EncodingError) and e.where == "prompt":
                _name_the_variable(e, template, namespace)
            partial = getattr(e, "result", None)
            if partial is not None and partial.text:  # keep what arrived (if anything did), then stop "Run all"
                live.finish(partial)
                self._keep(partial, target)
            raise
        return self._show(result, target, values.get("format"), live)

    def _variable(self, name: str, what: str) -> Any:
        """A notebook variable the options name (did-you-mean when it does not exist)."""
        from sm_magic.commands import Context

        return Context(self.state, self.runner, self.shell).value(name, what)

    def _keep(self, result: Any, target: str | None) -> None:
        self.runner.last = result
        if target:
            self.shell.user_ns[target] = result

    def _show(self, result: Any, target: str | None, fmt: str | None, live: Any) -> Any:
        if isinstance(result, Result):  # one answer (most cells)
            result.format = fmt or self.state.format
            if result.streamed:
                live.finish(result)
            self._keep(result, target)
            return None if result.streamed else result
        self._keep(result, target)
        from sm_magic.qa import Plan
        from sm_magic.runner import BatchPlan

        if isinstance(result, Plan | BatchPlan):  # a dry run of QA or a batch
            title = "Dry run: nothing sent" if getattr(result, "mode", "") != "retrieve" else \
                "Dry run: nothing sent to the LLM (the embeddings endpoint embedded what the index lacked)"
            return Preformatted(result.describe(), title=title)
        return result

    # -- line ----------------------------------------------------------------------------------------
    def _line(self, line: str) -> Any:
        from sm_magic.commands import COMMANDS, Context, module, parser, usage

        words = line.split()
        name = words[0] if words else "help"
        if name.rstrip("?") in COMMANDS and name.endswith("?"):  # `%sagemaker alias?`: that command's help
            return Preformatted(parser(name.rstrip("?")).format_help().replace("::\n\n", "", 1))
        if name not in COMMANDS:
            near = difflib.get_close_matches(name, list(COMMANDS), n=2)
            if len(words) > 1 and not name.startswith("-"):  # words after a name: most likely a prompt
                also = f"If you meant the command {' or '.join(near)}, check its spelling." if near else \
                    "Commands: %sagemaker help."
                raise UsageError(f"'{name}' is not a %sagemaker command. Prompts go in a cell: %%sagemaker {name} "
                                 f"on the first line, the prompt on the lines below. {also}")
            hint = f"Did you mean {' or '.join(near)}?" if near else f"Commands: {', '.join(COMMANDS)}."
            raise UsageError(f"Unknown %sagemaker command '{name}'. {hint}")
        try:
            args = parser(name).parse_args(_argv(line)[1:])
        except UsageError as e:
            raise UsageError(f"{e}\nusage: {usage(name)}") from None
        return module(name).run(Context(self.state, self.runner, self.shell), args)


def _name_the_variable(error: Any, template: str, namespace: dict[str, Any]) -> None:
    """An EncodingError from the cell's prompt names the ``{variable}`` the bad text came from."""
    for name in field_names(template):
        value = namespace.get(name)
        found = _SURROGATES.search(value) if isinstance(value, str) and not value.isascii() else None
        if found:
            error.position = found.start()  # where it is in the variable, not in the whole prompt
            error.in_variable(name)
            return
