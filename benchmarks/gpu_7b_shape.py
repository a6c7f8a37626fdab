"""How fast, and in how much GPU memory, do Wanda and SparseGPT (50%, LR) prune a 7B model?

Builds a Llama-2-7B-shaped model (hidden 4096, MLP 11008, 32 heads, 32 blocks, vocab 32000) with
random bf16 weights directly on the GPU (no download), draws random-token calibration of
128 x 2048, and runs the library's engine: Wanda over all blocks, SparseGPT over all blocks, and
one block of BR+GP (10 epochs). Reports seconds per block, total seconds, peak GPU memory
(``torch.cuda.max_memory_allocated``), and one bf16 forward pass over the calibration set as a
yardstick. ``--onload`` keeps the weights on CPU and moves each block to the GPU for its turn.

Reference on one H200, same shape and data (whole model on the GPU): forward 7.8 s;
llm-compressor 0.14 Wanda 72 s at 14.7 GiB peak, SparseGPT 380 s at 27.9 GiB peak.

    python benchmarks/gpu_7b_shape.py                     # one H100/H200, under 10 minutes
    python benchmarks/gpu_7b_shape.py --onload            # weights waiting on CPU
    python benchmarks/gpu_7b_shape.py --layers 4 --nsamples 32   # a quicker look
    python benchmarks/gpu_7b_shape.py --tiny              # CPU check of the script itself
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine, save  # noqa: E402

SHAPE_7B = dict(
    vocab_size=32000,
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    max_position_embeddings=4096,
)
SHAPE_TINY = dict(
    vocab_size=1000,
    hidden_size=64,
    intermediate_size=172,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=256,
)
GIB = 2**30


def build(shape: dict, layers: int, device: torch.device, dtype: torch.dtype):
    """A random Llama of ``shape`` with ``layers`` blocks, initialized where it will live."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**{**shape, "num_hidden_layers": layers})
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=dtype)
    return model.eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def forward_seconds(model, ids: torch.Tensor, batch: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    for chunk in ids.split(batch):
        model(input_ids=chunk.to(device), use_cache=False)
    sync(device)
    return time.perf_counter() - start


def engine_class(onload: torch.device | None):
    """The library engine; with ``onload``, each block's turn runs inside ``onloaded``."""
    from compress.engine import Engine
    from compress.model.placement import onloaded

    if onload is None:
        return Engine

    class OnloadingEngine(Engine):
        def step(self, i, sets):
            window = [i - 1, i] if self.technique.cross_block and i > 0 else [i]
            with onloaded([self.adapter.blocks[j] for j in window], onload):
                return super().step(i, sets)

    return OnloadingEngine


def one_run(name: str, args, shape: dict, ids: torch.Tensor, device, dtype) -> dict:
    from compress.core.config import CalibrationConfig, PruneConfig, ReconstructConfig

    method, technique = ("wanda", "br+gp") if name == "br+gp" else (name, "lr")
    layers = 1 if name == "br+gp" else args.layers
    home = torch.device("cpu") if args.onload else device
    model = build(shape, layers, home, dtype)
    config = PruneConfig(
        method=method,
        calibration=CalibrationConfig(
            nsamples=ids.shape[0], seqlen=ids.shape[1], batch_size=args.batch
        ),
        reconstruct=ReconstructConfig(technique=technique, epochs=args.epochs),
    )
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    engine = engine_class(device if args.onload else None)(model, config)
    outcome = engine.run(ids)
    sync(device)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    seconds = [block["seconds"] for block in outcome.blocks]
    del model, engine
    return {
        "run": name,
        "method": method,
        "reconstruction": technique,
        "blocks": layers,
        "seconds_total": round(outcome.seconds, 2),
        "seconds_per_block": round(sum(seconds) / len(seconds), 3),
        "seconds_blocks": seconds,
        "peak_gpu_bytes": peak,
        "peak_gpu_gib": None if peak is None else round(peak / GIB, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=None, help="blocks (default 32; tiny 2)")
    parser.add_argument("--nsamples", type=int, default=None, help="default 128; tiny 8")
    parser.add_argument("--seqlen", type=int, default=None, help="default 2048; tiny 64")
    parser.add_argument("--batch", type=int, default=8, help="sequences per forward pass")
    parser.add_argument("--epochs", type=int, default=10, help="BR+GP epochs")
    parser.add_argument("--runs", default="wanda,sparsegpt,br+gp")
    parser.add_argument("--onload", action="store_true", help="weights on CPU, blocks onloaded")
    parser.add_argument("--tiny", action="store_true", help="tiny shape, fp32, on CPU")
    parser.add_argument("--output", type=Path, default=Path("out/bench/gpu_7b_shape.json"))
    args = parser.parse_args()

    shape = SHAPE_TINY if args.tiny else SHAPE_7B
    args.layers = args.layers or shape["num_hidden_layers"]
    nsamples = args.nsamples or (8 if args.tiny else 128)
    seqlen = args.seqlen or (64 if args.tiny else 2048)
    if args.tiny:
        device, dtype = torch.device("cpu"), torch.float32
    elif not torch.cuda.is_available():
        sys.exit("no CUDA GPU visible: run with --tiny for the CPU check of this script")
    else:
        device, dtype = torch.device("cuda"), torch.bfloat16
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, shape["vocab_size"], (nsamples, seqlen), generator=generator)

    home = torch.device("cpu") if args.onload else device
    model = build(shape, args.layers, home, dtype)
    forward = None if args.onload else round(forward_seconds(model, ids, args.batch, device), 2)
    del model
    runs = [one_run(name, args, shape, ids, device, dtype) for name in args.runs.split(",")]
    result = {
        "question": "Wanda / SparseGPT 50% LR and one BR+GP block on a Llama-2-7B shape",
        "machine": machine(),
        "shape": {**shape, "num_hidden_layers": args.layers},
        "dtype": str(dtype).removeprefix("torch."),
        "calibration": {"nsamples": nsamples, "seqlen": seqlen, "batch": args.batch},
        "placement": "weights on CPU, each block onloaded" if args.onload else "model on device",
        "forward_seconds": forward,
        "runs": runs,
    }
    print(f"{'run':<10} {'blocks':>6} {'s/block':>9} {'total s':>9} {'peak GiB':>9}")
    for run in runs:
        print(
            f"{run['run']:<10} {run['blocks']:>6} {run['seconds_per_block']:>9} "
            f"{run['seconds_total']:>9} {run['peak_gpu_gib'] or '-':>9}"
        )
    save(args.output, result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
