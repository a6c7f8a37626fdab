"""The few places where the supported library stacks differ, one function per difference.

compress runs on transformers 4.57 with huggingface_hub 0.x and on transformers 5.x with
huggingface_hub 1.x/2.x (pyproject.toml says which releases are tested). Code elsewhere calls
these functions instead of checking versions; each one asks the installed library what it
offers rather than comparing version numbers.
"""

from __future__ import annotations

import importlib
import json
import logging
import struct
import sys
from pathlib import Path
from typing import Any

from torch import nn

# What reading a cut or damaged GGUF raises: the gguf package (transformers 4.57) raises
# ValueError/IndexError, transformers 5's own reader struct.error.
GGUF_READ_ERRORS: tuple[type[BaseException], ...] = (ValueError, IndexError, struct.error)


def no_split_modules(model: nn.Module) -> list[str]:
    """Class names of the modules a device map must keep whole (the decoder blocks).

    transformers 4.57 computes them with ``_get_no_split_modules``; 5.x collects them into
    ``_no_split_modules`` when the model is built.
    """
    collect = getattr(model, "_get_no_split_modules", None)
    if collect is not None:
        return list(collect("auto"))
    return sorted(getattr(model, "_no_split_modules", None) or ())


def hub_network_errors() -> tuple[type[BaseException], ...]:
    """What huggingface_hub's HTTP client raises when the Hub cannot be reached or drops the
    connection: requests' errors before 1.0, httpx's in 1.x, httpx2's from 2.0."""
    errors: list[type[BaseException]] = []
    for module, names in (
        ("requests", ("ConnectionError", "Timeout")),
        ("httpx", ("TransportError",)),
        ("httpx2", ("TransportError",)),
    ):
        try:
            found = importlib.import_module(module)
        except ImportError:
            continue
        errors.extend(getattr(found, name) for name in names)
    return tuple(errors)


def is_hub_network_error(exc: BaseException) -> bool:
    """The Hub could not be reached or dropped the connection.

    From huggingface_hub 1.0 files upload in parallel over one shared client, and a dropped
    connection in one upload closes that client: the uploads still running then fail with
    httpx's "client has been closed" ``RuntimeError`` rather than a network error.
    """
    if isinstance(exc, hub_network_errors()):
        return True
    return isinstance(exc, RuntimeError) and "client has been closed" in str(exc)


def skip_unused_imports() -> None:
    """Keep transformers 4.x from importing scikit-learn and scipy (with pandas: together longer
    than importing torch, a second or more of every ``compress prune``) when it first loads a
    model class: 4.x imports ``sklearn.metrics`` with its generation utilities, for one option of
    assisted decoding (an assistant's confidence threshold), and ``scipy.optimize`` with its
    losses, for object detection, whenever they are installed; compress uses neither. 4.x reads
    one flag per package, once; afterwards it treats the two as absent in this process (both
    still import for whoever asks for them). Where the flags are absent (5.x), nothing changes."""
    if "transformers.modeling_utils" in sys.modules:
        return  # too late: loaded already
    from transformers.utils import import_utils

    for flag in ("_sklearn_available", "_scipy_available"):
        if hasattr(import_utils, flag):
            setattr(import_utils, flag, False)


def load_tokenizer(folder: str | Path, **kwargs: Any):
    """``AutoTokenizer.from_pretrained(folder, **kwargs)``, also for folders saved by
    transformers 5: they record ``"tokenizer_class": "TokenizersBackend"``, a class 4.57 does
    not have, beside the tokenizer.json that 4.57's fast tokenizer reads as it is."""
    import transformers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    config = Path(folder) / "tokenizer_config.json"
    recorded = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}
    if (
        isinstance(recorded, dict)
        and recorded.get("tokenizer_class") == "TokenizersBackend"
        and not hasattr(transformers, "TokenizersBackend")
        and (Path(folder) / "tokenizer.json").is_file()
    ):
        base = logging.getLogger("transformers.tokenization_utils_base")
        level = base.level
        base.setLevel(logging.ERROR)  # it warns that the class differs from the one recorded
        try:
            return PreTrainedTokenizerFast.from_pretrained(folder, **kwargs)
        finally:
            base.setLevel(level)
    return AutoTokenizer.from_pretrained(folder, **kwargs)


def unread_rope(config: Any) -> dict | None:
    """The ``rope_parameters`` transformers 5 wrote into a config that this transformers reads
    as something else (4.57 keeps them as an unused attribute and builds the default rotary
    embedding from ``rope_theta`` and ``rope_scaling``); None when they are read, or agree."""
    recorded = getattr(config, "rope_parameters", None)
    if not isinstance(recorded, dict) or not hasattr(config, "rope_theta"):
        return None  # transformers 5 (no rope_theta), or nothing recorded
    scaling = getattr(config, "rope_scaling", None) or {"rope_type": "default"}
    kind = recorded.get("rope_type", "default")
    same_theta = recorded.get("rope_theta", config.rope_theta) == config.rope_theta
    same_kind = kind == scaling.get("rope_type", scaling.get("type", "default"))
    return None if same_theta and same_kind else recorded
