"""The suite-wide schema check of written reports (tests/written_reports.py) flags what it must."""

from __future__ import annotations

import json
import time

import pytest

from tests.written_reports import problems_of, written_since


def write(path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


@pytest.mark.hand_written_report
def test_a_key_outside_the_schema_is_a_problem_and_a_missing_one_is_not(tmp_path):
    write(tmp_path / "a" / "report.json", {"summary": {"method": "wanda"}, "deploy": {}})
    write(tmp_path / "b" / "report.json", {"summary": {"method": "wanda"}})
    assert problems_of(tmp_path / "a" / "report.json") == ["report.deploy: not in the schema"]
    assert problems_of(tmp_path / "b" / "report.json") == []


@pytest.mark.hand_written_report
def test_a_mistyped_export_report_is_a_problem(tmp_path):
    write(tmp_path / "export_report.json", {"files": {"model.onnx": "big"}, "extra": 1})
    assert problems_of(tmp_path / "export_report.json") == [
        "export_report.json.extra: not in the schema",
        "export_report.json.files.model.onnx: expected int, got 'big'",
    ]


def test_only_reports_written_since_the_start_are_checked(tmp_path):
    write(tmp_path / "old" / "report.json", {})
    write(tmp_path / "old" / "other.json", {})
    started = time.time_ns()
    write(tmp_path / "new" / "export_report.json", {})
    assert list(written_since(tmp_path, started)) == [tmp_path / "new" / "export_report.json"]


def test_the_check_runs_after_every_test(request):
    """The hook is registered (conftest.py loads tests.written_reports as a plugin)."""
    assert request.config.pluginmanager.has_plugin("tests.written_reports")
