"""``compress calib``: write self-generated calibration text, and look at a calibration file."""

from __future__ import annotations

from dataclasses import dataclass

from compress.core.options import option
from compress.core.shared_options import (
    DType,
    device_option,
    dtype_option,
    generation_rows_option,
    progress_option,
)


@dataclass(kw_only=True)
class GenerateConfig:
    model: str | None = option(
        None,
        argument=True,
        help="Hub id, local folder or .gguf file; omitted: the embedded SmolLM2-135M-Instruct.",
    )
    n: int = option(256, flags="--n", help="Texts the file should hold.")
    max_len: int = option(
        1024, help="Longest text in tokens (the paper: 2048); EOS ends one sooner."
    )
    batch_size: int = generation_rows_option("--batch-size", "Texts generated")
    seed: int = option(0, help="Base seed; text k gets seed (SEED << 32) | k, recorded per line.")
    lang: str = option(
        "en", help="Keep texts py3langid assigns this ISO 639-1 code; 'any' keeps all."
    )
    device: str = device_option()
    dtype: DType = dtype_option()
    output: str = option(
        "calib.jsonl", help="JSONL file; appended to, so a rerun continues it to --n.", lock=True
    )
    progress: bool = progress_option()


@dataclass(kw_only=True)
class InspectConfig:
    file: str = option(argument=True, help="A JSONL file written by calib generate.")
    top: int = option(10, help="How many opening words to list.")


def generate(config: GenerateConfig):
    """Texts the model writes itself (the paper's recipe), appended to ``config.output``;
    returns the generation statistics."""
    from pathlib import Path

    from compress.data.selfgen import Recipe, check_request, generate_file
    from compress.model.loading import load_model

    recipe = Recipe(max_len=config.max_len)
    language = None if config.lang == "any" else config.lang
    check_request(config.n, config.batch_size, config.seed, language)
    loaded = load_model(config.model, config.device, config.dtype)
    return generate_file(
        loaded.model,
        loaded.tokenizer,
        Path(config.output),
        config.n,
        recipe,
        seed=config.seed,
        batch_size=config.batch_size,
        language=language,
        progress=config.progress,
    )


def inspect(config: InspectConfig) -> dict:
    """Counts, length histogram, language share, opening words and code-like share."""
    from pathlib import Path

    from compress.data.selfgen import inspect as inspect_file

    return inspect_file(Path(config.file), config.top)
