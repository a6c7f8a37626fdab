"""Zero-shot tasks: offline configs, the harness against a direct scorer, resume, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from compress.cli.main import app
from compress.core.errors import BadInputError
from compress.core.report import check_section
from evaluators.tasks import offline
from evaluators.tasks.registry import PAPER_TASKS, TASKS, Source, resolve_tasks
from evaluators.tasks.runner import (
    TaskSettings,
    evaluate_tasks,
    make_lm,
    resolve_source,
    run_harness,
    sample_indices,
    task_entry,
)
from evaluators.tasks.tables import compare_table, load_results, recovery, results_table
from tests.evaluators.oracles.loglik import lambada_perplexity, score_docs

LIMIT = 3
# lm-eval 0.4.13's own definition of each task, relative to lm_eval/tasks/.
HARNESS_YAML = {
    "boolq": "super_glue/boolq/default.yaml",
    "rte": "glue/rte/default.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "winogrande": "winogrande/default.yaml",
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_easy.yaml",  # arc_challenge.yaml only includes it
    "openbookqa": "openbookqa/openbookqa.yaml",
    "piqa": "piqa/piqa.yaml",
    "lambada": "lambada/lambada_openai.yaml",
}
PROMPT_FIELDS = ("output_type", "doc_to_text", "doc_to_target", "doc_to_choice", "process_docs")


@pytest.fixture(autouse=True)
def _no_env_report(monkeypatch):
    """lm-eval appends ``pip list``/``nvidia-smi`` output to every result (1-10 s); not needed."""
    import lm_eval.evaluator

    monkeypatch.setattr(lm_eval.evaluator, "add_env_info", lambda results: None)


def _raw_yaml(path: Path) -> dict:
    """A task YAML with each ``!function`` tag kept as ``("!function", dotted name)``."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: ("!function", node.value))
    return yaml.load(path.read_text(), Loader=Loader)


def test_unknown_task_lists_the_available_ones():
    with pytest.raises(BadInputError) as info:
        resolve_tasks("boolq,nope")
    message = str(info.value)
    assert "'nope'" in message and "\n" not in message
    assert all(name in message for name in TASKS)


def test_groups_expand_in_order_without_duplicates():
    assert [spec.name for spec in resolve_tasks("paper,boolq")] == list(PAPER_TASKS)
    assert len(PAPER_TASKS) == 7 and len(resolve_tasks("all")) == len(TASKS) == 9
    assert [spec.name for spec in resolve_tasks(" RTE , piqa")] == ["rte", "piqa"]


@pytest.mark.parametrize("name", list(TASKS))
def test_offline_config_uses_lm_eval_prompts(name):
    import lm_eval.tasks

    theirs_path = Path(lm_eval.tasks.__file__).parent / HARNESS_YAML[name]
    theirs, mine = _raw_yaml(theirs_path), _raw_yaml(offline.CONFIG_DIR / f"{name}.yaml")
    assert mine["task"] == TASKS[name].harness_name
    assert mine["dataset_path"] == "json"
    for field in PROMPT_FIELDS:
        if isinstance(theirs.get(field), tuple):
            # "utils.process_docs" next to their YAML == lm_eval.tasks.<dir>.utils.process_docs
            package = ".".join(Path(HARNESS_YAML[name]).parent.parts)
            assert mine[field] == ("!function", f"lm_eval.tasks.{package}.{theirs[field][1]}")
        else:
            assert mine.get(field) == theirs.get(field), field
    assert [m["metric"] for m in mine["metric_list"]] == [
        m["metric"] for m in theirs["metric_list"]
    ]
    assert mine["metadata"]["version"] == theirs["metadata"]["version"]


@pytest.fixture(scope="session")
def few_docs_cache(tmp_path_factory) -> Path:
    """A cache whose task files hold only the first LIMIT documents, so lm-eval loads fast."""
    cache = tmp_path_factory.mktemp("cache")
    folder = cache / "tasks" / f"{offline.PIP_NAME}-{offline.data_version()}"
    folder.mkdir(parents=True)
    for name, spec in TASKS.items():
        lines = [json.dumps(doc) for doc in offline.read_docs(spec, LIMIT)]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    return cache


@pytest.fixture
def few_docs(few_docs_cache, monkeypatch) -> None:
    monkeypatch.setenv("COMPRESS_CACHE", str(few_docs_cache))


@pytest.mark.parametrize("name", list(TASKS))
def test_offline_harness_equals_direct_loglikelihood(name, tiny_llama, tokenizer, few_docs):
    model = tiny_llama.double()  # float64 on both sides: agreement is exact up to summation
    spec = TASKS[name]
    settings = TaskSettings(limit=LIMIT)
    raw = run_harness(make_lm(model, tokenizer, 2), spec, Source.offline, settings, True)
    docs = offline.read_docs(spec, LIMIT)
    mine = score_docs(model, tokenizer, name, docs, model.config.max_position_embeddings)
    samples = sorted(raw["samples"][spec.harness_name], key=lambda sample: sample["doc_id"])
    assert len(samples) == len(mine) == LIMIT
    for sample, score in zip(samples, mine, strict=True):
        pairs = sample["filtered_resps"]  # (loglikelihood, is_greedy) per request
        assert [ll for ll, _ in pairs] == pytest.approx(score.logliks, abs=1e-6, rel=0)
        assert [bool(greedy) for _, greedy in pairs] == score.greedy
        assert sample["acc"] == score.acc
        if "acc_norm" in sample:
            assert sample["acc_norm"] == score.acc_norm
    entry = task_entry(raw, spec, Source.offline, 0.0)
    assert entry["acc"] == pytest.approx(sum(s.acc for s in mine) / LIMIT, abs=1e-12)
    assert entry["samples"] == LIMIT and entry["source"] == "offline"
    if name == "lambada":
        assert entry["perplexity"] == pytest.approx(lambada_perplexity(mine), rel=1e-9)


def test_task_data_is_converted_once(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path))
    path = offline.task_data(TASKS["rte"])
    lines = path.read_text().splitlines()
    assert len(lines) == 277  # GLUE RTE validation
    assert set(json.loads(lines[0])) == {"sentence1", "sentence2", "label", "idx"}
    stamp = path.stat().st_mtime_ns
    assert offline.task_data(TASKS["rte"]) == path and path.stat().st_mtime_ns == stamp
    assert [p.name for p in path.parent.iterdir()] == ["rte.jsonl"]  # no temporary left over


def test_boolq_and_lambada_take_the_harness_fields():
    boolq = offline.read_docs(TASKS["boolq"], 2)
    assert [doc["idx"] for doc in boolq] == [0, 1] and {d["label"] for d in boolq} <= {0, 1}
    assert boolq[0]["question"] == "does ethanol take more energy make that produces"
    assert boolq[0]["label"] == 0  # the source says answer=False
    text = offline.read_docs(TASKS["lambada"], 1)[0]["text"]
    assert text.startswith("In my palm is a clear stone") and text.endswith(
        "I don't care about signs"
    )


def test_auto_source_is_offline_without_the_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_source(Source.auto) == Source.offline
    assert resolve_source(Source.offline) == Source.offline
    with pytest.raises(BadInputError, match="cannot be reached"):
        resolve_source(Source.hub)


def test_hub_probe_follows_hf_endpoint(monkeypatch):
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from threading import Thread

    from evaluators.tasks.runner import hub_reachable

    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(flag, raising=False)
    server = HTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)  # answers 501 to any GET
    Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    assert hub_reachable(timeout=5.0) and resolve_source(Source.auto) == Source.hub
    server.shutdown()
    server.server_close()
    assert not hub_reachable(timeout=5.0)  # nothing listens there now
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub_reachable(timeout=5.0)


def test_settings_are_checked():
    with pytest.raises(BadInputError, match="--limit"):
        TaskSettings(limit=0)
    with pytest.raises(BadInputError, match="--sample"):
        TaskSettings(sample=0)
    with pytest.raises(BadInputError, match="--limit or --sample"):
        TaskSettings(limit=5, sample=5)
    with pytest.raises(BadInputError, match="--num-fewshot"):
        TaskSettings(num_fewshot=-1)


def test_finished_tasks_are_not_rerun(tmp_path, tiny_llama, tokenizer, monkeypatch, few_docs):
    import evaluators.tasks.runner as runner

    ran: list[str] = []
    real = runner.run_harness
    monkeypatch.setattr(
        runner,
        "run_harness",
        lambda lm, spec, *a, **k: ran.append(spec.name) or real(lm, spec, *a, **k),
    )
    output = tmp_path / "eval_tasks.json"
    settings = TaskSettings(limit=2)
    evaluate_tasks(tiny_llama, tokenizer, "rte", output, settings, model_name="tiny")
    record = evaluate_tasks(tiny_llama, tokenizer, "rte,piqa", output, settings, model_name="tiny")
    assert ran == ["rte", "piqa"]
    saved = json.loads(output.read_text())
    assert saved == record and list(saved["tasks"]) == ["rte", "piqa"]
    assert saved["source"] == "offline" and saved["harness"]["version"] == "0.4.13"
    assert saved["settings"]["limit"] == 2 and saved["tasks"]["rte"]["task_version"] == 1.0
    assert saved["summary"]["mean_over"] == ["rte"] and not saved["summary"]["complete"]
    with pytest.raises(BadInputError, match="another settings.*--overwrite"):
        evaluate_tasks(
            tiny_llama, tokenizer, "rte", output, TaskSettings(limit=1), model_name="tiny"
        )
    evaluate_tasks(
        tiny_llama,
        tokenizer,
        "rte",
        output,
        TaskSettings(limit=1),
        model_name="tiny",
        overwrite=True,
    )
    assert ran[-1] == "rte" and list(json.loads(output.read_text())["tasks"]) == ["rte"]


def _record(acc: float) -> dict:
    entry = {"source": "offline", "samples": 10, "acc": acc, "acc_stderr": 0.1}
    entry |= {"acc_norm": None, "acc_norm_stderr": None}
    return {
        "tasks": {"rte": entry},
        "summary": {"mean_acc": acc, "mean_over": ["rte"], "complete": False},
    }


def test_tables_show_scores_and_recovery(tmp_path):
    table = results_table(_record(0.5))
    assert "50.00 ± 10.00" in table and "mean (1)" in table
    assert recovery("rte acc", 0.4, 0.5) == pytest.approx(80.0)
    assert recovery("perplexity (wikipedia)", 25.0, 20.0) == pytest.approx(80.0)
    for name, acc, ppl in (("dense", 0.5, 20.0), ("pruned", 0.4, 25.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval_tasks.json").write_text(json.dumps(_record(acc)))
        report = {"evaluation": {"perplexity": {"dataset": "wikipedia", "after": ppl}}}
        (tmp_path / name / "report.json").write_text(json.dumps(report))
    models = {name: load_results(tmp_path / name) for name in ("dense", "pruned")}
    assert models["pruned"] == {"perplexity (wikipedia)": 25.0, "rte acc": 0.4, "mean acc": 0.4}
    rows = {line.split("  ")[0]: line.split() for line in compare_table(models).splitlines()}
    assert rows["rte acc"][-2:] == ["40.00", "80.00"]
    assert rows["perplexity (wikipedia)"][-2:] == ["25.00", "80.00"]
    with pytest.raises(BadInputError, match="has no eval_tasks.json"):
        load_results(tmp_path)


def _save(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_cli_tasks_end_to_end_offline(tmp_path, tiny_llama, tokenizer, few_docs):
    folder = _save(tiny_llama, tokenizer, tmp_path / "model")
    args = ["eval", "tasks", str(folder), "--tasks", "rte,arc_easy", "--limit", "2"]
    result = CliRunner().invoke(app, [*args, "--batch-size", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    saved = json.loads((folder / "eval_tasks.json").read_text())
    assert list(saved["tasks"]) == ["rte", "arc_easy"] and saved["source"] == "offline"
    assert "arc_easy" in result.stdout and "acc_norm %" in result.stdout
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and again.stderr.count("skipped") == 2


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["eval", "tasks", str(tmp_path), "--tasks", "bolq"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "available: boolq, rte" in result.stderr
    result = CliRunner().invoke(app, ["eval", "tasks", str(tmp_path), "--batch-size", "0"])
    assert result.exit_code == 2 and "--batch-size must be at least 1" in result.stderr


def test_cli_compare_needs_two_and_prints_recovery(tmp_path):
    for name, acc in (("dense", 0.5), ("pruned", 0.25)):
        (tmp_path / f"{name}.json").write_text(json.dumps(_record(acc)))
    result = CliRunner().invoke(app, ["eval", "compare", str(tmp_path / "dense.json")])
    assert result.exit_code == 2 and "at least two" in result.stderr
    paths = [str(tmp_path / "dense.json"), str(tmp_path / "pruned.json")]
    result = CliRunner().invoke(app, ["eval", "compare", *paths])
    assert result.exit_code == 0 and "recovery %" in result.stdout
    assert result.stdout.splitlines()[2].split()[-1] == "50.00"


@pytest.mark.parametrize("command", ["tasks", "all", "compare"])
def test_help_runs_in_a_subprocess(command):
    code = "from compress.cli.main import app; app()"
    done = subprocess.run(
        [sys.executable, "-c", code, "eval", command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout and ("--tasks" in done.stdout or command == "compare")


def test_lambada_perplexity_is_exp_of_mean_nll():
    from tests.evaluators.oracles.loglik import ItemScore

    scores = [ItemScore([-1.0], [True], 1.0, 1.0), ItemScore([-3.0], [False], 0.0, 0.0)]
    assert lambada_perplexity(scores) == pytest.approx(math.exp(2.0))


@pytest.mark.slow
def test_cli_all_merges_perplexity_and_tasks_into_report(tmp_path, tiny_llama, tokenizer, few_docs):
    folder = _save(tiny_llama, tokenizer, tmp_path / "pruned")
    recipe = {"evaluation": {"dataset": "wikipedia", "seqlen": 32, "max_windows": 2}}
    report = {"format": "compress.report/1", "recipe": recipe}
    (folder / "report.json").write_text(json.dumps(report))
    args = ["eval", "all", str(folder), "--tasks", "rte", "--sample", "2", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    evaluation = json.loads((folder / "report.json").read_text())["evaluation"]
    ppl = evaluation["perplexity"]
    assert (ppl["dataset"], ppl["seqlen"], ppl["windows"], ppl["tokens"]) == (
        "wikipedia",
        32,
        2,
        64,
    )
    assert ppl["after"] > 1000  # a random model over a 49k vocabulary: near-uniform guesses
    assert (
        list(evaluation["tasks"]["tasks"]) == ["rte"]
        and "mean_acc" in evaluation["tasks"]["summary"]
    )
    assert evaluation["tasks"]["settings"]["sample"] == 2
    assert evaluation["tasks"]["tasks"]["rte"]["subset"]["kind"] == "random"
    assert check_section("evaluation", evaluation) == []  # what eval all writes, whole
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "kept" in again.stderr and "skipped" in again.stderr
    assert json.loads((folder / "report.json").read_text())["evaluation"]["perplexity"] == ppl
    result = CliRunner().invoke(app, ["eval", "all", str(tmp_path)])
    assert result.exit_code == 2 and "has no report.json" in result.stderr


def test_sample_is_seeded_and_drawn_from_the_whole_set():
    first = sample_indices(3270, 50, seed=1234)
    assert first == sample_indices(3270, 50, seed=1234)  # same seed, same items
    assert first != sample_indices(3270, 50, seed=1235)  # another seed, other items
    assert len(set(first)) == 50 and first == sorted(first) and 0 <= first[0] <= first[-1] < 3270
    assert first != list(range(50))
    assert first[-1] > 3270 // 2 and first[0] < 3270 // 2  # spread over the set, not its head
    assert sample_indices(3, 50, seed=1) == [0, 1, 2]  # more than the set holds: every item


@pytest.fixture
def full_rte(tmp_path, monkeypatch) -> list[dict]:
    """A cache holding RTE's whole validation set (277 documents); returns the documents."""
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path / "cache"))
    return offline.read_docs(TASKS["rte"])


def test_harness_scores_exactly_the_sampled_documents(tiny_llama, tokenizer, full_rte):
    spec = TASKS["rte"]
    settings = TaskSettings(sample=4, seed=7)
    raw = run_harness(make_lm(tiny_llama, tokenizer, 2), spec, Source.offline, settings, True)
    chosen = sample_indices(len(full_rte), 4, seed=7)
    logged = sorted(raw["samples"]["rte"], key=lambda sample: sample["doc_id"])
    assert [sample["doc_id"] for sample in logged] == chosen
    assert [sample["doc"] for sample in logged] == [full_rte[i] for i in chosen]
    entry = task_entry(raw, spec, Source.offline, 0.0)
    assert entry["samples"] == 4
    assert entry["subset"] == {
        "kind": "random",
        "seed": 7,
        "size": 4,
        "population": 277,
        "indices": chosen,
    }
    head = run_harness(
        make_lm(tiny_llama, tokenizer, 2), spec, Source.offline, TaskSettings(limit=3)
    )
    assert task_entry(head, spec, Source.offline, 0.0)["subset"] == {
        "kind": "first",
        "size": 3,
        "population": 277,
    }


def test_cli_sample_is_recorded_and_exclusive_with_limit(tmp_path, tiny_llama, tokenizer, full_rte):
    folder = _save(tiny_llama, tokenizer, tmp_path / "model")
    args = ["eval", "tasks", str(folder), "--tasks", "rte", "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--sample", "3", "--seed", "5"])
    assert result.exit_code == 0, result.output
    saved = json.loads((folder / "eval_tasks.json").read_text())
    assert saved["settings"]["sample"] == 3 and saved["settings"]["seed"] == 5
    subset = saved["tasks"]["rte"]["subset"]
    assert (subset["kind"], subset["seed"], subset["size"]) == ("random", 5, 3)
    assert subset["indices"] == sample_indices(277, 3, seed=5)
    assert "random 3 of 277" in result.stdout
    both = CliRunner().invoke(app, [*args, "--sample", "3", "--limit", "3", "--overwrite"])
    assert both.exit_code == 2 and both.stderr.count("\n") == 1
    assert "--limit or --sample" in both.stderr


def test_records_from_before_sampling_still_resume(tmp_path, tiny_llama, tokenizer, few_docs):
    output = tmp_path / "eval_tasks.json"
    evaluate_tasks(tiny_llama, tokenizer, "rte", output, TaskSettings(limit=2), model_name="m")
    old = json.loads(output.read_text())
    del old["settings"]["sample"]  # written before --sample existed
    output.write_text(json.dumps(old))
    record = evaluate_tasks(
        tiny_llama, tokenizer, "rte", output, TaskSettings(limit=2), model_name="m"
    )
    assert list(record["tasks"]) == ["rte"]


def test_cli_compare_names_the_items_and_warns_when_they_differ(tmp_path):
    for name, settings in (("dense", {"sample": 50, "seed": 1}), ("pruned", {"limit": 50})):
        record = _record(0.5) | {"settings": {"limit": None, "sample": None, **settings}}
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    paths = [str(tmp_path / "dense.json"), str(tmp_path / "pruned.json")]
    result = CliRunner().invoke(app, ["eval", "compare", *paths])
    assert result.exit_code == 0, result.output
    assert "dense: random 50 per task (seed 1)" in result.stdout
    assert "pruned: first 50 per task" in result.stdout
    assert "warning" in result.stderr and "different items" in result.stderr


def test_cli_dense_scores_the_base_model_into_the_folder(tmp_path, tiny_llama, tokenizer, few_docs):
    base = _save(tiny_llama, tokenizer, tmp_path / "base")
    folder = _save(tiny_llama, tokenizer, tmp_path / "pruned")
    report = {"format": "compress.report/1", "model": {"source": str(base)}}
    (folder / "report.json").write_text(json.dumps(report))
    args = ["eval", "tasks", str(folder), "--dense", "--tasks", "rte", "--sample", "2"]
    result = CliRunner().invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    dense = json.loads((folder / "eval_tasks_dense.json").read_text())
    assert dense["model"] == str(base) and dense["settings"]["sample"] == 2
    assert not (folder / "eval_tasks.json").exists()
    result = CliRunner().invoke(app, ["eval", "tasks", str(base), "--dense"])
    assert result.exit_code == 2 and "has no report.json" in result.stderr
