"""Does a large push resume after a kill, sending only what the Hub lacks, in flat memory?

Builds a folder shaped like a Llama checkpoint in bfloat16 (random bytes in valid safetensors
shards, the index, config.json and a README.md card), serves the test fake Hub
(``tests/exporters/fake_hub.py``, Git LFS without Xet, objects on disk; ``--part-mb`` makes it
ask for multipart uploads, as the Hub does for large objects) from this process, and
runs ``compress push`` three times, each in a fresh process whose peak RSS is read from
``wait4``:

- baseline: a ~20 MB folder of the same layout, pushed whole (what the interpreter and the
  libraries cost before any file size counts);
- killed: the folder, SIGKILLed once ``--kill-after-objects`` LFS objects are stored (or, with
  ``--kill-at``, once that fraction of the folder's bytes arrived);
- resumed: the very same command again; the Hub side then lists which objects it received, so
  the table shows that none already stored was sent again, and the repository is checked
  against the folder's sha256s.

A shard still on the wire at the kill is sent again whole (LFS keeps no partial object), so
how much a resume saves depends on where the kill falls among the concurrent uploads (five at a
time); ``--kill-at`` shows the other cases.

Shapes: ``7b`` is Llama-2-7B (6.74 B parameters, 13.5 GB), ``1b`` TinyLlama-1.1B (2.2 GB).
The folder is kept under ``--work`` and reused by later runs; the fake Hub's objects take as much
disk again and are deleted at the end.

Run: ``.venv/bin/python benchmarks/push_scale.py --shape 1b --shard-gb 0.5`` (~2 GB; about a
minute here), ``--shape 7b`` for the 7B folder (13.5 GB, 27 GB of disk with the Hub's copy).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import REPO, load_average, machine, save  # noqa: E402

from compress.cli.render import table  # noqa: E402
from tests.exporters.fake_hub import FakeHub, HubStore  # noqa: E402

TOKEN = "hf_pushScaleBenchmarkToken0123456789"
PIECE = 16 << 20  # bytes of random data generated and written at a time
SHAPES = {  # layers, hidden, key/value width, intermediate, vocabulary
    "7b": (32, 4096, 4096, 11008, 32000),
    "1b": (22, 2048, 256, 5632, 32000),
    "tiny": (2, 256, 256, 688, 32000),
}


def tensors(shape: str) -> list[tuple[str, tuple[int, ...]]]:
    """The Llama parameter names and shapes, in checkpoint order."""
    layers, hidden, kv, inter, vocab = SHAPES[shape]
    out = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", (hidden, hidden)),
            (p + "self_attn.k_proj.weight", (kv, hidden)),
            (p + "self_attn.v_proj.weight", (kv, hidden)),
            (p + "self_attn.o_proj.weight", (hidden, hidden)),
            (p + "mlp.gate_proj.weight", (inter, hidden)),
            (p + "mlp.up_proj.weight", (inter, hidden)),
            (p + "mlp.down_proj.weight", (hidden, inter)),
            (p + "input_layernorm.weight", (hidden,)),
            (p + "post_attention_layernorm.weight", (hidden,)),
        ]
    return out + [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]


def shards(shape: str, shard_bytes: int) -> list[list[tuple[str, tuple[int, ...]]]]:
    """Tensors grouped in order into shards of at most ``shard_bytes`` (bfloat16: 2 bytes)."""
    groups, size = [[]], 0
    for name, dims in tensors(shape):
        nbytes = 2 * _numel(dims)
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append((name, dims))
        size += nbytes
    return groups


def make_folder(folder: Path, shape: str, shard_bytes: int) -> None:
    """Write the checkpoint folder (skipped when its index is already there)."""
    if (folder / "model.safetensors.index.json").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    groups = shards(shape, shard_bytes)
    weight_map = {}
    for i, group in enumerate(groups, 1):
        name = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        _write_safetensors(folder / name, group)
        weight_map.update(dict.fromkeys((t for t, _ in group), name))
    layers, hidden, kv, inter, vocab = SHAPES[shape]
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "num_hidden_layers": layers,
        "hidden_size": hidden,
        "num_attention_heads": hidden // 64,
        "num_key_value_heads": kv // 64,
        "intermediate_size": inter,
        "vocab_size": vocab,
        "torch_dtype": "bfloat16",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "README.md").write_text(f"---\nlicense: other\n---\n# push_scale {shape}\n")
    total = sum(2 * _numel(dims) for _, dims in tensors(shape))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def _write_safetensors(path: Path, group: list[tuple[str, tuple[int, ...]]]) -> None:
    """A valid safetensors file of random bfloat16 payload, written piece by piece."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, dims in group:
        nbytes = 2 * _numel(dims)
        header[name] = {
            "dtype": "BF16",
            "shape": list(dims),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    partial = path.with_suffix(".partial")
    with partial.open("wb") as out:
        out.write(len(encoded).to_bytes(8, "little") + encoded)
        for left in range(offset, 0, -PIECE):
            out.write(os.urandom(min(left, PIECE)))
    partial.replace(path)


def _numel(dims: tuple[int, ...]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(PIECE):
            digest.update(piece)
    return digest.hexdigest()


def received_bytes(store: HubStore) -> int:
    """Bytes the fake Hub holds: stored objects and uploads still arriving."""
    return sum(p.stat().st_size for p in store.blob_dir.rglob("*") if p.is_file())


def push(folder: Path, repo_id: str, hub: FakeHub, env: dict, kill_when=None) -> dict:
    """``compress push`` in a fresh process; its seconds, peak RSS and exit (``killed`` when
    ``kill_when(store)`` turned true first)."""
    command = [sys.executable, "-m", "compress.cli", "push", str(folder), "--repo-id", repo_id]
    log = hub.store.blob_dir.parent / f"{repo_id.replace('/', '_')}.log"
    start, killed = time.perf_counter(), False
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=out, cwd=REPO)
        while process.poll() is None and kill_when is not None:
            if kill_when(hub.store):
                process.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.05)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0 and not killed:
        raise RuntimeError(f"{' '.join(command)} exited {rc}; see {log}")
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "killed": killed, "rc": rc}  # fmt: skip


def run(args: argparse.Namespace) -> dict:
    work = args.work.resolve()
    folder = args.folder or work / f"folder-{args.shape}-{args.shard_gb:g}gb"
    tiny = work / "folder-tiny"
    started = time.perf_counter()
    if args.folder is None:
        make_folder(folder, args.shape, int(args.shard_gb * 1e9))
    make_folder(tiny, "tiny", 10_000_000)
    made = time.perf_counter() - started
    files = sorted(p for p in folder.iterdir() if p.is_file())
    total = sum(p.stat().st_size for p in files)

    hub_dir = work / "hub"
    shutil.rmtree(hub_dir, ignore_errors=True)
    part_size = int(args.part_mb * 2**20) if args.part_mb else None
    store = HubStore(token=TOKEN, blob_dir=hub_dir / "objects", part_size=part_size)
    hub = FakeHub(store).start()
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "HF_HOME": str(hub_dir / "hf-home")}  # fmt: skip
    try:
        baseline = push(tiny, "bench/tiny", hub, env)
        before_kill = len(store.stored)

        def kill_when(store: HubStore) -> bool:
            if args.kill_at is not None:
                return received_bytes(store) >= args.kill_at * total
            return len(store.stored) - before_kill >= args.kill_after_objects

        killed = push(folder, "bench/model", hub, env, kill_when)
        # a completion the Hub was joining when the client died may still land: count what
        # it holds when the resume starts
        held = set(store.stored[before_kill:])
        killed["received_gb"] = round(received_bytes(store) / 1e9, 2)
        killed["objects_stored"] = len(held)
        first = len(store.requests)
        resumed = push(folder, "bench/model", hub, env)
    finally:
        hub.stop()
    put = {path.split("/")[2] for method, path, _ in store.requests[first:] if method == "PUT"}
    local = {p.name: sha256_file(p) for p in files}
    sizes = {local[p.name]: p.stat().st_size for p in files}
    resumed["objects_sent"] = len(put)
    resumed["sent_gb"] = round(sum(sizes.get(oid, 0) for oid in put) / 1e9, 2)
    resumed["resent_already_stored"] = len(put & held)
    identical = store.digests("bench/model") == local
    shutil.rmtree(hub_dir)
    return {
        "question": "resume of a killed push: only the missing objects, in flat memory?",
        "machine": machine(),
        "load_average": load_average(),
        "shape": str(args.folder) if args.folder else args.shape,
        "folder_gb": round(total / 1e9, 2),
        "shards": sum(p.suffix == ".safetensors" for p in files),
        "folder_seconds_to_write": round(made, 1),
        "transport": "Git LFS, fake Hub in the benchmark process (no Xet)",
        "multipart_part_mib": args.part_mb,
        "runs": {"baseline": baseline, "killed": killed, "resumed": resumed},
        "bit_identical": identical,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="1b")
    parser.add_argument("--shard-gb", type=float, default=5.0, help="largest shard, in GB")
    parser.add_argument("--kill-after-objects", type=int, default=1)
    parser.add_argument("--kill-at", type=float, help="kill at this fraction of bytes received")
    parser.add_argument("--part-mb", type=float, help="multipart LFS uploads in parts of this")
    parser.add_argument("--work", type=Path, default=REPO / "out" / "push-scale")
    parser.add_argument(
        "--folder",
        type=Path,
        help="push this model folder (e.g. a pruned 7B) instead of building one",
    )
    args = parser.parse_args()
    result = run(args)
    rows = [[name, r["seconds"], r["peak_rss_mib"], r.get("objects_stored", r.get("objects_sent", ""))]
            for name, r in result["runs"].items()]  # fmt: skip
    print(f"{result['shape']}: {result['folder_gb']} GB in {result['shards']} shards")
    print(table(["run", "seconds", "peak RSS MiB", "objects held / sent"], rows))
    resumed = result["runs"]["resumed"]
    print(f"resume sent {resumed['sent_gb']} GB, {resumed['resent_already_stored']} objects the"
          f" Hub already held; bit-identical: {result['bit_identical']}")  # fmt: skip
    save(args.work / f"push_scale-{'folder' if args.folder else args.shape}.json", result)


if __name__ == "__main__":
    main()
