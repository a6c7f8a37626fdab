"""Every report.json and export_report.json a test writes conforms to its schema.

A pytest plugin (loaded by conftest.py): after each test's call it looks for those files under
the session's base temporary folder that were written since the test's setup began, and fails the
test on any key outside the schema or any mistyped value (:func:`compress.core.report.check_report`,
:func:`exporters.onnx.record.check_export_report`). Missing keys are allowed here: a unit test's
fixture writes only the sections its code reads, and a whole report is checked for completeness
where the product writes it (``write_report``). A test that writes an off-schema report on purpose
(an old format) says so with ``@pytest.mark.hand_written_report``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from compress.core.report import REPORT_NAME, check_report
from exporters.onnx.record import EXPORT_REPORT, check_export_report

CHECKS = {REPORT_NAME: check_report, EXPORT_REPORT: check_export_report}
STARTED = pytest.StashKey[int]()
_basetemp: list[Path] = []


def written_since(root: Path, since_ns: int) -> Iterator[Path]:
    """The report files under ``root`` modified at or after ``since_ns``."""
    for folder, _, files in os.walk(root):
        for name in files:
            if name in CHECKS:
                path = Path(folder, name)
                try:
                    if path.stat().st_mtime_ns >= since_ns:
                        yield path
                except FileNotFoundError:  # removed while we walked
                    continue


def problems_of(path: Path) -> list[str]:
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        return [f"unreadable: {error}"]
    return [p for p in CHECKS[path.name](report) if not p.endswith(": missing")]


@pytest.fixture(scope="session", autouse=True)
def _record_basetemp(tmp_path_factory) -> None:
    _basetemp[:] = [tmp_path_factory.getbasetemp()]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    item.stash[STARTED] = time.time_ns() - 1_000_000  # 1 ms: coarse file-system clocks
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    result = yield
    if _basetemp and item.get_closest_marker("hand_written_report") is None:
        found = {
            str(path): problems
            for path in written_since(_basetemp[0], item.stash[STARTED])
            if (problems := problems_of(path))
        }
        assert not found, f"reports written outside their schema: {found}"
    return result
