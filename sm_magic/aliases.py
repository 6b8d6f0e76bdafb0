"""Saved endpoint aliases in a plain INI file a user can read and edit (like jupysql's connections.ini).

    [qa]
    endpoint = my-llama-endpoint
    region = us-west-2
    handler = tgi
    temperature = 0.2

Keys and their types come from the parameter table (:data:`~sm_magic.params.ALIAS_PARAMS`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sm_magic.errors import ConfigError
from sm_magic.params import ALIAS_PARAMS, SESSION, lookup

RECHECK = 1.0  # seconds: within one cell, the file is looked at again at most this often


def default_path() -> Path:
    home = Path(os.environ.get("SM_MAGIC_HOME", "~/.sm_magic")).expanduser()
    return Path(os.environ.get("SM_MAGIC_ENDPOINTS", home / "endpoints.ini")).expanduser()


def session_changes(values: dict[str, Any]) -> dict[str, Any]:
    """The session settings among a call's values (region, profile, role, URL: what an alias can set)."""
    changes = {p.name: values[p.name] for p in ALIAS_PARAMS if p.section == SESSION and values.get(p.name)}
    if changes.get("endpoint_url"):
        changes["control_endpoint_url"] = changes["endpoint_url"]
    return changes


@dataclass
class Alias:
    """A name for an endpoint with the settings that go with it (parameter name → value)."""

    name: str
    endpoint: str
    values: dict[str, Any] = field(default_factory=dict)

    def session_changes(self) -> dict[str, Any]:
        return session_changes(self.values)

    @classmethod
    def from_section(cls, name: str, section: dict[str, str], where: str) -> Alias:
        if "endpoint" not in section:
            raise ConfigError(f"{where}: alias [{name}] has no 'endpoint ='.")
        values = {}
        for key, text in section.items():
            if key == "endpoint":
                continue
            try:
                param = lookup(key, ALIAS_PARAMS, "key")
                values[param.name] = param.parse(text)
            except ConfigError as e:
                raise ConfigError(f"{where}: alias [{name}]: {e.message}") from None
        return cls(name, section["endpoint"], values)

    def to_section(self) -> dict[str, str]:
        section = {"endpoint": self.endpoint}
        for param in ALIAS_PARAMS:
            if self.values.get(param.name) not in (None, "", [], {}):
                section[param.name] = param.format(self.values[param.name])
        return section


class AliasStore:
    """Aliases in a file many kernels share: every read is tolerant, every change is made under an
    inter-process lock on a fresh read and written atomically (:class:`~sm_magic.inifile.IniFile`).

    A damaged file never stops ``%load_ext``: what can be read is used, and one warning names the
    file, the line and what is wrong. An alias whose keys are wrong is reported when it is used.
    """

    def __init__(self, path: Path | str | None = None):
        from sm_magic.inifile import IniFile

        self.path = Path(path).expanduser() if path else default_path()
        self.file = IniFile(self.path)
        self._where = str(self.path)
        self._aliases: dict[str, Alias] = {}
        self.problems: dict[str, str] = {}  # alias name → what is wrong with it
        self._shown: set[str] = set()
        self._read_stamp: tuple[int, ...] | None = None
        self.per_cell = False  # set by the magics: look once per cell (see new_cell), not at every use
        self._looked = float("-inf")  # when the file was last looked at (monotonic), under per_cell
        self.reload()

    def _stamp(self) -> tuple[int, ...] | None:
        try:
            stat = os.stat(self._where)  # every call looks: no pathlib on the way
        except OSError:
            return None  # a file put back with its old time (cp -p) is a new inode or a new ctime
        return stat.st_mtime_ns, stat.st_size, stat.st_ino, stat.st_ctime_ns

    def fresh(self) -> AliasStore:
        """Re-read if another kernel changed the file since the last read (one stat call).

        With ``per_cell``: the first use in each cell looks, later uses in the same cell (a loop) look
        again only after :data:`RECHECK` seconds, so a cell sees one version of the file."""
        if self.per_cell:
            now = time.monotonic()
            if now - self._looked < RECHECK:
                return self
            self._looked = now
        if self._stamp() != self._read_stamp:
            self.reload()
        return self

    def new_cell(self) -> None:
        """A cell starts (or a panel run): its first use looks at the file again."""
        self._looked = float("-inf")

    def reload(self) -> None:
        """Read the file again (other kernels may have changed it)."""
        self._read_stamp = self._stamp()
        data = self.file.read()
        self._load(data.sections)
        self._warn([str(w) for w in data.warnings])

    def _load(self, sections: dict[str, dict[str, str]]) -> None:
        aliases, problems = {}, {}
        for name, section in sections.items():
            try:
                aliases[name] = Alias.from_section(name, section, str(self.path))
            except ConfigError as e:
                problems[name] = e.message
        self._aliases, self.problems = aliases, problems

    def _warn(self, messages: list[str]) -> None:
        import warnings

        fresh = [m for m in [*messages, *self.problems.values()] if m not in self._shown]
        if fresh:
            self._shown.update(fresh)
            warnings.warn("sm_magic aliases: " + "; ".join(fresh), stacklevel=3)

    def _change(self, change: Any) -> Any:
        result, problems = self.file.update(change)
        self.reload()
        self._warn([str(w) for w in problems])
        return result

    def add(self, alias: Alias) -> None:
        self._change(lambda sections: sections.__setitem__(alias.name, alias.to_section()))

    def remove(self, name: str) -> None:
        def drop(sections: dict[str, dict[str, str]]) -> bool:
            return sections.pop(name, None) is not None

        if not self._change(drop):
            raise ConfigError(f"No alias '{name}'. Saved aliases: {', '.join(self._aliases) or 'none'}.")

    def get(self, name: str) -> Alias | None:
        self.fresh()
        if name in self.problems:
            raise ConfigError(self.problems[name], hint="Fix the alias with `%sagemaker alias add` or edit the file.")
        return self._aliases.get(name)

    def __iter__(self):
        return iter(list(self.fresh()._aliases.values()))

    def __len__(self) -> int:
        return len(self._aliases)
