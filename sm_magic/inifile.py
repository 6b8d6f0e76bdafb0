"""An INI file that many kernels can share: tolerant reads, locked read-merge-write, atomic replace.

Reading never raises: a damaged file (text before the first ``[section]``, invalid UTF-8, a line
without ``=``, a repeated section or key) yields the sections that could be read plus one
:class:`IniWarning` per problem, naming the file, the line and what is wrong. The syntax is
configparser's default (``key = value`` or ``key: value``, ``#``/``;`` comments, indented
continuation lines, keys lower-cased); files are written with configparser.

:meth:`IniFile.update` takes an in-process thread lock and an inter-process ``flock`` on a sidecar
``<name>.lock`` file, re-reads the file, lets the caller change the sections, then writes a temp
file in the same directory, fsyncs it and ``os.replace``-s it over the original: a reader (which
takes no lock) sees the old file or the new one, never a missing or partial one. Writing a file
that had damaged lines first keeps a copy of it as ``<name>.bak``, since those lines are not
written back.
"""

from __future__ import annotations

import configparser
import contextlib
import io
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sm_magic.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: only the in-process lock
    fcntl = None  # type: ignore[assignment]

T = TypeVar("T")
Sections = dict[str, dict[str, str]]

SECTION = re.compile(r"\[(?P<name>.+)\]")  # configparser.SECTCRE
OPTION = re.compile(r"(?P<key>.*?)\s*[=:]\s*(?P<value>.*)$")  # configparser's default delimiters
COMMENTS = ("#", ";")

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _thread_lock(path: Path) -> threading.Lock:
    """One lock per file for the whole process, whichever IniFile object uses it."""
    key = os.path.realpath(path)
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


@dataclass(frozen=True)
class IniWarning:
    """A problem in a file that was read anyway."""

    path: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}, line {self.line}" if self.line else str(self.path)
        return f"{where}: {self.message}"


@dataclass
class IniData:
    """What a read found: sections in file order and the problems met on the way."""

    sections: Sections = field(default_factory=dict)
    warnings: list[IniWarning] = field(default_factory=list)


def parse(data: bytes, path: Path) -> IniData:
    """Parse INI bytes, keeping what is readable; never raises."""
    out = IniData()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]

    def warn(line: int | None, message: str) -> None:
        out.warnings.append(IniWarning(path, line, message))

    section: dict[str, str] | None = None
    section_name = ""
    seen_sections: dict[str, int] = {}
    seen_keys: dict[str, int] = {}
    key: str | None = None  # the key a continuation line extends
    key_indent = 0
    blanks = 0
    skipping = False  # under a damaged header: its keys belong to no alias (not to the one above)
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            warn(number, f"is not valid UTF-8 (byte {e.start + 1}); the line is ignored")
            key = None
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith(COMMENTS):
            blanks += not stripped
            continue
        indent = len(line) - len(line.lstrip())
        if key is not None and section is not None and indent > key_indent:
            section[key] += "\n" * (blanks + 1) + stripped
            blanks = 0
            continue
        blanks = 0
        key = None
        header = SECTION.match(stripped)
        if header:
            section_name = header.group("name")
            if section_name in seen_sections:
                warn(number, f"section [{section_name}] repeats the one at line {seen_sections[section_name]}; "
                             "their keys are merged")
            else:
                seen_sections[section_name] = number
            section, skipping = out.sections.setdefault(section_name, {}), False
            continue
        if stripped.startswith("["):
            warn(number, f"{_short(stripped)!r} is not a [section] header (a ']' missing?); the keys under it "
                         "are ignored up to the next header")
            section, skipping = None, True
            continue
        option = OPTION.match(stripped)
        if section is None:
            if not skipping:
                warn(number, f"{_short(stripped)!r} comes before any [section] header; it is ignored")
            continue
        if not option or not option.group("key"):
            warn(number, f"{_short(stripped)!r} in [{section_name}] is not 'key = value'; it is ignored")
            continue
        name = option.group("key").lower()
        where = section_name + "\0" + name
        if where in seen_keys:
            warn(number, f"'{name}' in [{section_name}] is set again (first at line {seen_keys[where]}); "
                         "the last value is used")
        seen_keys[where] = number
        section[name] = option.group("value")
        key, key_indent = name, indent
    return out


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(sections: Sections) -> str:
    """The text configparser writes for these sections."""
    parser = configparser.ConfigParser(interpolation=None, default_section="\0")
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    for name, values in sections.items():
        parser[name] = {k: str(v) for k, v in values.items()}
    buffer = io.StringIO()
    parser.write(buffer)
    return buffer.getvalue()


class IniFile:
    """One INI file on disk. ``read()`` for a look; ``update(fn)`` to change it safely.

    >>> ini = IniFile("~/.sm_magic/endpoints.ini")
    >>> ini.update(lambda sections: sections.setdefault("qa", {}).update(endpoint="my-endpoint"))
    >>> ini.read().sections["qa"]
    {'endpoint': 'my-endpoint'}
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser()
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.backup_path = self.path.with_name(self.path.name + ".bak")

    def __repr__(self) -> str:
        return f"<IniFile {self.path}>"

    def read(self) -> IniData:
        """The sections now on disk (none if the file does not exist) and warnings; never raises."""
        try:
            return parse(self.path.read_bytes(), self.path)
        except FileNotFoundError:
            return IniData()
        except OSError as e:
            return IniData(warnings=[IniWarning(self.path, None, f"could not be read ({e.strerror or e})")])

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the file's thread lock and its inter-process lock."""
        with _thread_lock(self.path), contextlib.ExitStack() as stack:
            with self._writing():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                handle = stack.enter_context(open(self.lock_path, "a")) if fcntl is not None else None
            if handle is None:
                yield
                return
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def update(self, change: Callable[[Sections], T]) -> tuple[T, list[IniWarning]]:
        """Re-read under the locks, let ``change`` edit the sections in place, write them if they changed.

        Returns what ``change`` returned and the warnings of the re-read. ``change`` must not call
        ``update`` on the same file (the lock is not re-entrant).
        """
        with self.locked():
            try:
                current = parse(self.path.read_bytes(), self.path)
            except FileNotFoundError:
                current = IniData()
            except OSError as e:
                raise ConfigError(f"{self.path} could not be read ({e.strerror or e}), so it was not changed.",
                                  hint="Check the file's permissions (or move it aside) and try again.") from e
            sections = {name: dict(values) for name, values in current.sections.items()}
            result = change(sections)
            warnings = list(current.warnings)
            if sections != current.sections:
                with self._writing():
                    if current.warnings:
                        self._replace(self.path.read_bytes(), self.backup_path)
                        warnings.append(IniWarning(self.path, None, f"the lines above were not kept; the file "
                                                                    f"as it was is saved as {self.backup_path}"))
                    self._replace(render(sections).encode(), self.path)
            return result, warnings

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """An OSError while writing becomes one ConfigError naming the file and where to write instead."""
        try:
            yield
        except OSError as e:
            why = e.strerror or str(e)
            if e.filename and os.fspath(e.filename) != str(self.path):
                why += f": {e.filename}"
            raise ConfigError(f"{self.path} cannot be written ({why}), so it was not changed.",
                              hint="Point SM_MAGIC_HOME (or SM_MAGIC_ENDPOINTS, for this file alone) at a "
                                   "folder you can write, or make that folder writable.") from e

    def _replace(self, data: bytes, target: Path) -> None:
        """Write ``target`` atomically: temp file in the same directory, fsync, rename, fsync the directory."""
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(OSError):
                os.chmod(temp, target.stat().st_mode & 0o777)  # keep the mode a user gave the file
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        with contextlib.suppress(OSError):  # not every platform can open a directory
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
