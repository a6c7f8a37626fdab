"""Does self-generated calibration text reduce reconstruction overfitting on the embedded model?

The paper's claim (arXiv 2406.15524, "Self-generated calibration data"): adding text the model
writes itself to the real calibration set lowers held-out reconstruction error and perplexity
after reconstruction. Here: the embedded SmolLM2-135M, Wanda 50% unstructured + BR+GP, REAL
Wikipedia windows plus 0, K1, K2, ... self-generated windows (one random window of --seqlen
tokens from each of K texts long enough, :func:`compress.data.selfgen.selfgen_windows`), concatenated
along the batch dimension. Reported per K: normalized error after the last block on the
calibration set (real + self-generated, so not comparable across K) and on held-out Wikipedia,
perplexity on held-out Wikipedia and LAMBADA, seconds; plus generation throughput.

Wanda's statistics come from the real windows only, as in the paper (``--stats-from all``: from
every window); reconstruction trains on real + self-generated.

    python benchmarks/selfgen.py [--real 64 --selfgen 0,64,256 --seqlen 512 --epochs 10]

``--speed`` measures generation alone instead: the same --speed-texts English texts (same seed,
--gen-batch, --max-len) written by the library (continuous batching, preallocated cache) and by
the former path (one ``model.generate`` per batch with DynamicCache, kept here only as the
baseline, in float32 or ``--former-dtype``), back to back in this process; it prints accepted
texts/s, tokens/s, the rejection rate of each, the tokens each fed to the model (the work, unaffected by a busy
machine) and the new/old ratios. ``--dtypes float32,bfloat16`` adds the library's rows with the
model loaded in bfloat16 (half the weight bytes each decoding step reads).

    python benchmarks/selfgen.py --speed [--speed-texts 32 --gen-batch 32 --max-len 1024]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, save  # noqa: E402

from compress.core.dtypes import TORCH_DTYPES  # noqa: E402


def generate(args, model, tokenizer) -> dict:
    """Grow ``args.selfgen_file`` until it holds ``max(K)`` texts of at least --seqlen tokens."""
    from compress.data.selfgen import Recipe, generate_long_texts

    want = max(int(k) for k in args.selfgen.split(","))
    stats = generate_long_texts(
        model, tokenizer, args.selfgen_file, want, args.seqlen, Recipe(max_len=args.max_len),
        batch_size=args.gen_batch,
    )  # fmt: skip
    return {**stats.describe(), "reused_file": stats.draws == 0}


def former_generate_ids(model, tokenizer, seeds: list[int], recipe) -> list[list[int]]:
    """The former library path, the baseline: one ``model.generate`` for the whole batch
    (DynamicCache; finished rows padded until the longest ends), a logits processor drawing each
    row's token from its own generator."""
    import torch
    from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

    from compress.data.selfgen import first_token_choices, stop_ids

    class RowSampler(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if input_ids.shape[1] <= recipe.greedy_tokens:
                return scores
            values, index = scores.float().topk(min(recipe.top_k, scores.shape[-1]), dim=-1)
            probs = torch.softmax(values / recipe.temperature, dim=-1)
            if recipe.top_p < 1.0:
                probs = probs * (probs.cumsum(-1) - probs < recipe.top_p)
            probs = probs.cpu()
            picks = [int(torch.multinomial(probs[r], 1, generator=g)) for r, g in enumerate(gens)]
            chosen = index[torch.arange(len(picks)), torch.tensor(picks, device=index.device)]
            return torch.full_like(scores, float("-inf")).scatter_(1, chosen[:, None], 0.0)

    choices = first_token_choices(model, tokenizer)
    gens = [torch.Generator().manual_seed(seed) for seed in seeds]
    first = [int(choices[torch.randint(len(choices), (1,), generator=g)]) for g in gens]
    stops = stop_ids(model, tokenizer)
    config = GenerationConfig(
        do_sample=False, max_new_tokens=recipe.max_len - 1, eos_token_id=stops or None,
        pad_token_id=stops[0] if stops else 0,
    )  # fmt: skip
    prompt = torch.tensor(first)[:, None]
    with torch.no_grad():
        out = model.generate(
            prompt, attention_mask=torch.ones_like(prompt), generation_config=config,
            logits_processor=LogitsProcessorList([RowSampler()]), use_model_defaults=False,
        )  # fmt: skip
    return [
        row[: next((i for i, t in enumerate(row) if i > 0 and t in stops), len(row))]
        for row in out.tolist()
    ]


def former_generate(model, tokenizer, n: int, recipe, batch_size: int) -> dict:
    """The former ``generate_file`` loop without the file: batches of draws until ``n`` English
    texts, every text of a batch counted (as it counted them)."""
    from compress.data.selfgen import detect_language, text_seed

    draws = rejected = tokens = 0
    kept = []
    start = time.perf_counter()
    while len(kept) < n:
        seeds = [text_seed(0, draws + i) for i in range(batch_size)]
        for ids in former_generate_ids(model, tokenizer, seeds, recipe):
            draws, tokens = draws + 1, tokens + len(ids)
            if len(kept) < n:
                text = tokenizer.decode(ids)
                english = detect_language(text)[0] == "en"
                kept, rejected = kept + [text] * english, rejected + (not english)
    seconds = time.perf_counter() - start
    added = len(kept)
    return {
        "kept": kept, "added": added, "draws": draws, "rejected": rejected, "tokens": tokens,
        "seconds": seconds, "texts_per_second": added / seconds,
        "tokens_per_second": tokens / seconds, "rejection_rate": rejected / draws,
    }  # fmt: skip


class TokensFed:
    """Counts the tokens every forward pass of ``model`` takes in: the work, free of the
    machine's noise (a padded row of a finished text counts like any other)."""

    def __init__(self, model):
        self.model, self.forward, self.count = model, model.forward, 0

    def __enter__(self):
        def counting(*args, **kwargs):
            self.count += kwargs["input_ids"].numel()
            return self.forward(*args, **kwargs)

        self.model.forward = counting
        return self

    def __exit__(self, *exc):
        del self.model.forward  # the class's forward again


def speed(args, model, tokenizer) -> dict:
    """The library's generation against the former path, same texts asked, back to back: the
    former path in ``--former-dtype`` (the baseline), the library in each of ``--dtypes`` (a
    model loaded in that dtype, as ``compress calib generate --dtype`` loads it)."""
    import tempfile

    from compress.data.selfgen import Recipe, generate_file, read_samples
    from compress.model.loading import load_model

    recipe = Recipe(max_len=args.max_len)
    baseline = (
        model
        if args.former_dtype == "float32"
        else load_model(None, "cpu", args.former_dtype).model
    )
    with TokensFed(baseline) as fed:
        former = former_generate(baseline, tokenizer, args.former_texts, recipe, args.gen_batch)
    former["tokens_fed"] = fed.count
    kept = former.pop("kept")
    print(f"former: {former}", flush=True)
    rows = {"former": former}
    for dtype in args.dtypes.split(","):
        generator = model if dtype == "float32" else load_model(None, "cpu", dtype).model
        with tempfile.TemporaryDirectory() as folder, TokensFed(generator) as fed:
            path = Path(folder) / "speed.jsonl"
            stats = generate_file(
                generator, tokenizer, path, args.speed_texts, recipe, batch_size=args.gen_batch,
                progress=False,
            )  # fmt: skip
            texts = [sample["text"] for sample in read_samples(path)]
        same = sum(a == b for a, b in zip(kept, texts))  # over the first --former-texts
        rows[f"now {dtype}"] = {**stats.describe(), "tokens_fed": fed.count, "same_texts": same}
        print(f"now {dtype}: {rows[f'now {dtype}']}", flush=True)
    ratios = {
        name: {
            "tokens_per_second": row["tokens_per_second"] / former["tokens_per_second"],
            "texts_per_second": row["texts_per_second"] / former["texts_per_second"],
            "tokens_fed_per_text": (former["tokens_fed"] / former["added"])
            / (row["tokens_fed"] / row["added"]),
        }
        for name, row in rows.items()
        if name != "former"
    }
    print(
        f"\nembedded SmolLM2-135M, CPU ({machine()['cores']} cores, "
        f"{machine()['torch_threads']} threads); {args.speed_texts} English texts "
        f"(former path: {args.former_texts}), batch "
        f"{args.gen_batch}, max-len {args.max_len}, seed 0; former = {args.former_dtype}\n"
        f"{'':17s} {'texts/s':>9s} {'tokens/s':>9s} {'rejected':>9s} {'seconds':>8s} "
        f"{'tokens':>8s} {'fed':>8s} {'x tok/s':>8s} {'same':>5s}"
    )
    for name, row in rows.items():
        ratio = ratios.get(name, {}).get("tokens_per_second", 1.0)
        print(
            f"{name:17s} {row['texts_per_second']:9.3f} {row['tokens_per_second']:9.1f} "
            f"{row['rejection_rate']:9.1%} {row['seconds']:8.1f} {row['tokens']:8d} "
            f"{row['tokens_fed']:8d} {ratio:8.2f} {row.get('same_texts', len(kept)):5d}"
        )
    print(
        "x tok/s: tokens/s over the former path's; same: texts identical to the former path's "
        "(float rounding, and another dtype, change some)"
    )
    return {"rows": rows, "ratios": ratios}


def ppl(model, tokenizer, args) -> dict:
    from compress.data.calibration import load_texts
    from evaluators.perplexity import perplexity

    return {
        name: perplexity(model, tokenizer, load_texts(name, "test"), args.seqlen, args.ppl_windows)[
            "perplexity"
        ]
        for name in ("wikipedia", "lambada")
    }


def one(k: int, args, real, holdout) -> dict:
    import torch

    from compress.core.config import CalibrationConfig, PruneConfig, ReconstructConfig
    from compress.data.selfgen import selfgen_windows
    from compress.engine import Engine
    from compress.model.loading import load_model

    loaded = load_model(None, "cpu", "float32")
    parts = [real.ids]
    if k:
        parts.append(selfgen_windows(loaded.tokenizer, args.selfgen_file, k, args.seqlen, 0).ids)
    ids = torch.cat(parts)  # (real + k, T)
    config = PruneConfig(
        method="wanda",
        calibration=CalibrationConfig(
            source="wikipedia", nsamples=len(ids), seqlen=args.seqlen, seed=0, batch_size=args.batch
        ),
        reconstruct=ReconstructConfig(technique="br+gp", epochs=args.epochs, measure_errors=True),
    )
    start = time.perf_counter()
    stats = len(real.ids) if args.stats_from == "real" else None  # real windows come first
    outcome = Engine(loaded.model, config, stats_samples=stats).run(ids, holdout.ids)
    seconds = time.perf_counter() - start
    last = outcome.blocks[-1]["errors"]["after_reconstruction"]
    return {
        "selfgen": k,
        "real": len(real.ids),
        "calib_error": last["calibration"],
        "holdout_error": last["holdout"],
        **{
            f"ppl_{name}": value
            for name, value in ppl(loaded.model, loaded.tokenizer, args).items()
        },
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=int, default=64, help="real Wikipedia windows")
    parser.add_argument("--selfgen", default="0,64,256", help="self-generated windows per run")
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--max-len", type=int, default=None, help="default: 2 x --seqlen")
    parser.add_argument("--holdout", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--gen-batch", type=int, default=32)
    parser.add_argument("--speed", action="store_true", help="measure generation speed only")
    parser.add_argument("--speed-texts", type=int, default=32, help="English texts for --speed")
    parser.add_argument(
        "--former-texts",
        type=int,
        default=None,
        help="--speed: English texts for the former path (default --speed-texts). It decodes "
        "each batch of --gen-batch draws on its own, to the longest row, so its rate per batch "
        "does not depend on how many batches follow: a long run may time it on fewer",
    )
    parser.add_argument(
        "--dtypes", default="float32", help="--speed: the library's rows, comma-separated"
    )
    parser.add_argument(
        "--former-dtype",
        default="float32",
        choices=sorted(TORCH_DTYPES),
        help="--speed: the dtype of the former path's model",
    )
    parser.add_argument(
        "--stats-from", choices=("real", "all"), default="real", help="windows for Wanda norms"
    )
    parser.add_argument("--ppl-windows", type=int, default=32)
    parser.add_argument("--selfgen-file", type=Path, default=Path("out/bench/selfgen.jsonl"))
    parser.add_argument(
        "--output", type=Path, default=None, help="default out/bench/selfgen[_speed].json"
    )
    args = parser.parse_args()
    args.max_len = args.max_len or 2 * args.seqlen
    args.former_texts = args.speed_texts if args.former_texts is None else args.former_texts
    if min(args.speed_texts, args.former_texts) < 1:
        parser.error("--speed-texts and --former-texts must be at least 1")
    args.output = args.output or Path(f"out/bench/selfgen{'_speed' if args.speed else ''}.json")

    from compress.data.calibration import load_windows
    from compress.model.loading import load_model

    loaded = load_model(None, "cpu", "float32")
    tok = loaded.tokenizer
    if args.speed:
        result = speed(args, loaded.model, tok)
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        save(args.output, {"machine": machine(), "settings": settings, "speed": result})
        return
    generation = generate(args, loaded.model, tok)
    print(f"generation: {generation}", flush=True)
    dense = ppl(loaded.model, tok, args)
    real = load_windows(tok, "wikipedia", args.real, args.seqlen, seed=0)
    holdout = load_windows(tok, "wikipedia", args.holdout, args.seqlen, seed=0, split="test")
    rows = []
    for k in (int(k) for k in args.selfgen.split(",")):
        rows.append(one(k, args, real, holdout))
        print(rows[-1], flush=True)

    print(
        f"\nembedded SmolLM2-135M, fp32, CPU ({machine()['cores']} cores); Wanda 50% unstructured "
        f"(statistics from {args.stats_from} windows) + BR+GP, {args.epochs} epochs, batch {args.batch}; {args.real} x {args.seqlen} real "
        f"Wikipedia windows + K self-generated; held-out {args.holdout} x {args.seqlen} Wikipedia; "
        f"ppl on {args.ppl_windows} x {args.seqlen} windows; dense ppl wiki "
        f"{dense['wikipedia']:.2f}, lambada {dense['lambada']:.2f}"
    )
    print(
        f"{'K':>5s} {'calib err':>10s} {'held err':>10s} {'ppl wiki':>9s} {'ppl lamb':>9s} {'sec':>7s}"
    )
    for r in rows:
        print(
            f"{r['selfgen']:5d} {r['calib_error']:10.4f} {r['holdout_error']:10.4f} "
            f"{r['ppl_wikipedia']:9.2f} {r['ppl_lambada']:9.2f} {r['seconds']:7.0f}"
        )
    if generation["tokens_per_second"]:
        print(
            f"generation (batch {args.gen_batch}, max-len {args.max_len}): "
            f"{generation['tokens_per_second']:.1f} tokens/s, "
            f"{generation['texts_per_second']:.3f} accepted texts/s, {generation['rejected']} of "
            f"{generation['draws']} draws ({generation['rejection_rate']:.1%}) rejected as "
            "non-English"
        )
    save(
        args.output,
        {
            "machine": machine(),
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "generation": generation,
            "dense": dense,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
