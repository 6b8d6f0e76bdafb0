"""Saved endpoint aliases in a plain INI file a user can read and edit (like jupysql's connections.ini).

    [qa]
    endpoint = my-llama-endpoint
    region = us-west-2
    handler = tgi
    temperature = 0.2

Keys and their types come from the parameter table (:data:`~sm_magic.params.ALIAS_PARAMS`).
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sm_magic.errors import ConfigError
from sm_magic.params import ALIAS_PARAMS, SESSION, lookup


def default_path() -> Path:
    home = Path(os.environ.get("SM_MAGIC_HOME", "~/.sm_magic")).expanduser()
    return Path(os.environ.get("SM_MAGIC_ENDPOINTS", home / "endpoints.ini")).expanduser()


@dataclass
class Alias:
    """A name for an endpoint with the settings that go with it (parameter name → value)."""

    name: str
    endpoint: str
    values: dict[str, Any] = field(default_factory=dict)

    def session_changes(self) -> dict[str, Any]:
        changes = {p.name: self.values[p.name] for p in ALIAS_PARAMS
                   if p.section == SESSION and self.values.get(p.name)}
        if changes.get("endpoint_url"):
            changes["control_endpoint_url"] = changes["endpoint_url"]
        return changes

    @classmethod
    def from_section(cls, name: str, section: dict[str, str], where: str) -> Alias:
        if "endpoint" not in section:
            raise ConfigError(f"{where}: alias [{name}] has no 'endpoint ='.")
        values = {}
        for key, text in section.items():
            if key == "endpoint":
                continue
            try:
                param = lookup(key, ALIAS_PARAMS, f"key in alias [{name}]")
                values[param.name] = param.parse(text)
            except ConfigError as e:
                raise ConfigError(f"{where}: {e.message}") from None
        return cls(name, section["endpoint"], values)

    def to_section(self) -> dict[str, str]:
        section = {"endpoint": self.endpoint}
        for param in ALIAS_PARAMS:
            if self.values.get(param.name) not in (None, "", [], {}):
                section[param.name] = param.format(self.values[param.name])
        return section


class AliasStore:
    """Reads and writes aliases; the file is read when the store is made and on :meth:`reload`."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path).expanduser() if path else default_path()
        self._aliases: dict[str, Alias] = {}
        self.reload()

    def reload(self) -> None:
        parser = configparser.ConfigParser(interpolation=None)
        if self.path.exists():
            try:
                parser.read(self.path)
            except configparser.Error as e:
                raise ConfigError(f"{self.path} is not a valid INI file: {e}") from None
        self._aliases = {name: Alias.from_section(name, dict(parser[name]), str(self.path))
                         for name in parser.sections()}

    def _write(self) -> None:
        parser = configparser.ConfigParser(interpolation=None)
        for alias in self._aliases.values():
            parser[alias.name] = alias.to_section()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w") as fh:
            parser.write(fh)

    def add(self, alias: Alias) -> None:
        self._aliases[alias.name] = alias
        self._write()

    def remove(self, name: str) -> None:
        if name not in self._aliases:
            raise ConfigError(f"No alias '{name}'. Saved aliases: {', '.join(self._aliases) or 'none'}.")
        del self._aliases[name]
        self._write()

    def get(self, name: str) -> Alias | None:
        return self._aliases.get(name)

    def __iter__(self):
        return iter(list(self._aliases.values()))

    def __len__(self) -> int:
        return len(self._aliases)
