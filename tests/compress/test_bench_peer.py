"""benchmarks/prune_embedded.py: without the peer's venv it says so in one line (or skips it)."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "prune_embedded.py"


def test_absent_peer_venv_is_one_error_line_naming_the_flag(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--peer-python", str(tmp_path / "none" / "python")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: no peer venv")
    assert "--skip-peer" in done.stderr and "Traceback" not in done.stderr
    assert "load average" not in done.stdout  # refused before any work
