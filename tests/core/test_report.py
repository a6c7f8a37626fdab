"""report.json's schema: a real tiny `compress prune` report conforms, and each section builder
writes its keys with the types the schema states."""

import json

import pytest
from typer.testing import CliRunner

from compress.cli.main import app
from compress.core.errors import CompressError
from compress.core.io import write_json_atomic
from compress.core.report import (
    REPORT_NAME,
    ArtifactRecord,
    BlockEntry,
    EvaluationSection,
    FinetuneSection,
    LayerEntry,
    PerplexitySection,
    ReportSchemaError,
    SummarySection,
    TasksSection,
    artifact_record,
    block_entry,
    check_report,
    check_section,
    check_value,
    evaluation_section,
    finetune_section,
    layer_entry,
    move_source_evaluation,
    perplexity_change,
    perplexity_label,
    perplexity_section,
    read_report,
    same_protocol,
    sharpness_section,
    sparsity_by_type,
    summary_section,
    tasks_section,
    update_report,
    write_report,
)

MEASURED = {  # a result of evaluators.perplexity.perplexity_of_text
    "dataset": "wikipedia",
    "split": "test",
    "protocol": {"name": "compress-documents/1"},
    "perplexity": 30.0,
    "nll": 3.4,
    "seqlen": 32,
    "windows": 2,
    "tokens": 64,
    "seconds": 0.1,
}


@pytest.mark.slow
def test_a_tiny_prune_report_conforms_to_the_schema(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    fast = ["--nsamples", "4", "--seqlen", "32", "--batch-size", "2", "--device", "cpu"]
    args = ["prune", str(tiny_model_dir), "--output", str(out), "--eval", "--eval-windows", "2"]
    result = CliRunner().invoke(app, [*args, "--errors", *fast])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert check_report(report) == []
    assert report["blocks"][0]["errors"]["reference"]  # the optional parts were checked too
    assert set(report["evaluation"]["perplexity"]) == PerplexitySection.__required_keys__ | {
        "protocol"
    }


def test_check_report_names_missing_unknown_and_mistyped_keys():
    layer = layer_entry([4, 8], 0.5, 16, 0.01)
    assert check_value({"x": layer}, dict[str, LayerEntry], "layers") == []
    broken = {k: v for k, v in layer.items() if k != "zeros"} | {"zeros2": 1, "numel": "32"}
    problems = check_value({"x": broken}, dict[str, LayerEntry], "layers")
    assert sorted(problems) == [
        "layers.x.numel: expected int, got '32'",
        "layers.x.zeros2: not in the schema",
        "layers.x.zeros: missing",
    ]
    assert check_value(True, float, "v") == ["v: expected float, got True"]  # bool is no number
    assert check_value(3, float | None, "v") == [] and check_value(None, float | None, "v") == []


def test_layer_entry_counts_sparsity_from_zeros_and_shape():
    entry = layer_entry((4, 8), 0.5, 12, 0.123456)
    assert entry == {
        "shape": [4, 8],
        "target_sparsity": 0.5,
        "sparsity": 12 / 32,
        "zeros": 12,
        "numel": 32,
        "seconds": 0.1235,
    }
    assert check_value(entry, LayerEntry, "layer") == []


def test_block_entry_leaves_out_what_was_not_measured():
    plain = block_entry(0, 1.5, None)
    assert plain == {"index": 0, "seconds": 1.5, "peak_accelerator_bytes": None}
    errors = {
        "before_reconstruction": {"calibration": 0.2},
        "after_reconstruction": {"calibration": 0.1},
        "reference": "dense model activations",
    }
    full = block_entry(1, 2.0, 1024, errors, [{"window": [1]}])
    assert list(full) == ["index", "errors", "reconstruction", "seconds", "peak_accelerator_bytes"]
    assert check_value([plain, full], list[BlockEntry], "blocks") == []
    with pytest.raises(TypeError):
        block_entry(**plain, unknown=1)  # an engine entry with a key the schema lacks


def test_summary_section_sums_the_layers_and_takes_the_largest_block_peak():
    layers = {"a": layer_entry([2, 2], 0.5, 2, 0.0), "b": layer_entry([2, 4], 0.5, 6, 0.0)}
    blocks = [block_entry(0, 1.0, None), block_entry(1, 1.0, 2048), block_entry(2, 1.0, 512)]
    args = {"method": "wanda", "pattern": "unstructured", "target_sparsity": 0.5}
    args |= {"layers": layers, "model_sparsity": 0.4, "prune_seconds": 1.234, "seconds": 5.678}
    args |= {"peak_rss_bytes": 10, "device": "cpu"}
    summary = summary_section(**args, blocks=blocks)
    assert summary["sparsity"] == 8 / 12 and summary["peak_accelerator_bytes"] == 2048
    assert (summary["prune_seconds"], summary["seconds"]) == (1.23, 5.68)
    assert check_value(summary, SummarySection, "summary") == []
    assert summary_section(**args, blocks=blocks[:1])["peak_accelerator_bytes"] is None


def test_perplexity_section_keeps_the_protocol_and_drops_the_timing():
    section = perplexity_section(MEASURED, 20.0)
    assert section == {
        "dataset": "wikipedia",
        "split": "test",
        "protocol": {"name": "compress-documents/1"},
        "seqlen": 32,
        "windows": 2,
        "tokens": 64,
        "before": 20.0,
        "after": 30.0,
    }
    assert check_value(section, PerplexitySection, "ppl") == []
    assert perplexity_section(MEASURED, None)["before"] is None
    assert perplexity_label(section) == "wikipedia (2x32)"


def test_perplexity_change_and_protocol_match():
    assert perplexity_change(20.0, 30.0) == {"change": 10.0, "relative_change": 0.5}
    assert perplexity_change(None, 30.0) == {"change": None, "relative_change": None}
    section = perplexity_section(MEASURED, None)
    assert same_protocol(section, "wikipedia", 32, 2) and same_protocol(
        section, "wikipedia", 32, None
    )
    assert not same_protocol(section, "wikipedia", 32, 3)
    assert not same_protocol(section, "c4", 32, 2) and not same_protocol({}, "wikipedia", 32, None)


def test_tasks_and_evaluation_sections():
    record = {
        "format": "compress.eval_tasks/1",
        "model": "out/pruned",
        "harness": {"name": "lm-eval", "version": "0.4"},
        "source": "offline",
        "data": "validation sets",
        "settings": {"limit": None},
        "tasks": {"boolq": {"acc": 0.6}},
        "summary": {"mean_acc": None},
        "created": "2025-01-01T00:00:00+00:00",
    }
    tasks = tasks_section(record)
    assert set(tasks) == set(record) - {"format", "model"}
    assert check_value(tasks, TasksSection, "tasks") == []
    assert evaluation_section() == {}
    both = evaluation_section(perplexity_section(MEASURED, None), tasks)
    assert list(both) == ["perplexity", "tasks"]
    assert check_value(both, EvaluationSection, "evaluation") == []


LOAD = [{"runtime": "transformers", "code": 'AutoModelForCausalLM.from_pretrained("{REPO}")'}]


def test_artifact_record_sums_its_files_and_conforms():
    record = artifact_record(
        format="bnb-nf4",
        path=".",
        files={"model.safetensors": 10, "other.safetensors": 5},
        load=LOAD,
        perplexity=perplexity_section(MEASURED, 29.0),
        details={"source_bytes": 40},
    )
    assert record["bytes"] == 15 and record["parity"] is None
    assert check_value({"bnb-nf4": record}, dict[str, ArtifactRecord], "artifacts") == []
    assert check_section("artifacts", {"bnb-nf4": record}) == []
    assert check_section("artifacts", {"x": {**record, "scheme": "nf4"}}) == [
        "report.artifacts.x.scheme: not in the schema"
    ]


def test_every_writer_validates_what_it_writes(tmp_path):
    write_json_atomic(tmp_path / REPORT_NAME, {"evaluation": {}})
    before = (tmp_path / REPORT_NAME).read_text()
    with pytest.raises(ReportSchemaError, match=r"report\.deploy: not in the schema"):
        update_report(tmp_path, "deploy", {"x": {}})
    with pytest.raises(ReportSchemaError, match=r"report\.evaluation\.sharp: not in the schema"):
        update_report(tmp_path, "evaluation", {"sharp": {}})
    with pytest.raises(ReportSchemaError, match=r"report\.evaluation\.perplexity\.after: missing"):
        update_report(tmp_path, "evaluation", {"perplexity": {**MEASURED}})
    assert (tmp_path / REPORT_NAME).read_text() == before  # nothing written
    update_report(tmp_path, "evaluation", {"perplexity": perplexity_section(MEASURED, None)})
    with pytest.raises(ReportSchemaError, match=r"report\.model: missing"):
        write_report(tmp_path, {"evaluation": {}})
    assert not issubclass(ReportSchemaError, CompressError)  # a bug: the CLI keeps its traceback


def test_sharpness_section_conforms():
    measured = {"dimension": 10, "batches": 2, "lambda_max": {"value": 1.0}, "seed": 0}
    measured |= {"trace_moments": {"1": {"mean": 2.0}}, "hessian_vector_products": 8}
    data = {"source": "t.txt", "split": "all", "kind": "real", "nsamples": 2, "seqlen": 8}
    data |= {"tokens": 16, "seed": 0, "available_tokens": 100}
    section = sharpness_section({**measured, "seconds": 0.5}, data, 3)
    assert section["pruned_weights_excluded"] == 3
    assert check_section("evaluation", {"sharpness": section}) == []


@pytest.mark.hand_written_report  # the sections reports had before `artifacts`
def test_a_report_written_before_artifacts_is_read_with_them(tmp_path):
    """``deploy``, ``export`` and ``quantization`` move into ``artifacts`` when read."""
    old_deploy = {"format": "ct", "path": ".", "sparsity_structure": "2:4", "bytes": 7}
    old_deploy |= {"dense_bytes": 9, "round_trip": "bit-identical weights", "load": LOAD}
    quantization = {"scheme": "bnb-nf4", "description": "4-bit", "source": "s", "device": "cpu"}
    quantization |= {"bytes": 10, "source_bytes": 40, "dequantized": {"layers": 2}}
    quantization |= {"perplexity": perplexity_section(MEASURED, 29.0)}
    old = {"deploy": {"ct": old_deploy}, "quantization": quantization}
    old |= {"export": {"onnx": "onnx", "onnx_files": {"model.onnx": 3}}}
    write_json_atomic(tmp_path / REPORT_NAME, old)
    artifacts = read_report(tmp_path)["artifacts"]
    assert sorted(artifacts) == ["bnb-nf4", "ct", "onnx"] and set(read_report(tmp_path)) == {
        "artifacts"
    }
    assert check_section("artifacts", artifacts) == []
    assert artifacts["ct"]["parity"] == {"round_trip": "bit-identical weights"}
    assert artifacts["ct"]["details"] == {"sparsity_structure": "2:4", "dense_bytes": 9}
    assert artifacts["onnx"]["bytes"] == 3 and artifacts["bnb-nf4"]["bytes"] == 10
    assert artifacts["bnb-nf4"]["perplexity"]["before"] == 29.0


def test_finetune_section_and_the_source_evaluation_it_takes_over():
    held = [{"step": 0, "loss": 3.0, "perplexity": 20.1}, {"step": 4, "loss": 2.5}]
    args = {"config": {"steps": 4}, "tokens": 512, "train_data": {}, "heldout_data": None}
    args |= {"masked_parameters": 3, "zeros_before": 100, "zeros_after": 100}
    args |= {"train_seconds": 2.0, "device": "cpu", "autocast": None, "resumed_from_step": None}
    args |= {"history": {"train": [], "heldout": held}}
    section = finetune_section(**args, heldout=held)
    assert section["heldout"] == {"before": held[0], "after": held[-1]}
    assert section["tokens_per_second"] == 256.0 and section["sparsity"]["zeros_after"] == 100
    assert check_value(section, FinetuneSection, "finetune") == []
    report = {"evaluation": {"perplexity": perplexity_section(MEASURED, 20.0)}}
    moved = move_source_evaluation(section, report)
    assert "evaluation" not in report and moved["source_evaluation"]["perplexity"]["after"] == 30.0
    assert check_value(moved, FinetuneSection, "finetune") == []
    assert move_source_evaluation(section, {}) is section
    empty = finetune_section(**args, heldout=[])
    assert empty["heldout"] == {"before": None, "after": None}


def test_sparsity_by_type_groups_layers_across_blocks():
    layers = {
        "model.layers.0.self_attn.q_proj": layer_entry([4, 4], 0.5, 8, 0.0),
        "model.layers.1.self_attn.q_proj": layer_entry([4, 4], 0.6, 10, 0.0),
        "model.layers.0.mlp.down_proj": layer_entry([4, 8], 0.5, 16, 0.0),
    }
    rows = {row["type"]: row for row in sparsity_by_type(layers)}
    q = rows["self_attn.q_proj"]
    assert (q["layers"], q["target"], q["zeros"], q["numel"]) == (2, [0.5, 0.6], 18, 32)
    assert (q["sparsity"], q["min"], q["max"]) == (18 / 32, 0.5, 10 / 16)
    assert rows["mlp.down_proj"]["sparsity"] == 0.5
