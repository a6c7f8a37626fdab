"""Does an ONNX export fit in RAM: the planner's arithmetic with made-up sizes, its refusal
through the CLI with the model's size faked, a model builder killed by a signal, and the
external data of graphs over protobuf's 2 GB."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from compress.core.errors import BadInputError
from exporters.onnx import OnnxExportConfig, export_onnx
from exporters.onnx.fit import GIB, ROUTES, check_fits, gib, killed_line, need
from tests.compress.test_refusals import refused

SEVEN_B = 27 * GIB  # the float32 weights of a 7B-shaped model
CHEAPEST = min(ROUTES.values(), key=lambda route: need(route, SEVEN_B))
DEAREST = max(ROUTES.values(), key=lambda route: need(route, SEVEN_B))


def test_a_route_that_fits_is_not_refused():
    for (route, quantize), chosen in ROUTES.items():
        check_fits(route, quantize, SEVEN_B, need(chosen, SEVEN_B))


def test_a_route_that_does_not_fit_names_one_that_does():
    free = need(CHEAPEST, SEVEN_B)  # exactly what the cheapest route needs
    refused_routes = [key for key, route in ROUTES.items() if need(route, SEVEN_B) > free]
    assert refused_routes  # the routes differ: some is dearer than the cheapest
    for route, quantize in refused_routes:
        with pytest.raises(BadInputError) as error:
            check_fits(route, quantize, SEVEN_B, free)
        line = str(error.value)
        assert "\n" not in line
        assert f"needs about {gib(need(ROUTES[route, quantize], SEVEN_B))} of RAM" in line
        assert "(27 GiB of weights)" in line and f"{gib(free)} is free" in line
        assert f"{CHEAPEST.flags}, which fits (about {gib(free)})" in line


def test_no_route_fits_says_how_much_ram_helps():
    free = need(CHEAPEST, SEVEN_B) - 1
    with pytest.raises(BadInputError, match="no route fits") as error:
        check_fits("genai", "int4", SEVEN_B, free)
    assert f"at least {gib(need(CHEAPEST, SEVEN_B))} of free RAM" in str(error.value)


def test_peaks_grow_with_the_weights():
    assert need(DEAREST, 2 * SEVEN_B) > need(DEAREST, SEVEN_B) > need(CHEAPEST, SEVEN_B)
    assert gib(SEVEN_B) == "27 GiB" and gib(GIB // 2) == "0.5 GiB"


def test_a_killed_builder_gives_the_numbers_and_what_helps():
    line = killed_line("SIGKILL", "genai", "int4", SEVEN_B, 21 * GIB)
    assert "\n" not in line
    for words in ("killed by SIGKILL", "out of memory", "27 GiB of weights", "21 GiB was free"):
        assert words in line
    assert "close other programs" in line and "machine with" in line


def fake_size(monkeypatch, weights: int, free: int) -> None:
    import compress.model.preflight

    monkeypatch.setattr(compress.model.preflight, "float32_weights", lambda _: weights)
    monkeypatch.setattr(compress.model.preflight, "free_ram", lambda: free)


@pytest.mark.parametrize(
    "flags", [["--runtime", "genai"], ["--runtime", "genai", "--quantize", "int4"]]
)
def test_cli_refuses_a_route_that_cannot_fit_before_any_work(
    flags, pruned_llama_dir, tmp_path, monkeypatch
):
    """A folder faked to hold 7B-sized weights with 21 GiB free: refused in one line before the
    builder runs, nothing written."""
    fake_size(monkeypatch, SEVEN_B, 21 * GIB)
    monkeypatch.setattr(subprocess, "run", lambda *_, **__: pytest.fail("the builder ran"))
    out = tmp_path / "onnx"
    chosen = ROUTES["genai", "int4" if "int4" in flags else None]
    words = (chosen.what, "27 GiB of weights", "21 GiB is free")
    refused(["export", "onnx", pruned_llama_dir, "--output", out, *flags], tmp_path, *words)


def test_a_builder_killed_by_a_signal_says_why(pruned_llama_dir, tmp_path, monkeypatch):
    """The out-of-memory killer's SIGKILL: one line with the numbers, not the builder's last
    progress bar."""

    def killed(command, **_):
        return subprocess.CompletedProcess(command, -9, "", "Loading checkpoint shards:  33%|###")

    fake_size(monkeypatch, SEVEN_B, 21 * GIB)
    monkeypatch.setattr("exporters.onnx.export.OnnxExporter.check", lambda *_: None)
    monkeypatch.setattr(subprocess, "run", killed)
    with pytest.raises(BadInputError) as error:
        export_onnx(pruned_llama_dir, tmp_path / "out", OnnxExportConfig(runtime="genai"))
    line = str(error.value)
    assert "killed by SIGKILL" in line and "27 GiB of weights" in line and "21 GiB was free" in line
    assert "Loading checkpoint" not in line and not (tmp_path / "out").exists()


def tiny_graph_folder(folder):
    """``folder/model.onnx``: one MatMul by a 64 x 64 weight (16 KiB, in the graph file)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir()
    onnx.save(model, str(folder / "model.onnx"))
    return folder


def uses_external_data(path) -> bool:
    import onnx
    from onnx.external_data_helper import uses_external_data as external

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(external(tensor) for tensor in graph.initializer)


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_a_quantized_graph_over_the_limit_keeps_its_weights_outside(method, tmp_path, monkeypatch):
    """The 2 GB limit lowered to 1 KiB: the quantized graph is written with external data (and
    without the limit lowered, inside the graph file)."""
    import exporters.onnx.quantize as quantize

    inside = quantize.quantize_int8(tiny_graph_folder(tmp_path / "inside"), method, 32)
    monkeypatch.setattr(quantize, "TWO_GIB", 1024)
    outside = quantize.quantize_int8(tiny_graph_folder(tmp_path / "outside"), method, 32)
    assert not uses_external_data(inside) and uses_external_data(outside)


def test_the_builder_runs_with_no_model_loaded(pruned_llama_dir, tmp_path, monkeypatch):
    """The builder loads its own copy: the command loads none before it (the PyTorch reference
    comes after the build)."""
    import compress.model.loading

    events = []
    monkeypatch.setattr(
        compress.model.loading, "load_model", lambda *_, **__: events.append("load_model")
    )

    def builder(command, **_):
        events.append("builder")
        return subprocess.CompletedProcess(command, 1, "", "stopped here by the test")

    monkeypatch.setattr(subprocess, "run", builder)
    with pytest.raises(BadInputError, match="stopped here by the test"):
        export_onnx(pruned_llama_dir, tmp_path / "out", OnnxExportConfig(runtime="genai"))
    assert events == ["builder"]
