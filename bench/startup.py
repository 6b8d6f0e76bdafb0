"""Whole-process rows: ``%load_ext sm_magic`` against bare IPython (wall time and peak RSS), the first
``%%sagemaker`` call after ``%load_ext`` against a raw boto3 script's first call, and splitting a
50 MB text file (langchain-text-splitters today against the hand-written splitter it replaced).

Each case is a fresh interpreter that reports its own peak RSS (``VmHWM``) as its last line.
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
# Appended to each child's code: its own peak RSS. (ru_maxrss from wait4 would include the parent's
# pages: Linux keeps the high-water mark of the forked copy across exec.)
HWM = "\nprint('VmHWM', [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"


def run(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of one child process (its code ends with :data:`HWM`)."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command[-1][:80]!r} failed: {done.stderr[-1500:]}")
    peaks = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("VmHWM ")]
    return took, int(peaks[-1]) / 1024 if peaks else 0.0, done.stdout


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
    cases = {"bare IPython (ipython -c pass)": [*IPYTHON, "pass" + HWM],
             "%load_ext sm_magic": [*IPYTHON, "%load_ext sm_magic" + HWM]}
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
    cases = {"raw boto3 script (python -c)": [sys.executable, "-c", FIRST_RAW.format(url=url) + HWM],
             "raw boto3 script (ipython -c)": [*IPYTHON, FIRST_RAW.format(url=url) + HWM],
             "%load_ext sm_magic + first %%sagemaker (ipython -c)": [*IPYTHON, FIRST_MAGIC.format(url=url) + HWM]}
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
import json, sys, time, tracemalloc
from pathlib import Path
if sys.argv[1] == "new":
    from sm_magic.qa import SourceText as Document, split
    import langchain_text_splitters  # imported before the clock starts, as in a warm kernel
else:
    from bench.old_splitter import Document, split
text = Path(sys.argv[2]).read_text()
traced = sys.argv[3] == "memory"
if traced:
    tracemalloc.start()
start = time.perf_counter()
chunks = split([Document(text, "big.txt")], 500, 50)
took = time.perf_counter() - start
peak = tracemalloc.get_traced_memory()[1] if traced else 0
print(json.dumps({"seconds": took, "peak": peak, "chunks": len(chunks)}))
"""


def _answer(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


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
        for kind in ("old", "new"):  # time untraced; the allocation peak in a second run under tracemalloc
            timed = _answer(run([sys.executable, "-c", SPLIT_SCRIPT, kind, str(path), "time"], _env())[2])
            traced = _answer(run([sys.executable, "-c", SPLIT_SCRIPT, kind, str(path), "memory"], _env())[2])
            found[kind] = {**timed, "peak": traced["peak"]}
    label = f"{size / 1e6:.0f} MB text, 500-token chunks, 50 overlap"
    for kind, name in (("old", "hand-written splitter (before, bc0cb2d)"),
                       ("new", "sm_magic.qa.split (langchain-text-splitters)")):
        r = found[kind]
        rows.append(Row("splitting", f"{label}: {name}", f"{r['seconds']:.2f} s",
                        ratio=f"{r['seconds'] / found['old']['seconds']:.2f}×",
                        note=f"peak allocated while splitting {r['peak'] / 2**20:.0f} MiB (tracemalloc, the "
                             f"{size / 2**20:.0f} MiB text not counted); {r['chunks']:,} chunks"))
    return rows
