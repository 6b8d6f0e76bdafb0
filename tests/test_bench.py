"""The benchmark runs (tiny sizes, this environment). It asserts nothing about speed."""

import subprocess
import sys
from pathlib import Path


def test_bench_quick_prints_every_section(tmp_path):
    out = tmp_path / "table.md"
    run = subprocess.run([sys.executable, "-m", "bench", "--here", "--quick", "--out", str(out)],
                         cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    table = out.read_text()
    for section in ("per call", "%load_ext", "batch", "streaming", "document QA", "local endpoint", "memory"):
        assert f"| {section} |" in table
    assert "| per call | raw boto3 invoke_endpoint |" in table and "baseline" in table
