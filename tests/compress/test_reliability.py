"""Faults a run meets on its way: two runs into one output, an output that cannot be
written or fills its disk, non-finite weights, signals, and the small refusals. Each is one
line through the CLI, and nothing finished is lost."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from compress.cli.main import app
from compress.core.claim import lock_path, output_lock
from tests.compress.test_refusals import refused, snapshot

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--nsamples", "4", "--seqlen", "32", "--batch-size", "2", "--device", "cpu"]
LR = [*FAST, "--reconstruct", "lr"]
# A process holding an output's lock, as a running compress does: prints "held", waits on stdin.
HOLD = (
    "import sys\n"
    "from compress.core.claim import output_lock\n"
    "with output_lock(sys.argv[1]):\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.read()\n"
)


def hold_lock(target: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.fixture
def held(tmp_path):
    """``tmp_path / "out"`` locked by another live process (yielded with its PID)."""
    target = tmp_path / "out"
    holder = hold_lock(target)
    yield target, holder.pid
    holder.kill()
    holder.wait()


def commands(model: Path, target: Path) -> dict[str, list]:
    """Every command that writes a run's worth of output to ``target``."""
    return {
        "prune": ["prune", model, "--output", target, *FAST],
        "export onnx": ["export", "onnx", model, "--output", target],
        "export bnb": ["export", "bnb", model, "--output", target],
        "export compressed": ["export", "compressed", model, "--output", target],
        "finetune": ["finetune", model, "--output", target],
        "calib generate": ["calib", "generate", model, "--output", target, "--n", "1"],
    }


# -- item 2: two runs into one output ----------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    ["prune", "export onnx", "export bnb", "export compressed", "finetune", "calib generate"],
)
def test_a_second_run_into_a_claimed_output_is_refused_naming_the_first(
    name, held, tiny_model_dir, tmp_path
):
    target, pid = held
    refused(commands(tiny_model_dir, target)[name], tmp_path, str(target), f"PID {pid}")


def test_the_lock_dies_with_its_process(tmp_path):
    target = tmp_path / "out"
    holder = hold_lock(target)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_path(target).exists()  # left behind by the killed process, and harmless
    with output_lock(target):
        assert lock_path(target).read_text().strip() == str(os.getpid())
    assert not lock_path(target).exists()


def test_a_refused_lock_leaves_no_folder_behind(held, tmp_path):
    target, _ = held
    deeper = tmp_path / "a" / "b" / "out"
    with output_lock(deeper):
        assert (tmp_path / "a" / "b").is_dir()
    assert not (tmp_path / "a").exists()


@pytest.mark.slow
def test_two_prunes_started_together_give_one_output_and_one_refusal(tiny_model_dir, tmp_path):
    """Main: both printed 'wrote' (one silently replaced the other) or one crashed in
    save_output with a SafetensorError traceback."""
    target = tmp_path / "out"
    argv = [str(ROOT / ".venv/bin/compress"), "prune", str(tiny_model_dir), "--output", str(target)]
    runs = [
        subprocess.Popen([*argv, *LR], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(run.wait(), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refusal = next(err for code, err in results if code == 2)
    assert "Traceback" not in refusal
    assert len([line for line in refusal.splitlines() if line.startswith("error:")]) == 1
    assert load_file(target / "model.safetensors")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")]
    assert leftovers == [], leftovers


def test_the_target_is_checked_again_before_publishing(tiny_model_dir, tmp_path, monkeypatch):
    """A folder that appeared at the target during the run (not by compress: the lock keeps
    compress out) is not replaced without --overwrite; the run's checkpoints are kept."""
    from compress.cli import prune as prune_cli

    target = tmp_path / "out"

    def appear(done: int, total: int, rate: float) -> None:
        if done == total:
            target.mkdir()
            (target / "theirs.txt").write_text("someone else's work")

    monkeypatch.setattr(prune_cli, "_progress", lambda: appear)
    args = ["prune", tiny_model_dir, "--output", target, *LR]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 2 and "exists and is not empty" in result.stderr
    assert [p.name for p in target.iterdir()] == ["theirs.txt"]
    assert (tmp_path / ".out.work" / "state.json").is_file()
    assert not (tmp_path / ".out.partial").exists()


# -- item 3: outputs that cannot be written ----------------------------------------------------
def mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=False)
    if done.returncode != 0:
        pytest.skip("mounting a tmpfs needs root (CI and the dev machines run as root)")


@pytest.fixture
def small_disk(tmp_path):
    """A 160 MiB filesystem of its own (room for the tiny model's output, 115 MB, and not much
    more), unmounted afterwards."""
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "size=160m")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.fixture
def read_only_disk(tmp_path):
    disk = tmp_path / "ro"
    mount_tmpfs(disk, "size=1m,ro")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def must_not_load(monkeypatch) -> None:
    """Fail the test if the command gets as far as loading a model."""
    import compress.model.loading

    def load_model(*args, **kwargs):
        raise AssertionError("loaded a model before refusing the output")

    monkeypatch.setattr(compress.model.loading, "load_model", load_model)
    monkeypatch.setattr("compress.app.prune.load_model", load_model)


@pytest.mark.parametrize(
    "name",
    ["prune", "export onnx", "export bnb", "export compressed", "finetune", "calib generate"],
)
def test_an_output_under_a_file_is_refused_before_loading(
    name, tiny_model_dir, tmp_path, monkeypatch
):
    """Main: a 100-line traceback, after the model was loaded (and pruned)."""
    must_not_load(monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = blocker / "out"
    refused(commands(tiny_model_dir, target)[name], tmp_path, str(blocker), "is a file")


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "ppl", "MODEL", "--device", "cpu", "--json", "TARGET"],
        ["info", "OUTPUT", "--plot", "TARGET"],
    ],
    ids=["eval ppl --json", "info --plot"],
)
def test_a_file_output_under_a_file_is_refused_before_the_work(
    args, tiny_model_dir, tmp_path, monkeypatch
):
    must_not_load(monkeypatch)
    (tmp_path / "output").mkdir()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    values = {"MODEL": tiny_model_dir, "OUTPUT": tmp_path / "output", "TARGET": blocker / "x"}
    refused([values.get(a, a) for a in args], tmp_path, str(blocker), "is a file")


def test_an_output_under_proc_is_refused_before_loading(tiny_model_dir, tmp_path, monkeypatch):
    must_not_load(monkeypatch)
    target = Path("/proc/compress-test/out")
    refused(["prune", tiny_model_dir, "--output", target, *FAST], tmp_path, str(target))


def test_an_output_on_a_read_only_filesystem_is_refused_before_loading(
    read_only_disk, tiny_model_dir, tmp_path, monkeypatch
):
    must_not_load(monkeypatch)
    target = read_only_disk / "out"
    refused(
        ["prune", tiny_model_dir, "--output", target, *FAST],
        tmp_path,
        str(target),
        "Read-only file system",
    )


def test_an_output_disk_without_room_is_refused_before_loading(tiny_model_dir, tmp_path):
    disk = tmp_path / "tiny-disk"
    mount_tmpfs(disk, "size=8m")
    try:
        target = disk / "out"
        refused(["prune", tiny_model_dir, "--output", target, *FAST], tmp_path, "not enough disk")
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.slow
def test_a_disk_that_fills_during_the_run_keeps_the_checkpoints_for_resume(
    small_disk, tiny_model_dir, tmp_path, monkeypatch
):
    """Main: a SafetensorError traceback at the final write, and ``.out.partial`` left beside
    ``.out.work``. Now: one line, no staging folder, and ``--resume`` finishes once there is
    room, with the weights a run without the fault writes."""
    from compress.cli import prune as prune_cli

    target, filler = small_disk / "out", small_disk / "filler"

    def fill_the_disk(done: int, total: int, rate: float) -> None:
        if done == total:  # what another process might do while this one prunes
            free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
            filler.write_bytes(b"\0" * (free - 4 * 1024**2))

    monkeypatch.setattr(prune_cli, "_progress", lambda: fill_the_disk)
    args = [str(a) for a in ["prune", tiny_model_dir, "--output", target, *LR]]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], result.stderr
    assert "--resume" in errors[0] and "Traceback" not in result.output
    assert not target.exists() and not (small_disk / ".out.partial").exists()
    assert (small_disk / ".out.work" / "state.json").is_file()

    filler.unlink()
    monkeypatch.undo()
    resumed = CliRunner().invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert not (small_disk / ".out.work").exists()
    fresh = tmp_path / "fresh"
    assert CliRunner().invoke(app, [*args[:2], "--output", str(fresh), *args[4:]]).exit_code == 0
    saved, expected = (
        load_file(target / "model.safetensors"),
        load_file(fresh / "model.safetensors"),
    )
    assert all(torch.equal(saved[name], expected[name]) for name in expected)


def test_a_failed_write_of_a_json_result_is_one_line(tiny_model_dir, tmp_path, monkeypatch):
    """A disk that fails as eval ppl writes --json: one line naming the file and the reason."""
    import errno

    import compress.core.io as io

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io.tempfile, "mkstemp", full)
    out = tmp_path / "ppl.json"
    args = ["eval", "ppl", tiny_model_dir, "--seqlen", "32", "--eval-windows", "1"]
    refused([*args, "--device", "cpu", "--json", out], tmp_path, str(out), "No space left")


# -- item 4: non-finite weights ----------------------------------------------------------------
def with_bad_value(
    source: Path, folder: Path, tensor: str, value: float, everywhere: bool = False
) -> Path:
    """A copy of the model folder ``source`` with one entry of ``tensor`` (or all of them) set
    to ``value``."""
    import shutil

    shutil.copytree(source, folder)
    weights = load_file(folder / "model.safetensors")
    weights[tensor] = weights[tensor].clone()
    weights[tensor][(...,) if everywhere else (0, 0)] = value
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


@pytest.mark.parametrize("method", ["wanda", "sparsegpt", "magnitude"])
def test_a_nan_weight_is_refused_naming_the_tensor(method, tiny_model_dir, tmp_path):
    """Main: Wanda wrote the NaN tensor with blocks 75% sparse at a 50% target; SparseGPT blamed
    the calibration set ("Hessian is not positive definite")."""
    name = "model.layers.1.self_attn.q_proj.weight"
    model = with_bad_value(tiny_model_dir, tmp_path / "nan-model", name, float("nan"))
    args = ["prune", model, "--output", tmp_path / "out", "--method", method, *LR]
    refused(args, tmp_path, name, "NaN", "damaged")


def test_activations_that_overflow_are_refused_naming_the_block(tiny_model_dir, tmp_path):
    name = "model.layers.0.post_attention_layernorm.weight"  # finite, but gate x up overflows
    model = with_bad_value(tiny_model_dir, tmp_path / "huge-model", name, 3e38, everywhere=True)
    args = ["prune", model, "--output", tmp_path / "out", *LR]
    refused(args, tmp_path, "activations leaving block 0", "Inf")


def test_a_model_that_turned_non_finite_is_never_written(tiny_model_dir, tmp_path, monkeypatch):
    """Whatever made the weights non-finite during the run (a diverged reconstruction, say),
    the output is not published."""
    from compress.engine.steps import Engine

    run = Engine.run

    def diverge(self, *args, **kwargs):
        outcome = run(self, *args, **kwargs)
        with torch.no_grad():
            self.adapter.blocks[0].mlp.up_proj.weight[1, 2] = float("inf")
        return outcome

    monkeypatch.setattr(Engine, "run", diverge)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, [str(a) for a in ["prune", tiny_model_dir, "--output", out, *LR]]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "model.layers.0.mlp.up_proj.weight" in line and "nothing was written" in line
    assert not out.exists() and not (tmp_path / ".out.partial").exists()


# -- item 10: the small ones -------------------------------------------------------------------
def test_a_sparsity_that_prunes_every_weight_is_refused(tiny_model_dir, tmp_path):
    """Main: 0.999999 was accepted and emptied every layer, while 1.0 is refused."""
    args = ["prune", tiny_model_dir, "--output", tmp_path / "out", *FAST, "--sparsity", "0.999999"]
    refused(args, tmp_path, "0.999999", "prunes all")


@pytest.mark.parametrize("flag", ["--recon-batch", "--batch-size"])
def test_a_zero_batch_names_the_flag_typed(flag, tmp_path):
    refused(["prune", "--output", tmp_path / "out", flag, "0"], tmp_path, flag, "at least 1")


def test_resume_without_a_checkpoint_says_so(tiny_model_dir, tmp_path):
    args = ["prune", tiny_model_dir, "--output", tmp_path / "out", *LR, "--resume"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert (
        "--resume: no checkpoint in" in result.stderr and "starting from block 0" in result.stderr
    )


def test_outputs_get_the_users_umask(tiny_model_dir, tmp_path):
    """Main: model.safetensors was 0600 and ONNX export folders 0700 (mkstemp, mkdtemp)."""
    old = os.umask(0o022)
    try:
        out = tmp_path / "out"
        args = ["prune", tiny_model_dir, "--output", out, *LR]
        assert CliRunner().invoke(app, [str(a) for a in args]).exit_code == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [out, *out.iterdir()]}
    assert modes == {name: 0o755 if name == "out" else 0o644 for name in modes}, modes


# A prune whose second block waits until the test has sent its signal.
SLOW_PRUNE = (
    "import sys, time\n"
    "from compress.engine.steps import Engine\n"
    "step = Engine.step\n"
    "def slow(self, i, sets):\n"
    "    if i == 1:\n"
    "        time.sleep(60)\n"
    "    return step(self, i, sets)\n"
    "Engine.step = slow\n"
    "from compress.cli.main import app\n"
    "app(sys.argv[1:])\n"
)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_says_where_resume_continues(sig, code, tiny_model_dir, tmp_path):
    """Main: SIGINT printed nothing. Now one line naming the block --resume continues from."""
    out = tmp_path / "out"
    args = ["prune", str(tiny_model_dir), "--output", str(out), *LR, "--checkpoint-every", "0"]
    run = subprocess.Popen(
        [sys.executable, "-c", SLOW_PRUNE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    state = tmp_path / ".out.work" / "state.json"
    deadline = time.monotonic() + 120
    while not state.exists() and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.2)
    assert state.exists(), run.communicate()
    run.send_signal(sig)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == code, stderr
    assert stderr.splitlines()[-1] == "error: interrupted; --resume continues from block 1"
    assert "Traceback" not in stderr
    assert not lock_path(out).exists() and not out.exists()
    assert snapshot(tmp_path / ".out.work")


def test_sigterm_unwinds_this_process_and_still_ends_forked_workers():
    """A pool forked inside a command (lm-eval's bootstrap) terminates its workers with SIGTERM
    and waits for them: the handler must end a forked child as usual (the first version raised
    in the workers too, and the pool waited forever), and is restored after the command."""
    import multiprocessing

    from compress.cli.base import sigterm_unwinds
    from compress.core.errors import Terminated

    before = signal.getsignal(signal.SIGTERM)
    with sigterm_unwinds():
        pool = multiprocessing.get_context("fork").Pool(2)
        assert pool.map(abs, [-1, -2]) == [1, 2]
        started = time.monotonic()
        pool.terminate()
        pool.join()
        assert time.monotonic() - started < 10
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs at the next bytecode boundary
    assert signal.getsignal(signal.SIGTERM) == before
