"""The benchmark runs (tiny sizes, this environment). It asserts nothing about speed."""

import subprocess
import sys
from pathlib import Path

SECTIONS = ("per call", "%load_ext", "first call", "batch at 0 ms", "concurrency 64", "throttling", "capacity",
            "panel", "journal on/off", "streaming, unpaced", "batch", "streaming", "document QA", "local endpoint",
            "memory", "journal", "embeddings", "splitting")


def test_bench_quick_prints_every_section(tmp_path):
    out = tmp_path / "table.md"
    run = subprocess.run([sys.executable, "-m", "bench", "--here", "--quick", "--out", str(out)],
                         cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    table = out.read_text()
    missing = [section for section in SECTIONS if f"| {section} |" not in table]
    assert not missing, table
    failed = [line for line in table.splitlines() if "(this part failed)" in line]
    assert not failed, failed  # a part that raised is a row, not a crash: it must still fail this test
    assert "| per call | raw boto3 invoke_endpoint |" in table and "baseline" in table
    assert "own process" in table.splitlines()[0]  # the endpoint never shares the client's interpreter
