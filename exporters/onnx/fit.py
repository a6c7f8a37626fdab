"""Does an ONNX export fit in RAM? Pure arithmetic over the model's weights and the free RAM the
caller measured (:func:`compress.model.preflight.float32_weights`, ``free_ram``), so a refusal is
testable with made-up sizes.

Each route's peak resident memory is modelled as ``BASE + factor x weights``, ``weights`` being
the bytes of the model's weights in float32 (every route loads and computes in float32). The
factors are peak RSS measured with ``/usr/bin/time -v`` on the embedded SmolLM2-135M (538 MB of
float32 weights), minus the RSS of a process that has only imported the libraries, divided by the
weights; the command's process and the model builder's child process each count, as they run
one after the other. Why each factor is what it is:

- optimum (fp32): torch.onnx.export traces the loaded model and holds the serialized graph
  beside it; the parity check then holds the PyTorch model and the ONNX Runtime session;
- optimum with ``--quantize``: the fp32 graph, its quantized copy in memory, and both sessions
  while they are compared;
- genai fp32: the builder loads the Hugging Face model in float32 and streams the graph to disk;
  then the PyTorch reference, freed before the ONNX Runtime session loads the fp32 graph;
- genai int4: the builder holds the Hugging Face model and the whole float graph in memory
  (``ir.to_proto``) while it quantizes; the int4 session that follows is small.
"""

from __future__ import annotations

from dataclasses import dataclass

from compress.core.errors import BadInputError

GIB = 1024**3
BASE = 1 * GIB  # torch, transformers and ONNX Runtime imported, before any model loads


@dataclass(frozen=True)
class Route:
    what: str  # "the fp32 ONNX export"
    flags: str  # the flags that select it
    factor: float  # peak RSS above BASE per byte of float32 weights


# keyed by (route, quantize); int8-weights keeps int8's factor (the same two graphs in memory)
ROUTES: dict[tuple[str, str | None], Route] = {
    ("optimum", None): Route("the fp32 ONNX export", "--runtime optimum", 4.0),
    ("optimum", "int8"): Route("the int8 ONNX export", "--runtime optimum --quantize int8", 5.0),
    ("optimum", "int8-weights"): Route(
        "the int8-weights ONNX export", "--runtime optimum --quantize int8-weights", 5.0
    ),
    ("optimum", "int4"): Route("the int4 ONNX export", "--runtime optimum --quantize int4", 5.0),
    ("genai", None): Route("the fp32 onnxruntime-genai build", "--runtime genai", 2.0),
    ("genai", "int4"): Route(
        "the int4 onnxruntime-genai build", "--runtime genai --quantize int4", 2.5
    ),
}


def need(route: Route, weights: int) -> int:
    """Peak RAM ``route`` takes for ``weights`` bytes of float32 weights."""
    return int(BASE + route.factor * weights)


def gib(size: float) -> str:
    return f"{size / GIB:.0f} GiB" if size >= 10 * GIB else f"{size / GIB:.1f} GiB"


def check_fits(route: str, quantize: str | None, weights: int, free: int) -> None:
    """Refuse, before any work, a route whose peak exceeds ``free`` bytes of RAM.

    Raises:
        BadInputError: the numbers, and a route that fits (or what helps when none does).
    """
    chosen = ROUTES[route, quantize]
    needed = need(chosen, weights)
    if needed <= free:
        return
    raise BadInputError(
        f"{chosen.what} of this model needs about {gib(needed)} of RAM ({gib(weights)} of "
        f"weights); {gib(free)} is free; {_helps(weights, free)}"
    )


def killed_line(signal: str, route: str, quantize: str | None, weights: int, free: int) -> str:
    """One line for a model builder ended by ``signal`` (SIGKILL: the kernel's out-of-memory
    killer): the numbers and what helps."""
    chosen = ROUTES[route, quantize]
    return (
        f"onnxruntime-genai's model builder was killed by {signal} (out of memory, most likely): "
        f"{chosen.what} needs about {gib(need(chosen, weights))} of RAM for {gib(weights)} of "
        f"weights and {gib(free)} was free; {_helps(weights, free, closing=True)}"
    )


def _helps(weights: int, free: int, closing: bool = False) -> str:
    """The cheapest route that fits, else the RAM the cheapest one needs."""
    cheapest = min(ROUTES.values(), key=lambda route: route.factor)
    fits = need(cheapest, weights) <= free
    close = "close other programs, " if closing else ""
    if fits:
        return f"{close}or use {cheapest.flags}, which fits (about {gib(need(cheapest, weights))})"
    return (
        f"no route fits: {close}or use a machine with at least "
        f"{gib(need(cheapest, weights))} of free RAM ({cheapest.flags})"
    )
