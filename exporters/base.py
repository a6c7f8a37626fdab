"""The exporter contract: a format is one :class:`Exporter` registered under its command name.

An exporter reads a model folder (and its report.json) and writes one folder in its format:

- ``config``: its options, a dataclass declared with ``option(...)``: ``folder`` (the model
  folder, an argument), ``output`` (``shared_options.output_option(..., lock=True)``: the
  export folder) and ``overwrite``, then its own; ``compress export NAME`` is built from it;
- ``target(config)``: where it goes (``--output``, or the format's default);
- ``check(source, target, config)``: refuse, before any work, what cannot be exported;
- ``export(source, staging, config)``: fill the empty folder ``staging`` (published onto the
  target when it returns) and return the :class:`~compress.core.report.ArtifactRecord` it
  recorded: files, parity, perplexity, how to load it;
- ``finish(source, target, record, config)``: what follows the publish (a record in the source
  folder's report, a card, a failed check raised);
- ``summary(record, config)``: the lines the command prints;
- ``deployment_row(record, repo)``: the record as the card's Deployment row (``None``: not
  listed there).

:func:`run_export` runs one: check, export into a staging folder, publish, finish. The registry
(:data:`EXPORTERS`, filled by :func:`register`) holds every format; :mod:`exporters.registry`
imports them all.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, ClassVar

from compress.core.claim import output_lock
from compress.core.io import atomic_folder
from compress.core.report import ArtifactRecord

EXPORTERS: dict[str, type[Exporter]] = {}
FOLDER_HELP = "Model folder written by compress prune (or any saved model)."


class Exporter:
    """One export format (see the module docstring); subclasses set the class attributes and
    :meth:`export`, and override the other hooks where their format needs it."""

    name: ClassVar[str]  # the command: compress export NAME
    config: ClassVar[type]  # the options: folder, output, overwrite, then the format's own
    doc: ClassVar[str]  # the command's help
    formats: ClassVar[tuple[str, ...]] = ()  # the ``artifacts`` keys it writes (prefixes)

    def target(self, config: Any) -> Path:
        """Where the export goes: ``--output`` (an exporter with a default overrides this)."""
        return Path(config.output)

    def check(self, source: Path, target: Path, config: Any) -> None:
        """Refuse, before any work, what cannot be exported (default: nothing)."""

    def export(self, source: Path, staging: Path, config: Any) -> ArtifactRecord:
        raise NotImplementedError

    def finish(self, source: Path, target: Path, record: ArtifactRecord, config: Any) -> None:
        """After ``target`` is published (default: nothing)."""

    def summary(self, record: ArtifactRecord, config: Any) -> list[str]:
        return [
            f"{record['format']}: {record['bytes'] / 2**20:.1f} MiB",
            f"wrote {self.target(config)}",
        ]

    def deployment_row(self, record: ArtifactRecord, repo: str) -> dict | None:
        """The card's Deployment row: the record, ``{REPO}`` in its loading code replaced by
        ``repo``."""
        load = [
            {**entry, "code": entry["code"].replace("{REPO}", repo)} for entry in record["load"]
        ]
        return {**record, "load": load}

    def writes(self, fmt: str) -> bool:
        """Whether an ``artifacts`` record of format ``fmt`` comes from this exporter."""
        return any(fmt == f or fmt.startswith(f"{f} ") for f in self.formats)


def register(cls: type[Exporter]) -> type[Exporter]:
    """Class decorator adding an exporter to :data:`EXPORTERS` under its ``name``."""
    EXPORTERS[cls.name] = cls
    return cls


def run_export(exporter: Exporter, config: Any) -> ArtifactRecord:
    """Check, export into a staging folder, publish it onto the target, finish; return the
    record. A default target (no ``--output`` given) is locked here; a given one the command
    locked."""
    source, target = Path(config.folder), exporter.target(config)
    with nullcontext() if config.output else output_lock(target):
        exporter.check(source, target, config)
        with atomic_folder(target) as staging:
            record = exporter.export(source, staging, config)
        exporter.finish(source, target, record, config)
    return record


def exporter_of(fmt: str) -> Exporter | None:
    """The registered exporter writing ``artifacts`` records of format ``fmt``."""
    exporters = (cls() for cls in EXPORTERS.values())
    return next((exporter for exporter in exporters if exporter.writes(fmt)), None)
