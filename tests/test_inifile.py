"""The shared INI file: many processes and threads at once, damaged files, exact round trips."""

from __future__ import annotations

import configparser
import os
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from sm_magic.errors import ConfigError
from sm_magic.inifile import IniFile, parse, render

ROOT = Path(__file__).resolve().parent.parent


def adder(path: Path, prefix: str, count: int) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        from sm_magic.inifile import IniFile
        ini = IniFile({str(path)!r})
        for i in range({count}):
            ini.update(lambda s, i=i: s.__setitem__(f"{prefix}-{{i}}", {{"endpoint": "ep", "n": str(i)}}))
    """)
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)


def add(ini: IniFile, name: str) -> None:
    ini.update(lambda sections: sections.__setitem__(name, {"endpoint": name}))


def test_two_processes_adding_100_each_end_with_200_and_a_reader_never_sees_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.ini"
    ini = IniFile(path)
    add(ini, "first")
    procs = [adder(path, name, 100) for name in ("a", "b")]
    reads, problems = 0, []
    while any(p.poll() is None for p in procs):
        try:
            data = ini.read()
            text = path.read_text()
        except FileNotFoundError as e:  # read() hides a missing file: look for one directly too
            problems.append(f"missing: {e}")
            continue
        reads += 1
        if not text.strip() or "first" not in data.sections or data.warnings:
            problems.append(repr(text[:80]) + str(data.warnings))
    assert [p.wait() for p in procs] == [0, 0]
    assert problems == []
    assert reads > 10  # the reader really ran during the writes
    sections = ini.read().sections
    assert len(sections) == 201
    assert sections["a-99"] == {"endpoint": "ep", "n": "99"} and sections["b-0"]["n"] == "0"


def test_sixteen_threads_adding_25_each_raise_nothing_and_keep_all_400(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.ini"
    errors: list[BaseException] = []

    def work(t: int) -> None:
        ini = IniFile(path)  # a separate object per thread: the lock is per file, not per object
        try:
            for i in range(25):
                add(ini, f"t{t}-{i}")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(IniFile(path).read().sections) == 400


def test_update_merges_with_what_another_writer_saved_meanwhile(tmp_path: Path) -> None:
    mine, theirs = IniFile(tmp_path / "x.ini"), IniFile(tmp_path / "x.ini")
    add(mine, "one")
    add(theirs, "two")
    result, warnings = mine.update(lambda s: sorted(s))
    assert result == ["one", "two"] and warnings == []


def test_a_file_without_a_section_header_warns_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.ini"
    path.write_text("endpoint = orphan\n\n[qa]\nendpoint = my-endpoint\n")
    data = IniFile(path).read()
    assert data.sections == {"qa": {"endpoint": "my-endpoint"}}
    [warning] = data.warnings
    assert warning.line == 1 and "before any [section]" in warning.message
    assert str(warning).startswith(f"{path}, line 1: 'endpoint = orphan'")


def test_a_damaged_header_does_not_hand_its_keys_to_the_alias_above(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.ini"
    path.write_text("[qa]\nendpoint = good\n[fast\nendpoint = wrong\nregion = eu-west-1\n[b]\nendpoint = b\n")
    data = IniFile(path).read()
    assert data.sections == {"qa": {"endpoint": "good"}, "b": {"endpoint": "b"}}
    [warning] = data.warnings
    assert warning.line == 3 and "'[fast' is not a [section] header" in warning.message


def test_invalid_utf8_duplicates_and_garbage_each_warn_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.ini"
    path.write_bytes(b"[qa]\nendpoint = a\nregion = caf\xe9\nendpoint = b\njust words\n[qa]\ntop_p = 0.9\n"
                     b"[other]\nendpoint = c\n")
    data = IniFile(path).read()
    assert data.sections == {"qa": {"endpoint": "b", "top_p": "0.9"}, "other": {"endpoint": "c"}}
    found = [(w.line, w.message) for w in data.warnings]
    assert [line for line, _ in found] == [3, 4, 5, 6]
    assert "not valid UTF-8 (byte 13)" in found[0][1]
    assert "'endpoint' in [qa] is set again (first at line 2)" in found[1][1]
    assert "'just words' in [qa] is not 'key = value'" in found[2][1]
    assert "section [qa] repeats the one at line 1" in found[3][1]


def test_a_path_that_cannot_be_read_warns_on_read_and_refuses_update(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.ini"
    path.mkdir()  # a directory where the file should be (root can read any file, so no chmod here)
    ini = IniFile(path)
    [warning] = ini.read().warnings
    assert "could not be read" in warning.message and warning.line is None
    with pytest.raises(ConfigError, match=r"could not be read.*not changed"):
        add(ini, "qa")
    assert path.is_dir()


def test_updating_a_damaged_file_keeps_a_backup_of_it(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.ini"
    damaged = b"stray line\n[qa]\nendpoint = a\n"
    path.write_bytes(damaged)
    ini = IniFile(path)
    _, warnings = ini.update(lambda s: s.__setitem__("new", {"endpoint": "n"}))
    assert [w.line for w in warnings] == [1, None]
    assert str(ini.backup_path) in warnings[-1].message
    assert ini.backup_path.read_bytes() == damaged
    data = ini.read()
    assert data.sections == {"qa": {"endpoint": "a"}, "new": {"endpoint": "n"}} and data.warnings == []


def test_an_update_that_changes_nothing_does_not_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.ini"
    ini = IniFile(path)
    add(ini, "qa")
    before = path.stat().st_ino
    ini.update(lambda s: s.get("qa"))
    assert path.stat().st_ino == before


def test_the_replacement_keeps_the_files_mode(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.ini"
    ini = IniFile(path)
    add(ini, "one")
    path.chmod(0o640)
    add(ini, "two")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["endpoints.ini", "endpoints.ini.lock"]  # no temp file left behind


VALID = [
    "[a]\nkey = value\nother: x = y\n",
    "# comment\n; another\n[s p a c e]\nKey = Mixed Case\n\n[b]\nmulti = line one\n  line two\n\n  line four\n",
    "[a]\nempty =\nurl = http://x:8080/path?q=1\n[b]\n",
    "\ufeff[bom]\nk = v\n",
    "[a]\nk = v\n  # not a comment inside a value\n",
]


@pytest.mark.parametrize("text", VALID)
def test_valid_files_read_exactly_as_configparser_reads_them(tmp_path: Path, text: str) -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text.lstrip("\ufeff"))
    expected = {name: dict(parser[name]) for name in parser.sections()}
    data = parse(text.encode(), tmp_path / "x.ini")
    assert data.warnings == []
    assert data.sections == expected


def test_written_files_read_back_the_same_here_and_in_configparser(tmp_path: Path) -> None:
    sections = {"qa": {"endpoint": "my-endpoint", "stop": '["\\n", "User:"]', "note": "two\nlines", "empty": ""},
                "ünïcode": {"prompt": "Résumé = 5 € ; # not a comment"}}
    text = render(sections)
    assert parse(text.encode(), tmp_path / "x.ini").sections == sections
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    assert {name: dict(parser[name]) for name in parser.sections()} == sections


def test_a_change_that_raises_writes_nothing_and_releases_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.ini"
    ini = IniFile(path)
    add(ini, "qa")
    before = path.read_bytes()

    def broken(sections: dict) -> None:
        sections.clear()
        raise ValueError("bad alias")

    with pytest.raises(ValueError, match="bad alias"):
        ini.update(broken)
    assert path.read_bytes() == before
    add(ini, "next")  # the lock was released: this does not hang
    assert list(ini.read().sections) == ["qa", "next"]


def test_a_file_that_cannot_be_written_is_one_paragraph_saying_where_to_write(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("a regular file, not a folder")
    path = tmp_path / "file.txt" / "endpoints.ini"  # no one can write here, root included
    ini = IniFile(path)
    with pytest.raises(ConfigError) as info:
        add(ini, "qa")
    text = info.value.explain()
    assert "\n" not in text and str(path) in text and "not changed" in text
    assert "SM_MAGIC_HOME" in text and "SM_MAGIC_ENDPOINTS" in text
    assert ini.read().sections == {}


def test_alias_add_with_an_unwritable_home_is_one_paragraph(ip, tmp_path: Path, monkeypatch) -> None:
    from sm_magic.aliases import AliasStore
    from tests.conftest import line

    (tmp_path / "file.txt").write_text("a regular file, not a folder")
    monkeypatch.setenv("SM_MAGIC_HOME", str(tmp_path / "file.txt" / "home"))
    monkeypatch.delenv("SM_MAGIC_ENDPOINTS")
    with pytest.warns(UserWarning, match="could not be read"):
        ip.user_ns["_sm_magics"].state.aliases = AliasStore()  # as a kernel started with this home has it
    with pytest.raises(ConfigError) as info:
        line(ip, "alias add qa tgi")
    [shown] = info.value._render_traceback_()
    assert "\n" not in shown and str(tmp_path / "file.txt" / "home" / "endpoints.ini") in shown
    assert "SM_MAGIC_HOME" in shown
