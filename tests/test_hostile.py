"""What a hostile user tried, each now refused or said out loud (the local endpoint's faults, in-process IPython)."""

from __future__ import annotations

import re

import pytest
from IPython.core.error import UsageError

from sm_magic.batch import run_batch
from sm_magic.calls import invoke
from sm_magic.errors import ConfigError, ModelError
from sm_magic.handlers.registry import Registry
from sm_magic.local import Fault


def cell(ip, line: str, body: str = "hi"):
    return ip.run_cell_magic("sagemaker", line, body)


@pytest.mark.parametrize("name", ["_oh", "_ih", "_dh", "_i", "_ii", "_i3", "_7", "Out", "print"])
def test_out_variable_never_hides_ipython_history_names(ip, name):
    with pytest.raises(UsageError, match="would hide"):
        cell(ip, f"tgi -o {name}")
    assert ip.run_cell("1 + 1").result == 2  # the kernel still works


def test_an_out_variable_is_stored_under_the_name_python_reads(ip, local):
    """-o with a full-width letter was stored where no code could reach it (Python normalises names)."""
    cell(ip, "tgi --handler tgi -o \uff41ns")
    assert ip.run_cell("\uff41ns.text").result == "You said: hi"  # as typed in code: the same variable
    assert ip.user_ns["ans"].text == "You said: hi"


def test_docs_name_that_is_neither_a_variable_nor_a_file_is_an_error(ip, local):
    before = sum(local.calls.values())
    with pytest.raises(ConfigError, match=r"No files match 'missing\.md', and no notebook variable"):
        cell(ip, "tgi --docs missing.md", "How long?")
    assert sum(local.calls.values()) == before


def test_template_given_inline(ip):
    ip.user_ns["notes"] = ["Peter stayed 3 days."]
    plan = cell(ip, "tgi --handler tgi --docs notes --dry-run --template 'Facts: {context} Q: {question}'", "How long?")
    assert "Facts: Peter stayed 3 days. Q: How long?" in repr(plan)


def test_resume_that_finds_nothing_says_so(ip):
    ip.user_ns["items"] = ["a", "b"]
    batch = cell(ip, "tgi --handler tgi --batch items --resume", "Q {text}")
    assert "--resume found no earlier run of this cell" in batch.summary() and "all 2 items were called" in \
        batch.summary()


def test_a_job_still_running_in_another_kernel_is_not_resumed_twice(ip, local):
    """Another live process owns the job (as a kernel running it would): resume refuses; once that process
    is gone, `jobs` says so and resume finishes the job."""
    import json
    import sqlite3
    import subprocess
    import sys

    ip.user_ns["items"] = ["a", "b", "c"]
    batch = cell(ip, "tgi --handler tgi --batch items", "Q {text}")
    journal = ip.user_ns["_sm_magics"].runner.journal
    owner = subprocess.Popen([sys.executable, "-c", "import json, time; from sm_magic.records import owner; "
                              "print(json.dumps(owner()), flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        with sqlite3.connect(journal.path) as conn:  # the job as a live kernel would have left it
            meta = json.loads(conn.execute("SELECT meta FROM jobs WHERE id = ?", (batch.job_id,)).fetchone()[0])
            conn.execute("UPDATE jobs SET status = 'running', meta = ? WHERE id = ?",
                         (json.dumps({**meta, **json.loads(owner.stdout.readline())}), batch.job_id))
        before = local.calls["tgi"]
        with pytest.raises(ConfigError, match=f"Job {batch.job_id} is still running in another kernel"):
            ip.run_line_magic("sagemaker", f"resume {batch.job_id} again")
        with pytest.raises(ConfigError, match="still running in another kernel"):
            cell(ip, "tgi --handler tgi --batch items --resume", "Q {text}")
        assert local.calls["tgi"] == before
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()
    assert "stopped (its kernel is gone)" in repr(ip.run_line_magic("sagemaker", "jobs"))
    again = ip.run_line_magic("sagemaker", f"resume {batch.job_id} again")
    assert again.texts == batch.texts and local.calls["tgi"] == before  # all three were finished
    assert "stopped" not in repr(ip.run_line_magic("sagemaker", "jobs"))


def test_a_failed_stream_with_no_text_leaves_the_variable_alone(ip, local):
    ip.user_ns["r"] = "before"
    local.inject("faulty", Fault("model-error"))
    with pytest.raises(ModelError):
        cell(ip, "faulty --handler tgi --stream -o r")
    assert ip.user_ns["r"] == "before"


def test_an_endpoint_that_always_throttles_stops_the_batch(session, local, monkeypatch):
    monkeypatch.setattr("sm_magic.batch.THROTTLE_STREAK", 20)
    monkeypatch.setattr("sm_magic.batch.GIVE_UP_AFTER", 1.0)  # the default (30 s of nothing but refusals)
    local.inject("faulty", Fault("throttle", times=-1))
    before = local.calls["faulty"]
    handler = Registry().get("tgi")
    batch = run_batch(lambda p: invoke(session, "faulty", p, handler), [str(i) for i in range(50)], 4,
                      progress=False)
    sent = local.calls["faulty"] - before
    assert re.search(r"throttled every call for 1 s \(\d+ in a row\), so the batch stopped", batch.summary())
    assert f"throttled {sent}×" in batch.summary()  # every refusal counted once, in both places
    assert sent < 200  # not 50 items × 51 attempts
    local.clear_faults()


def test_a_round_of_refusals_at_high_concurrency_does_not_stop_the_batch(session, local):
    """64 calls refused at once is one round of throttling, not a dead endpoint: the batch backs off."""
    local.inject("faulty", Fault("throttle", times=60))
    handler = Registry().get("tgi")
    items = [str(i) for i in range(300)]
    batch = run_batch(lambda p: invoke(session, "faulty", p, handler), items, 64, progress=False)
    local.clear_faults()
    assert batch.failed == [] and not batch.gave_up and batch.texts == [f"You said: {i}" for i in items]
    assert batch.limiter.throttles == 60


def test_a_tei_endpoint_can_be_called_directly(ip):
    value = cell(ip, "tei-embedding", "a sentence to embed")  # detected from the TEI image
    assert value.handler == "tei-embedding" and len(value.data) == 1 and len(value.data[0]) > 8


def test_line_command_with_a_question_mark_shows_its_help(ip):
    shown = ip.run_line_magic("sagemaker", "alias?")
    assert "alias" in repr(shown) and "--region" in repr(shown)


def test_serve_adds_command_line_endpoints_to_the_files_and_explains_a_typo(tmp_path):
    import subprocess
    import sys

    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text('[[endpoints]]\nname = "slow"\nlatency = 0.05\n')
    bad.write_text('[[endpoints]]\nname = "slow"\nlatncy = 0.05\n')


    from sm_magic.cli import _server_config

    run = subprocess.run([sys.executable, "-m", "sm_magic.cli", "serve", "--config", str(bad)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode != 0 and "latncy" in run.stderr and "Traceback" not in run.stderr
    import argparse

    args = argparse.Namespace(config=str(good), host=None, port=0, region=None, backend="deterministic",
                              endpoint=["tgi=tgi"], verify_signatures=False)
    assert [e.name for e in _server_config(args).endpoints] == ["slow", "tgi"]
    ported = tmp_path / "ported.toml"  # the file's port is used unless --port says otherwise
    ported.write_text('port = 18123\n[[endpoints]]\nname = "slow"\n')
    for config, port, expected in ((ported, None, 18123), (good, None, 8080), (ported, 0, 0)):
        args = argparse.Namespace(config=str(config), host=None, port=port, region=None, backend="deterministic",
                                  endpoint=None, verify_signatures=False, command="serve")
        assert _server_config(args).port == expected


def test_resuming_a_batch_made_through_an_alias_calls_only_the_rest_with_the_alias_settings(ip, local):
    """Hostile pass: a job kept only the cell's own flags, so resuming one made through an alias called every
    item again as a new job, without the alias's headers and in the default region."""
    ip.run_line_magic("sagemaker", "alias add team faulty --handler tgi --max-new-tokens 4 "
                                   "--custom-attributes team=blue --region us-west-2")
    local.inject("faulty", Fault("model-error", times=3))
    ip.user_ns["items"] = [f"q{i}" for i in range(8)]
    batch = cell(ip, "team --batch items --concurrency 1 --yes", "Q {text}")
    assert len(batch.failed) == 3
    before = local.calls["faulty"]
    again = ip.run_line_magic("sagemaker", f"resume {batch.job_id} again")
    assert local.calls["faulty"] - before == 3 and len(again.ok) == 8 and again.job_id == batch.job_id
    rows = ip.user_ns["_sm_magics"].runner.journal.finished_items(batch.job_id).values()
    assert {(r.region, r.options.get("custom_attributes"), r.params.get("max_new_tokens")) for r in rows} == {
        ("us-west-2", "team=blue", 4)}


def test_an_endpoint_name_with_a_lone_surrogate_is_named_as_such(ip, local):
    before = sum(local.calls.values())
    with pytest.raises(ConfigError, match="The endpoint name cannot be sent: the character at index 2"):
        cell(ip, "tg\ud800i --handler tgi")
    assert sum(local.calls.values()) == before


def test_reload_ext_leaves_one_state_for_config(ip):
    """Hostile pass: after %reload_ext the old state stayed in shell.configurables, so %config of a handler only
    the new one knows printed an error from the old one."""
    from sm_magic.magics import SageMakerMagics
    from sm_magic.resolve import SageMaker

    again = SageMakerMagics(shell=ip)  # what %reload_ext sm_magic makes
    assert [c for c in ip.configurables if isinstance(c, SageMaker)] == [again.state]
