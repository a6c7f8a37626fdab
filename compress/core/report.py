"""report.json: the single record of what was done and measured.

Every later stage (evaluators, cards, exporters, the CLI summary) reads this file and adds its
own section through :func:`update_report`; nothing re-measures what is recorded here.

Top-level keys (``format`` = ``compress.core.report/1``)::

    model        source, base_model, license, model_type, parameters, dtype
    recipe       the full configuration (same as recipe.json)
    calibration  {"sources": [{source, kind ("real"|"self-generated"), nsamples, seqlen, tokens, seed}]}
    layers       {qualified Linear name: {shape, target_sparsity, sparsity, zeros, numel, seconds}},
                 sparsity and zeros counted in the final (saved) weights
    blocks       [{index, seconds, peak_accelerator_bytes, errors?}]
    summary      method, pattern, target_sparsity, sparsity (over pruned layers), model_sparsity
                 (over all parameters), seconds, peak_rss_bytes, peak_accelerator_bytes, device
    evaluation   {"perplexity": {dataset, split, seqlen, windows, tokens, before, after}, ...}
    versions     package versions; created: ISO timestamp
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from compress.core.errors import BadInputError
from compress.core.io import write_json_atomic

REPORT_FORMAT = "compress.core.report/1"
REPORT_NAME = "report.json"
RECIPE_NAME = "recipe.json"


def read_report(folder: Path) -> dict:
    """Load ``folder/report.json``, with a one-line error when it is missing or broken."""
    path = Path(folder) / REPORT_NAME
    if not path.is_file():
        raise BadInputError(
            f"{folder} has no {REPORT_NAME}: point to a folder written by compress prune"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from exc


def update_report(folder: Path, key: str, value: Any) -> dict:
    """Set ``report[key] = value`` (dict values are merged one level deep) and save atomically."""
    report = read_report(folder)
    if isinstance(value, dict) and isinstance(report.get(key), dict):
        report[key] = {**report[key], **value}
    else:
        report[key] = value
    write_json_atomic(Path(folder) / REPORT_NAME, report)
    return report


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour shapes the result."""
    versions = {"python": platform.python_version()}
    for name in ("compress", "torch", "transformers", "accelerate", "optimum-onnx", "onnxruntime"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
