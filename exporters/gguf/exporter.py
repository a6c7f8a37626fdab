"""``compress export gguf``: a quantized folder as one GGUF file (plus an Ollama Modelfile),
read back with gguf-py before it is published: every tensor dequantizes to the folder's weight,
bit for bit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compress.core.errors import BadInputError
from compress.core.io import check_target
from compress.core.options import option
from compress.core.report import REPORT_NAME, ArtifactRecord, artifact_record, record_artifact
from compress.core.shared_options import output_option, overwrite_option
from exporters.base import Exporter, register

MODELFILE = "Modelfile"


@dataclass(frozen=True)
class GgufExportConfig:
    """``compress export gguf``."""

    folder: Path = option(
        argument=True,
        help="Quantized model folder (compress quantize, or compress prune --quantize).",
    )
    output: Path | None = output_option(
        None, "Folder for the GGUF file (default: DIR/gguf)", short=True, lock=True
    )
    overwrite: bool = overwrite_option("an existing GGUF folder")

    @property
    def target(self) -> Path:
        return self.output or self.folder / "gguf"


@register
class GgufExporter(Exporter):
    """The folder's integers in GGUF Q4_0 / Q8_0 blocks (int4 / int8, group size 32), the
    tokenizer, llama.cpp's hyperparameters; recorded in the source folder's report."""

    name = "gguf"
    config = GgufExportConfig
    doc = """Write a quantized folder (int4/int8, group size 32) as a GGUF file for llama.cpp
    and Ollama: Q4_0/Q8_0 blocks holding exactly its integers, read back bit-identical."""
    formats = ("gguf",)

    def target(self, config: GgufExportConfig) -> Path:
        return config.target

    def check(self, source: Path, target: Path, config: GgufExportConfig) -> None:
        from exporters.gguf.convert import check_source

        if target.resolve() == source.resolve() or source.resolve().is_relative_to(
            target.resolve()
        ):
            raise BadInputError(f"--output {target} would replace the model folder; pick another")
        check_target(target, config.overwrite)
        check_source(source)

    def export(self, source: Path, staging: Path, config: GgufExportConfig) -> ArtifactRecord:
        from exporters.gguf.convert import check_source, write_gguf
        from exporters.gguf.readback import differing_tensors

        model = check_source(source)
        name = f"model.{model.type_name}.gguf"
        written = write_gguf(model, staging / name)
        differing = differing_tensors(staging / name, model)
        if differing:
            raise BadInputError(
                f"{name} read back differs from {source} in {differing[0]} ({len(differing)} "
                "tensors); nothing was written"
            )
        (staging / MODELFILE).write_text(f"FROM ./{name}\n")
        files = {f.name: f.stat().st_size for f in sorted(staging.iterdir()) if f.is_file()}
        grid = model.record.grid
        return artifact_record(
            format=f"gguf {model.type_name}",
            path=_relative(self.target(config), source),
            files=files,
            parity={"round_trip": "bit-identical weights (gguf-py dequantize)"},
            load=load_snippets(_relative(self.target(config), source), name),
            details={
                "file": name,
                "type": model.type_name,
                "bits": grid.bits,
                "group_size": grid.group_size,
                "architecture": model.family.arch,
                "tensors": written["tensors"],
                "pre_tokenizer": written["pre_tokenizer"],
                "package": f"gguf=={_gguf_version()}",
            },
        )

    def finish(
        self, source: Path, target: Path, record: ArtifactRecord, config: GgufExportConfig
    ) -> None:
        if (source / REPORT_NAME).is_file():
            record_artifact(source, record)

    def summary(self, record: ArtifactRecord, config: GgufExportConfig) -> list[str]:
        details = record["details"]
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(details["tensors"].items()))
        return [
            f"{record['format']}: {record['files'][details['file']] / 2**20:.1f} MiB "
            f"({counts}); {record['parity']['round_trip']}",
            f"wrote {self.target(config) / details['file']}",
        ]


def _relative(target: Path, source: Path) -> str:
    target, source = target.resolve(), source.resolve()
    return str(target.relative_to(source)) if target.is_relative_to(source) else str(target)


def _gguf_version() -> str:
    from importlib.metadata import version

    return version("gguf")


def load_snippets(path: str, name: str) -> list[dict]:
    """How to run the file (``{REPO}``: the model folder or a local copy of the repo)."""
    file = f"{path}/{name}" if Path(path).is_absolute() else f"{{REPO}}/{path}/{name}"
    folder = str(Path(file).parent)
    return [
        {
            "runtime": "llama.cpp",
            "code": f'llama-cli -m {file} -p "Hello" -n 64',
        },
        {
            "runtime": "Ollama (the Modelfile beside the file)",
            "code": f"cd {folder}\nollama create my-model -f Modelfile\nollama run my-model",
        },
        {
            "runtime": "transformers (dequantizes to float on load)",
            "code": "from transformers import AutoModelForCausalLM\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("{folder}", gguf_file="{name}")',
        },
    ]
