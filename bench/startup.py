"""Whole-process rows: ``%load_ext sm_magic`` against bare IPython (wall time and peak RSS), the first
``%%sagemaker`` call after ``%load_ext`` against a raw boto3 script's first call, and splitting a
50 MB text file (langchain-text-splitters today against the hand-written splitter it replaced).

Each case is a fresh interpreter; its peak RSS comes from ``os.wait4`` (the kernel's count for that
child alone).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.measure import Row, ms

IPYTHON = [sys.executable, "-m", "IPython", "--quick", "--no-banner", "-c"]


def run(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of one child process."""
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.PIPE, env=env, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        took = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        err = child.stderr.read() if child.stderr else ""
        if child.returncode != 0:
            raise RuntimeError(f"{command[-1][:80]!r} failed: {err[-1500:]}")
        out.seek(0)
        return took, usage.ru_maxrss / 1024, out.read()


def _env(url: str = "") -> dict[str, str]:
    # As installed for a user: bytecode caches written (pip writes them for IPython; an editable
    # install writes ours on first import, unless PYTHONDONTWRITEBYTECODE forbids it).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["SM_MAGIC_ENDPOINTS"] = os.devnull
    if url:
        env.update(SM_MAGIC_LOCAL_URL=url, AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s",
                   AWS_DEFAULT_REGION="us-east-1")
    return env


def _cases(cases: dict[str, list[str]], repeat: int, env: dict[str, str]) -> dict[str, tuple[list[float], list[float]]]:
    """Every case ``repeat`` times, interleaved; (wall times, peak RSS) per case."""
    for command in cases.values():  # warm-up: bytecode caches, the page cache
        run(command, env)
    out: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in cases}
    for _ in range(repeat):
        for name, command in cases.items():
            took, rss, _ = run(command, env)
            out[name][0].append(took)
            out[name][1].append(rss)
    return out


def load_ext(repeat: int = 10) -> list[Row]:
    """``ipython -c '%load_ext sm_magic'`` against ``ipython -c pass``: the README's figure."""
    cases = {"bare IPython (ipython -c pass)": [*IPYTHON, "pass"],
             "%load_ext sm_magic": [*IPYTHON, "%load_ext sm_magic"]}
    results = _cases(cases, repeat, _env())
    base_t, base_rss = (statistics.median(v) for v in results["bare IPython (ipython -c pass)"])
    rows = []
    for name, (times, rss) in results.items():
        t, r = statistics.median(times), statistics.median(rss)
        note = "baseline" if name.startswith("bare") else \
            f"+{(t - base_t) * 1000:.0f} ms, +{r - base_rss:.1f} MiB over bare IPython (goal ≤ +25 ms, ≤ +3 MiB)"
        rows.append(Row("%load_ext", f"{name}, whole process", *ms(times), note=f"peak RSS {r:.1f} MiB; {note}"))
    return rows


FIRST_RAW = ("import boto3, json; c = boto3.client('sagemaker-runtime', endpoint_url='{url}'); "
             "print(json.loads(c.invoke_endpoint(EndpointName='fast', Body=json.dumps({{'inputs': 'hi'}}), "
             "ContentType='application/json')['Body'].read())[0]['generated_text'])")
FIRST_MAGIC = ("%load_ext sm_magic\n%sagemaker session --local {url}\n"
               "get_ipython().run_cell_magic('sagemaker', 'fast --handler tgi', 'hi')")


def first_call(server: object, repeat: int = 5) -> list[Row]:
    """Start to first answer: a raw boto3 script (python and IPython) against ``%load_ext`` + ``%%sagemaker``."""
    url = server.url  # type: ignore[attr-defined]
    cases = {"raw boto3 script (python -c)": [sys.executable, "-c", FIRST_RAW.format(url=url)],
             "raw boto3 script (ipython -c)": [*IPYTHON, FIRST_RAW.format(url=url)],
             "%load_ext sm_magic + first %%sagemaker (ipython -c)": [*IPYTHON, FIRST_MAGIC.format(url=url)]}
    results = _cases(cases, repeat, _env(url))
    base = statistics.median(results["raw boto3 script (ipython -c)"][0])
    rows = []
    for name, (times, rss) in results.items():
        t = statistics.median(times)
        rows.append(Row("first call", name, *ms(times), f"{t / base:.2f}×",
                        f"{(t - base) * 1000:+.0f} ms vs raw boto3 in IPython; peak RSS "
                        f"{statistics.median(rss):.0f} MiB"))
    return rows


SPLIT_SCRIPT = """
import json, resource, sys, time
from pathlib import Path
text = Path(sys.argv[2]).read_text()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if sys.argv[1] == "new":
    from sm_magic.qa import SourceText, split
    chunks = split([SourceText(text, "big.txt")], 500, 50)
else:
    from bench.old_splitter import Document, split
    chunks = split([Document(text, "big.txt")], 500, 50)
took = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": took, "growth_kib": after - before, "chunks": len(chunks)}))
"""


def write_text(path: Path, size: int) -> None:
    """``size`` bytes of prose: sentences of varied length in paragraphs, as a long report reads."""
    words = ("the committee reviewed budget station river harvest council library winter market bridge "
             "engine garden ledger archive north wing flood report").split()
    parts, total, i = [], 0, 0
    while total < size:
        sentence = " ".join(words[(i * 7 + k) % len(words)] for k in range(6 + i % 17)).capitalize() + ". "
        parts.append(sentence + ("\n\n" if i % 9 == 8 else ""))
        total += len(parts[-1])
        i += 1
    path.write_text("".join(parts))


def splitting(size: int = 50_000_000) -> list[Row]:
    """``sm_magic.qa.split`` (langchain-text-splitters) against the old hand-written splitter: time, peak memory."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.txt"
        write_text(path, size)
        found = {}
        for kind in ("old", "new"):
            _, _, out = run([sys.executable, "-c", SPLIT_SCRIPT, kind, str(path)], _env())
            found[kind] = json.loads(out.strip().splitlines()[-1])
    label = f"{size / 1e6:.0f} MB text, 500-token chunks, 50 overlap"
    for kind, name in (("old", "hand-written splitter (before, bc0cb2d)"),
                       ("new", "sm_magic.qa.split (langchain-text-splitters)")):
        r = found[kind]
        rows.append(Row("splitting", f"{label}: {name}", f"{r['seconds']:.2f} s",
                        ratio=f"{r['seconds'] / found['old']['seconds']:.2f}×",
                        note=f"peak memory +{r['growth_kib'] / 1024:.0f} MiB over the loaded text; "
                             f"{r['chunks']:,} chunks"))
    return rows
