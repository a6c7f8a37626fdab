"""benchmarks/results_doc.py: docs/results.md is generated from docs/results/*.json, and the
committed file is the generator's output."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "results_doc.py"

RECORD = {
    "title": "Reconstruction at 64 steps",
    "command": "benchmarks/reconstruction.py --budgets 64",
    "machine": "a 2-core CPU",
    "date": "2026-12-03",
    "load": None,
    "load_note": "not recorded beside these figures",
    "columns": [
        {"key": "method", "title": "method"},
        {"key": "ppl_wikipedia", "title": "perplexity", "format": ".2f"},
        {"key": "peer.ratio", "title": "x peer"},
        {"key": "gap_closed", "title": "gap | closed"},
    ],
    "rows": [
        {"method": "sparsegpt", "ppl_wikipedia": 49.1, "peer": {"ratio": "0.37-0.41x"}},
        {"method": "wanda", "ppl_wikipedia": 37.97, "gap_closed": "53%"},
    ],
    "notes": ["one note"],
    "source": ["README.md, 92a4bf4", "commit 9a6442b"],
}


@pytest.fixture
def results_doc():
    spec = importlib.util.spec_from_file_location("results_doc", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("results_doc", None)


def write(folder: Path, name: str, record: dict) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(json.dumps(record))


def test_a_record_becomes_a_section_with_its_table_and_provenance(results_doc, tmp_path):
    results, doc = tmp_path / "results", tmp_path / "results.md"
    write(results, "b-recon.json", RECORD)
    write(results, "a-other.json", {**RECORD, "title": "Another", "command": None, "rows": []})
    assert results_doc.main(["--results", str(results), "--output", str(doc)]) == 0
    text = doc.read_text()
    section = text[text.index('<a id="b-recon"></a>') :]
    assert section.splitlines()[1:8] == [
        "## Reconstruction at 64 steps",
        "",
        "| method | perplexity | x peer | gap \\| closed |",
        "|---|---|---|---|",
        "| sparsegpt | 49.10 | 0.37-0.41x |  |",  # the column's format; nested key; missing: empty
        "| wanda | 37.97 |  | 53% |",
        "",
    ]
    assert "- Command: `benchmarks/reconstruction.py --budgets 64`" in section
    assert "- Machine: a 2-core CPU\n- Date: 2026-12-03\n" in section
    assert "- Load average: not recorded beside these figures\n" in section
    assert "- Notes: one note\n" in section
    assert "- Source:\n  - README.md, 92a4bf4\n  - commit 9a6442b\n" in section
    assert text.index("## Another") < text.index("## Reconstruction")  # sorted by file name
    assert "- Command: not recorded" in text
    # deterministic: the same records give the same bytes, and --check finds it up to date
    assert results_doc.render(results_doc.load_records(results)) == text
    assert results_doc.main(["--results", str(results), "--output", str(doc), "--check"]) == 0


def test_a_benchmark_scripts_own_file_renders_as_it_is(results_doc, tmp_path):
    """What common.sweep writes (machine, settings, rows, load averages) needs no editing."""
    record = {
        "machine": {"cpu": "x86_64", "cores": 2},
        "settings": {"nsamples": 32},
        "load_average_start": [1.5, 1.2, 1.0],
        "rows": [{"method": "dense", "ppl_wikipedia": 23.96, "block_seconds": [1.0]}],
        "load_average_end": [2.0, 1.6, 1.1],
    }
    text = results_doc.section("reconstruction", record)
    assert "## reconstruction\n\n| method | ppl_wikipedia |\n|---|---|\n| dense | 23.96 |\n" in text
    assert "- Machine: cpu: x86_64, cores: 2\n" in text
    assert "- Load average: before: 1.5 1.2 1.0, after: 2.0 1.6 1.1\n" in text
    assert "- Date: not recorded\n" in text


def test_check_fails_on_a_stale_file_and_a_bad_record_is_one_line(results_doc, tmp_path, capsys):
    results, doc = tmp_path / "results", tmp_path / "results.md"
    write(results, "r.json", RECORD)
    doc.write_text("old\n")
    assert results_doc.main(["--results", str(results), "--output", str(doc), "--check"]) == 1
    assert "is stale: run python benchmarks/results_doc.py" in capsys.readouterr().err
    assert doc.read_text() == "old\n"  # --check writes nothing
    (results / "r.json").write_text("{not json")
    assert results_doc.main(["--results", str(results), "--output", str(doc)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {results / 'r.json'}: ")


def test_the_committed_results_doc_is_up_to_date(results_doc):
    """docs/results.md is what the generator makes of docs/results/ (else: run the generator)."""
    assert results_doc.main(["--check"]) == 0
