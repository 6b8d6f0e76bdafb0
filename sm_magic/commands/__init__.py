"""``%sagemaker COMMAND``: one module per command, each with ``add_arguments(parser)`` and ``run(ctx, args)``.

The line magic's parser is built from :data:`COMMANDS` (a command's module is imported only when it
is used, or for ``%sagemaker help``), the pattern of jupysql's ``%sqlcmd``.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from sm_magic.errors import ConfigError

# name → what it does (one sentence, for `%sagemaker help`)
COMMANDS: dict[str, str] = {
    "session": "Show or change where calls go and with which credentials (profile, region, role, local endpoint).",
    "endpoints": "List the region's endpoints with status, instances and detected format, or describe one.",
    "handlers": "List content handlers, register your own, define one from a JSON template, or detect one.",
    "alias": "Save, list or remove endpoint aliases (a name plus region, handler and parameters) in a file.",
    "history": "Show calls from the journal (this kernel's, or --all); filter them; `history VAR` stores them.",
    "jobs": "List batches, QA map steps and async jobs with how many items finished, failed or are left.",
    "resume": "Finish a job a dead kernel left: finished items come from the journal, async answers from S3; "
              "only the rest is called.",
    "config": "Show every setting with where it comes from; `config key=value` changes one.",
    "chat": "Show or reset the conversation kept for --chat cells.",
    "retry": "Re-run the failed and never-run items of a batch stored in VAR.",
    "debug": "Turn full tracebacks on or off (errors are one paragraph by default).",
    "panel": "Open the widget panel: the same features as a form, sharing these settings.",
    "help": "This list.",
}


@dataclass
class Context:
    """What a command works with: the shell's settings, its runner and the notebook's namespace."""

    state: Any
    runner: Any
    shell: Any

    @property
    def namespace(self) -> dict[str, Any]:
        return self.shell.user_ns if self.shell is not None else {}

    def value(self, name: str, what: str) -> Any:
        """A notebook variable by name; a did-you-mean error if it does not exist."""
        if name in self.namespace:
            return self.namespace[name]
        near = difflib.get_close_matches(name, [n for n in self.namespace if not n.startswith("_")], n=3)
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        raise ConfigError(f"{what} '{name}' is not defined in the notebook.{hint}")


def module(name: str) -> Any:
    return import_module(f"sm_magic.commands.{name}")


@functools.cache
def parser(name: str) -> Any:
    """The parser of one command (built on first use)."""
    from IPython.core.magic_arguments import MagicArgumentParser

    made = MagicArgumentParser(prog=f"sagemaker {name}", add_help=False, description=COMMANDS[name])
    add = getattr(module(name), "add_arguments", None)
    if add is not None:
        add(made)
    return made


def usage(name: str) -> str:
    """``%sagemaker NAME [options]`` on one line (IPython's formatter adds a ``::`` block prefix)."""
    text = parser(name).format_usage().replace("::\n\n  ", "", 1)
    return " ".join(text.replace("usage: ", "", 1).split())


def help_text() -> str:
    """Every command: its usage line and what it does."""
    return "\n".join(f"{usage(name)}\n    {about}" for name, about in COMMANDS.items())
