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


def bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("prune_embedded", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measured_is_the_childs_own_seconds_and_peak_rss():
    """Each run's peak RSS is its own, not the largest of the benchmark's children so far."""
    bench()  # puts benchmarks/ on the path, so its common module is importable
    measured = sys.modules["common"].measured
    big = measured([sys.executable, "-c", "x = bytearray(300 * 2**20); print(1)"])
    small = measured([sys.executable, "-c", "print(2)"])
    assert big["stdout"].strip() == "1" and big["seconds"] > 0
    assert big["peak_rss_bytes"] > 300 * 2**20 > small["peak_rss_bytes"]


def test_table_shows_the_goal_ratios():
    from types import SimpleNamespace

    peer = {"process_seconds": 40.0, "prune_seconds": 30.0, "peak_rss_bytes": 2**31}
    row = {
        "method": "wanda",
        "pattern": "2:4",
        "passes": 1,
        "dtype": "bfloat16",
        "process_seconds": 10.0,
        "prune_seconds": 6.0,
        "peak_rss_bytes": 2**30,
        "ppl_after": 20.2,
        "peer": {**peer, "ppl_after": 20.0},
        "x_peer": 0.25,
        "x_peer_prune": 0.2,
        "ppl_vs_peer": 1.01,
    }
    args = SimpleNamespace(nsamples=16, seqlen=512, ppl_windows=32)
    text = bench().table([row], {"forward_floor_seconds": 5.0, "ppl_dense": 15.0}, args)
    last = text.splitlines()[-1].split()
    assert last[:6] == ["2:4", "wanda", "1", "bfloat16", "10.0", "6.0"]
    assert last[-3:] == ["0.25", "0.20", "1.010"]


def test_the_peer_runs_in_the_dtype_of_the_rows_it_is_compared_with(tmp_path, monkeypatch):
    """A ratio against the peer compares one dtype: every peer run gets the rows' --dtype."""
    import json
    from types import SimpleNamespace

    module = bench()
    commands = []

    def measured(command, env=None):
        commands.append(command)
        peer_line = {"oneshot_seconds": 1.0} if "--windows" in command else {}
        return {"seconds": 2.0, "peak_rss_bytes": 2**30, "stdout": json.dumps(peer_line)}

    monkeypatch.setattr(sys.modules["common"], "measured", measured)  # run_peer's
    isolated = {"ppl_after": 20.0, "model_dir": "model", "windows": "windows.json"}
    monkeypatch.setattr(module, "run_isolated", lambda script, args: isolated)
    monkeypatch.setattr(
        module,
        "ours",
        lambda method, pattern, passes, dtype, work, args: {
            "dtype": dtype,
            "process_seconds": 1.0,
            "prune_seconds": 0.5,
            "ppl_after": 20.0,
        },
    )
    args = SimpleNamespace(
        patterns=["unstructured"],
        methods=["wanda"],
        dtypes=["float32", "bfloat16"],
        passes=[2],
        skip_peer=False,
        reconstruction=False,
        peer_python=Path("python"),
        peer_script=Path("peer.py"),
        nsamples=4,
        seqlen=32,
        ppl_windows=2,
        recon_epochs=1,
    )
    rows = module.measure_rows(tmp_path, [], 1.0, args)
    peer_dtypes = [c[c.index("--dtype") + 1] for c in commands if "--windows" in c]
    assert peer_dtypes == ["float32", "bfloat16"]
    assert [row["dtype"] for row in rows] == ["float32", "bfloat16"]
