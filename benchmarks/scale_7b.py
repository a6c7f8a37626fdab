"""The headline job at its real size: a Llama-2-7B-shaped model through compress on this machine,
beside the peer.

Builds a Llama-2-7B-shaped folder once (hidden 4096, MLP 11008, 32 heads, ``--blocks`` blocks,
random bfloat16 weights drawn from a seeded generator, one safetensors shard per block, the
embedded model's tokenizer and so its 49,152-token vocabulary), cached under
``$COMPRESS_CACHE/bench/`` (``--cache``); then runs each stage in a fresh process under a fresh parent and
prints one table -- stage, seconds, peak RSS, disk written -- with llm-compressor's columns beside
each pruning row (``shared/bench/llmc_cpu_peer.py`` in its own venv, on the very same calibration
windows, in the same dtype), the ratios, the load average before and after, and the JSON.

    python benchmarks/scale_7b.py --blocks 4 --nsamples 16 --seqlen 256    # beside the peer
    python benchmarks/scale_7b.py --blocks 32 --methods wanda --skip-peer   # the whole shape
    python benchmarks/scale_7b.py --tiny --skip-peer                        # a 2-block miniature
    python benchmarks/scale_7b.py --blocks 32 --meta --no-prune             # Meta's format

``--meta`` adds the conversion of Meta's original checkpoint format: the folder is written in that
format (``consolidated.00.pth``, streamed tensor by tensor: ``meta_checkpoint.py``), converted
back by ``compress.model.convert_meta`` in a fresh process (seconds, peak RSS against the shard's
bytes), and the converted weights are compared with the folder's, tensor by tensor.

Goals (the 7B shape, bfloat16 on both sides, 16 x 256): ours <= 0.5x the peer's whole-process
seconds, peak RSS <= the peer's.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import (  # noqa: E402
    REPO,
    add_peer_arguments,
    beside_repo,
    load_average,
    machine,
    measured,
    require_peer_venv,
    run_compress_prune,
    run_isolated,
    run_peer,
    save,
    write_windows_file,
)
from meta_checkpoint import same_weights, sentencepiece_model, write_meta_checkpoint  # noqa: E402

SHAPE_7B = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32)
SHAPE_TINY = dict(hidden_size=64, intermediate_size=172, num_attention_heads=4)
PROJECTIONS = {
    "self_attn.q_proj": ("hidden", "hidden"),
    "self_attn.k_proj": ("hidden", "hidden"),
    "self_attn.v_proj": ("hidden", "hidden"),
    "self_attn.o_proj": ("hidden", "hidden"),
    "mlp.gate_proj": ("mlp", "hidden"),
    "mlp.up_proj": ("mlp", "hidden"),
    "mlp.down_proj": ("hidden", "mlp"),
}
METHODS = ("wanda", "sparsegpt")
PATTERNS = ("unstructured", "2:4")
GIB = 2**30


def shape_name(shape: dict, blocks: int, seed: int) -> str:
    return f"llama-h{shape['hidden_size']}-m{shape['intermediate_size']}-b{blocks}-seed{seed}"


def random_tensor(shape: tuple[int, ...], seed: int, std: float = 0.02) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator) * std).to(torch.bfloat16)


def build_folder(folder: Path, shape: dict, blocks: int, seed: int) -> dict:
    """Write the model folder shard by shard (at most one block's weights in memory): config,
    tokenizer, ``model-NNNNN.safetensors`` per block plus one for the embeddings and head, and
    the index. Returns what was written."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, LlamaConfig

    from compress.core.io import atomic_folder
    from compress.model.loading import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    vocab = len(tokenizer)
    config = LlamaConfig(
        **shape,
        vocab_size=vocab,
        num_hidden_layers=blocks,
        num_key_value_heads=shape["num_attention_heads"],
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    sizes = {"hidden": shape["hidden_size"], "mlp": shape["intermediate_size"]}
    hidden = shape["hidden_size"]
    weight_map: dict[str, str] = {}
    with atomic_folder(folder) as staging:
        shards = blocks + 1
        top = f"model-{shards:05d}-of-{shards:05d}.safetensors"
        tensors = {
            "model.embed_tokens.weight": random_tensor((vocab, hidden), seed),
            "lm_head.weight": random_tensor((vocab, hidden), seed + 1),
            "model.norm.weight": torch.ones(hidden, dtype=torch.bfloat16),
        }
        save_file(tensors, staging / top, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(tensors, top)
        for block in range(blocks):
            name = f"model-{block + 1:05d}-of-{shards:05d}.safetensors"
            prefix = f"model.layers.{block}."
            tensors = {
                prefix + f"{projection}.weight": random_tensor(
                    (sizes[rows], sizes[cols]), seed + 100 * (block + 1) + index
                )
                for index, (projection, (rows, cols)) in enumerate(PROJECTIONS.items())
            }
            for norm in ("input_layernorm", "post_attention_layernorm"):
                tensors[prefix + f"{norm}.weight"] = torch.ones(hidden, dtype=torch.bfloat16)
            save_file(tensors, staging / name, metadata={"format": "pt"})
            weight_map |= dict.fromkeys(tensors, name)
            print(f"built block {block + 1}/{blocks}", flush=True)
        total = sum((staging / f).stat().st_size for f in set(weight_map.values()))
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (staging / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return {"folder": str(folder), "weights_bytes": total, "blocks": blocks, "vocab": vocab}


def cached_folder(cache: Path | None, shape: dict, blocks: int, seed: int) -> Path:
    from compress.model.loading import cache_dir

    return (cache or cache_dir() / "bench") / shape_name(shape, blocks, seed)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def ours(folder: Path, method: str, pattern: str, out: Path, args) -> dict:
    """``compress prune`` as a user runs it: whole-process seconds, peak RSS, the folder written."""
    calibration = (args.nsamples, args.seqlen)
    run = run_compress_prune(str(folder), method, pattern, calibration, out, "--dtype", args.dtype)
    report = json.loads((out / "report.json").read_text())
    summary, estimate = report["summary"], report.get("estimate", {})
    written = folder_bytes(out)
    shutil.rmtree(out)  # a 7B folder is 13.5 GB: keep one at a time
    return {
        "seconds": run["seconds"],
        "prune_seconds": summary["prune_seconds"],
        "estimate_seconds": estimate.get("seconds"),
        "estimate_prune_seconds": estimate.get("prune_seconds"),
        "peak_rss_bytes": run["peak_rss_bytes"],
        "disk_bytes": written,
        "sparsity": summary["sparsity"],
    }


def peer(folder: Path, method: str, pattern: str, windows: str, out: Path, args) -> dict:
    """llm-compressor on the same windows in the same dtype: whole process, oneshot alone."""
    run, line = run_peer(
        args.peer_python, args.peer_script, str(folder), method, pattern, windows, args.dtype, out
    )
    written = folder_bytes(out)
    shutil.rmtree(out)
    return {
        "seconds": run["seconds"],
        "prune_seconds": line["oneshot_seconds"],
        "peak_rss_bytes": run["peak_rss_bytes"],
        "disk_bytes": written,
    }


def meta_conversion(folder: Path, work: Path) -> list[dict]:
    """The folder in Meta's format (written streaming, measured), its conversion back
    (measured: the peak RSS against the shard's bytes), and the converted weights compared with
    the folder's; raises when they differ."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    meta, converted = work / "meta", work / "converted"
    run = measured([sys.executable, __file__, "--write-meta", str(folder), str(meta)], env)
    written = {"stage": "write Meta format", "seconds": run["seconds"]}
    written |= {"peak_rss_bytes": run["peak_rss_bytes"], "disk_bytes": folder_bytes(meta)}
    print(json.dumps(written), flush=True)
    shard_bytes = sum(p.stat().st_size for p in meta.glob("consolidated.*.pth"))
    run = measured([sys.executable, __file__, "--convert-meta", str(meta), str(converted)], env)
    check = run_isolated(__file__, ["--check-meta", str(folder), str(converted)])
    row = {
        "stage": "convert Meta format",
        "seconds": run["seconds"],
        "peak_rss_bytes": run["peak_rss_bytes"],
        "disk_bytes": folder_bytes(converted),
        "shard_bytes": shard_bytes,
        "x_shard_rss": run["peak_rss_bytes"] / shard_bytes,
        "weights_equal": check["equal"],
    }
    shutil.rmtree(meta)
    shutil.rmtree(converted)
    if not check["equal"]:
        raise RuntimeError(f"the converted weights differ from {folder}'s: {check}")
    return [written, row]


def table(rows: list[dict], args) -> str:
    shape = "tiny" if args.tiny else "Llama-2-7B"
    lines = [
        f"\n{shape} shape, {args.blocks} blocks, {args.dtype}, calibration {args.nsamples} x "
        f"{args.seqlen} (Wikipedia, seed 0), CPU, no reconstruction; seconds = whole process",
        f"{'stage':28s} {'seconds':>8s} {'prune s':>8s} {'peak RSS':>9s} {'disk':>9s} | "
        f"{'peer s':>8s} {'peer RSS':>9s} | {'x time':>6s} {'x RSS':>6s}",
    ]
    for row in rows:
        prune = f"{row['prune_seconds']:8.1f}" if "prune_seconds" in row else f"{'':8s}"
        line = (
            f"{row['stage']:28s} {row['seconds']:8.1f} {prune} "
            f"{row['peak_rss_bytes'] / GIB:8.2f}G {row['disk_bytes'] / GIB:8.2f}G"
        )
        if "peer" in row:
            other = row["peer"]
            line += (
                f" | {other['seconds']:8.1f} {other['peak_rss_bytes'] / GIB:8.2f}G | "
                f"{row['x_peer_seconds']:6.2f} {row['x_peer_rss']:6.2f}"
            )
        if row.get("estimate_prune_seconds"):
            line += (
                f" | estimate {row['estimate_seconds']:.0f} s, prune "
                f"{row['estimate_prune_seconds']:.0f} s "
                f"({row['estimate_prune_seconds'] / row['prune_seconds']:.2f} x actual)"
            )
        if "x_shard_rss" in row:
            line += (
                f" | shard {row['shard_bytes'] / GIB:.2f}G, peak RSS "
                f"{row['x_shard_rss']:.2f} x shard, weights equal: {row['weights_equal']}"
            )
        lines.append(line)
    return "\n".join(lines)


def measure(work: Path, args) -> list[dict]:
    shape = SHAPE_TINY if args.tiny else SHAPE_7B
    folder = cached_folder(args.cache, shape, args.blocks, args.seed)
    rows = []
    if not (folder / "model.safetensors.index.json").is_file():
        build = ["--build", str(folder), *shape_args(args)]
        run = measured([sys.executable, __file__, *build], {**os.environ, "PYTHONPATH": str(REPO)})
        rows.append(
            {
                "stage": "build (random bf16 weights)",
                "seconds": run["seconds"],
                "peak_rss_bytes": run["peak_rss_bytes"],
                "disk_bytes": folder_bytes(folder),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    if args.meta:
        rows += meta_conversion(folder, work)
        print(json.dumps(rows[-1]), flush=True)
    windows = None
    if args.prune and not args.skip_peer:
        setup = [*shape_args(args), "--write-windows", str(work / "windows.json")]
        windows = run_isolated(__file__, [*setup, "--model-folder", str(folder)])["windows"]
    pairs = itertools.product(args.methods, args.patterns) if args.prune else ()
    for method, pattern in pairs:
        tag = f"{method}-{pattern.replace(':', 'of')}"
        row = {"stage": f"prune {method} {pattern}"}
        row |= ours(folder, method, pattern, work / f"ours-{tag}", args)
        if windows is not None:
            other = peer(folder, method, pattern, windows, work / f"peer-{tag}", args)
            row |= {
                "peer": other,
                "x_peer_seconds": row["seconds"] / other["seconds"],
                "x_peer_rss": row["peak_rss_bytes"] / other["peak_rss_bytes"],
            }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def shape_args(args) -> list[str]:
    tiny = ["--tiny"] if args.tiny else []
    return [*tiny, "--blocks", str(args.blocks), "--seed", str(args.seed)] + [
        "--nsamples",
        str(args.nsamples),
        "--seqlen",
        str(args.seqlen),
    ]


def meta_step(args) -> dict:
    """One step of the Meta-format stage, run in its own process by :func:`meta_conversion`."""
    from compress.model.convert_meta import convert_meta

    if args.write_meta:
        return write_meta_checkpoint(*args.write_meta, sentencepiece_model())
    if args.convert_meta:
        convert_meta(*args.convert_meta)
        return {"converted": str(args.convert_meta[1])}
    return same_weights(*args.check_meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--tiny", action="store_true", help="the miniature shape (hidden 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache", type=Path, help="where the built folder is kept (default $COMPRESS_CACHE/bench)"
    )
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--patterns", nargs="+", choices=PATTERNS, default=list(PATTERNS))
    parser.add_argument("--skip-peer", action="store_true", help="leave llm-compressor out")
    parser.add_argument(
        "--meta", action="store_true", help="add the conversion of Meta's checkpoint format"
    )
    parser.add_argument(
        "--no-prune", dest="prune", action="store_false", help="leave the pruning stages out"
    )
    add_peer_arguments(parser)
    parser.add_argument(
        "--peer-script", type=Path, default=beside_repo("shared/bench/llmc_cpu_peer.py")
    )
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model-folder", type=Path, help=argparse.SUPPRESS)
    for step in ("--write-meta", "--convert-meta", "--check-meta"):
        parser.add_argument(step, type=Path, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=Path("out/bench/scale_7b.json"))
    args = parser.parse_args()
    shape = SHAPE_TINY if args.tiny else SHAPE_7B
    if args.build:
        print(json.dumps(build_folder(args.build, shape, args.blocks, args.seed)))
        return
    if args.write_meta or args.convert_meta or args.check_meta:
        print(json.dumps(meta_step(args)))
        return
    if args.write_windows:
        write_windows_file(args.write_windows, args.model_folder, args.nsamples, args.seqlen)
        print(json.dumps({"windows": str(args.write_windows)}))
        return
    if args.prune and not args.skip_peer:
        require_peer_venv(args.peer_python, "pass --skip-peer")
    before = load_average()
    print("load average before:", before, flush=True)
    with tempfile.TemporaryDirectory(prefix="scale-7b-") as work:
        rows = measure(Path(work), args)
    after = load_average()
    print("load average after:", after)
    print(table(rows, args))
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    save(
        args.output,
        {
            "machine": machine(),
            "settings": settings,
            "loadavg_before": before,
            "rows": rows,
            "loadavg_after": after,
        },
    )


if __name__ == "__main__":
    main()
