"""benchmarks/common.py's sweep: an interrupted benchmark resumes where it stopped."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def common(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("bench_common", BENCHMARKS / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_common", None)


class Stop(Exception):
    pass


def test_an_interrupted_sweep_resumes_with_the_rows_it_saved(common, tmp_path):
    output, settings = tmp_path / "sweep.json", {"nsamples": 4}
    configurations = [("dense",), ("wanda",), ("sparsegpt",)]
    measured = []

    def measure(configuration, stop_at=None):
        if configuration == stop_at:
            raise Stop
        measured.append(configuration)
        return {"method": configuration[0], "ppl": float(len(measured))}

    def key(row):
        return (row["method"],)

    with pytest.raises(Stop):
        common.sweep(output, settings, configurations, key, lambda c: measure(c, ("wanda",)))
    saved = json.loads(output.read_text())["rows"]
    assert [r["method"] for r in saved] == ["dense"]  # written as soon as it was measured

    rows = common.sweep(output, settings, configurations, key, measure)
    assert measured == [("dense",), ("wanda",), ("sparsegpt",)]  # dense was not measured twice
    assert [r["method"] for r in rows] == ["dense", "wanda", "sparsegpt"]
    written = json.loads(output.read_text())
    assert [r["method"] for r in written["rows"]] == ["dense", "wanda", "sparsegpt"]
    assert all(r["settings"] == settings for r in written["rows"])
    assert len(written["load_average_end"]) == 3
    other = common.resumed(output, {"nsamples": 8})
    assert other == []  # rows of other settings are not taken as done


def test_reconstruction_sweep_keys_a_bfloat16_run_apart_and_float32_as_before(common):
    """A --dtype bfloat16, --self-gen or --optimizer sam row never stands in for a plain one;
    plain float32 Adam settings are those saved before these existed, so those sweeps resume."""
    import argparse

    spec = importlib.util.spec_from_file_location("bench_recon", BENCHMARKS / "reconstruction.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    values = dict.fromkeys(module.KEYED, 1) | {"sparsity": 0.5, "rho": 0.05}
    before = {k: 1 for k in module.KEYED} | {"sparsity": 0.5}

    def settings(dtype="float32", self_gen=0, optimizer="adam"):
        args = argparse.Namespace(**values, dtype=dtype, self_gen=self_gen, optimizer=optimizer)
        return module.settings_of(args)

    assert settings() == before
    assert settings(dtype="bfloat16") == before | {"dtype": "bfloat16"}
    assert settings(self_gen=32) == before | {"self_gen": 32}
    assert settings(optimizer="sam") == before | {"optimizer": "sam", "rho": 0.05}
