"""Shared helpers for the benchmark scripts: machine description, tables, JSON output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from compress.model.placement import peak_rss_bytes  # noqa: F401  (re-exported for the scripts)

REPO = Path(__file__).resolve().parents[1]


def beside_repo(relative: str) -> Path:
    """``relative`` next to the checkout (``/work/main`` -> ``/work/...``), or next to the folder
    holding it (a worktree under ``/work/wt``); the first that exists, else the first."""
    candidates = [REPO.parent / relative, REPO.parent.parent / relative]
    return next((path for path in candidates if path.exists()), candidates[0])


def add_peer_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a benchmark that runs the peer: its venv's python, and the two steps the
    benchmark runs in fresh processes of its own (writing the windows the peer is fed, scoring
    a folder the peer wrote)."""
    parser.add_argument("--peer-python", type=Path, default=beside_repo(".peer/bin/python"))
    parser.add_argument("--write-windows", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ppl-of", help=argparse.SUPPRESS)


def require_peer_venv(python: Path, instead: str) -> None:
    """One error line and exit 2, before any work, when the peer's venv is not there."""
    if not python.exists():
        print(
            f"error: no peer venv at {python}; create it (../shared/bench/README.md) or {instead}",
            file=sys.stderr,
        )
        sys.exit(2)


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }


def run_isolated(script: str, args: list[str]) -> dict:
    """Run ``script --one ...`` in a fresh process (for a clean peak RSS); parse its last JSON line."""
    out = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


MEASURED = """import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"rc": done.returncode, "seconds": time.perf_counter() - start,
    "peak_rss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    "stdout": done.stdout[-4000:], "stderr": done.stderr[-4000:]}))"""


def measured(command: list[str], env: dict | None = None) -> dict:
    """``command`` in a fresh process under a fresh parent: its wall seconds (interpreter start
    to exit) and its own peak RSS (the parent's only child); raises on a failure."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, *command],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    result = json.loads(done.stdout)
    if result["rc"] != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result['stderr']}")
    return result


def write_windows_file(path: Path, tokenizer_folder: Path, nsamples: int, seqlen: int) -> None:
    """The calibration windows ``compress prune --calib wikipedia --seed 0`` draws, as token-id
    lists in ``path`` (the peer's ``--windows``: both sides calibrate on the very same tokens)."""
    from transformers import AutoTokenizer

    from compress.data.calibration import load_windows

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    windows = load_windows(tokenizer, "wikipedia", nsamples, seqlen, seed=0)
    path.write_text(json.dumps(windows.ids.tolist()))


def run_compress_prune(
    model: str | None,
    method: str,
    pattern: str,
    calibration: tuple[int, int],
    out: Path,
    *extra: str,
) -> dict:
    """``compress prune`` as a user runs it (Wikipedia calibration, seed 0, no reconstruction,
    CPU; ``extra`` flags after), measured by :func:`measured`; ``calibration``: (nsamples, seqlen)."""
    nsamples, seqlen = calibration
    command = [sys.executable, "-m", "compress.cli", "prune", *([model] if model else [])]
    command += ["--method", method, "--pattern", pattern, "--calib", "wikipedia"]
    command += ["--nsamples", str(nsamples), "--seqlen", str(seqlen), "--seed", "0"]
    command += ["--reconstruct", "lr", "--device", "cpu", *extra, "--output", str(out)]
    return measured(command, {**os.environ, "PYTHONPATH": str(REPO)})


def run_peer(
    python: Path,
    script: Path,
    model: str,
    method: str,
    pattern: str,
    windows: str,
    dtype: str,
    out: Path,
) -> tuple[dict, dict]:
    """llm-compressor through ``script`` in its own venv on the token-id ``windows`` file, in
    ``dtype``: (:func:`measured`'s result, the JSON line the script prints)."""
    command = [str(python), str(script), model, "-", str(out), "--method", method]
    command += ["--pattern", pattern, "--windows", windows, "--dtype", dtype]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the peer's own stack
    run = measured(command, env)
    return run, json.loads(run["stdout"].strip().splitlines()[-1])


def save(path: Path, data: dict) -> None:
    from compress.core.io import write_json_atomic

    write_json_atomic(path, data)
    print(f"wrote {path}")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (how busy the machine was around a measurement)."""
    return [round(x, 2) for x in os.getloadavg()]


def resumed(path: Path, settings: dict) -> list[dict]:
    """The rows already in ``path`` that were measured with ``settings`` (to resume a sweep)."""
    if not path.exists():
        return []
    return [
        r for r in json.loads(path.read_text()).get("rows", []) if r.get("settings") == settings
    ]


def save_rows(path: Path, data: dict, settings: dict, rows: list[dict]) -> None:
    """Write ``data`` with ``rows`` (each tagged with ``settings``) after the rows of other
    settings already in ``path``, atomically: called after every result, so a sweep resumes."""
    others = []
    if path.exists():
        others = [
            r for r in json.loads(path.read_text()).get("rows", []) if r.get("settings") != settings
        ]
    save(path, {**data, "rows": others + [r | {"settings": settings} for r in rows]})


def sweep(
    output: Path,
    settings: dict,
    configurations: list[tuple],
    key: Callable[[dict], tuple],
    measure: Callable[[tuple], dict],
    redo: bool = False,
) -> list[dict]:
    """Measure every configuration whose ``key`` is not among the rows ``output`` already holds
    for ``settings`` (all of them with ``redo``), printing each row and saving it to ``output``
    as soon as it is measured, so an interrupted sweep resumes; returns the rows in the order of
    ``configurations``. The file records the machine and the load average at start and end."""
    rows = [] if redo else resumed(output, settings)
    result = {"machine": machine(), "settings": settings, "load_average_start": load_average()}
    for configuration in configurations:
        if any(key(r) == configuration for r in rows):
            continue
        row = measure(configuration)
        rows = [r for r in rows if key(r) != configuration] + [row]
        print(json.dumps(row), flush=True)
        save_rows(output, result, settings, rows)
    order = {configuration: n for n, configuration in enumerate(configurations)}
    rows.sort(key=lambda r: order.get(key(r), len(order)))
    result["load_average_end"] = load_average()
    save_rows(output, result, settings, rows)
    return rows


def load_peer_folder(folder: str):
    """The peer's pruned model with the embedded model's own tokenizer, as (model, tokenizer).

    The peer runs in its own venv (transformers 5.17), whose ``save_pretrained`` rewrites the
    tokenizer files; read back, they split text differently (dense perplexity 37.6 becomes 166.8
    on the same text), so scoring with the folder's tokenizer would score other token ids than
    ours. The weights are what is compared; the tokenizer must be the one both runs calibrated on.
    """
    from transformers import AutoTokenizer

    from compress.model.loading import embedded_model_dir, load_model

    loaded = load_model(folder, "cpu", "float32")
    return loaded.model, AutoTokenizer.from_pretrained(embedded_model_dir())


def prune_lr(folder: Path, method: str, pattern: str, nsamples: int, seqlen: int, device: str):
    """``compress prune`` of the embedded model into ``folder`` with the pruner's own update
    alone (``--reconstruct lr``, no evaluation), the starting point of the deployment benchmarks;
    its progress is printed."""
    from compress.app.prune import run_prune
    from compress.core.config import (
        CalibrationConfig,
        EvalConfig,
        Method,
        PruneConfig,
        ReconstructConfig,
        Technique,
    )

    config = PruneConfig(
        method=Method(method),
        pattern=pattern,
        reconstruct=ReconstructConfig(technique=Technique.lr),
        calibration=CalibrationConfig(nsamples=nsamples, seqlen=seqlen),
        evaluation=EvalConfig(enabled=False),
        device=device,
        output=str(folder),
        overwrite=True,
    )
    run_prune(config, log=lambda message: print(message, flush=True))
    return folder
