"""Does an ONNX export fit in RAM? Pure arithmetic over the model's weights and the free RAM the
caller measured (:func:`compress.model.preflight.float32_weights`, ``free_ram``), so a refusal is
testable with made-up sizes.

A route's peak resident memory is modelled as ``fixed + factor x weights``, ``weights`` being
the bytes of the model's weights in float32 (every route loads and computes in float32). The
figures are the peak summed RSS of ``compress export onnx`` and its model-builder child,
sampled every 0.1 s, for two models: the tests' tiny Llama (13 MB of float32 weights) and the
embedded SmolLM2-135M (538 MB); ``factor`` is the slope between them, ``fixed`` the rest (the
libraries, the tokenizer, the runtimes' own buffers, the builder's process):

- genai fp32 (0.98 and 1.66 GB): the builder loads the Hugging Face model in float32 and
  streams the graph to disk; the PyTorch reference is freed before the fp32 build loads;
- genai int4 (1.09 and 3.30 GB): the builder holds the model and the whole float graph
  (``ir.to_proto``) while it quantizes;
- optimum fp32 (0.75 and 3.69 GB): torch.onnx.export holds the traced graph and its serialized
  copy beside the model. The quantized optimum routes run that export first, so they take at
  least as much (their own peak was not measured).

A quantized folder built from its recorded integers (``("genai", "exact")``) is modelled on
what the builder reads instead: ``weights`` is then the bytes of its checkpoint with the
recorded weights packed and the rest in float32 (:func:`exporters.onnx.exact.checkpoint_bytes`).
Its builder process peaked at 621 MB for the tiny Llama (12.7 MB read) and 1.09 GB for
SmolLM2-135M at int4 (166 MB read: the float32 embedding and 53 MB of packed blocks).
"""

from __future__ import annotations

from dataclasses import dataclass

from compress.core.errors import BadInputError

GIB = 1024**3
MB = 10**6


@dataclass(frozen=True)
class Route:
    what: str  # "the fp32 ONNX export"
    flags: str  # the flags that select it
    fixed: int  # peak RSS bytes that do not grow with the model
    factor: float  # peak RSS per byte of float32 weights, above ``fixed``


def _optimum(quantize: str | None) -> Route:
    flags = "--runtime optimum" + (f" --quantize {quantize}" if quantize else "")
    return Route(f"the {quantize or 'fp32'} ONNX export", flags, 682 * MB, 5.59)


# keyed by (route, quantize)
ROUTES: dict[tuple[str, str | None], Route] = {
    ("genai", None): Route("the fp32 onnxruntime-genai build", "--runtime genai", 966 * MB, 1.29),
    ("genai", "int4"): Route(
        "the int4 onnxruntime-genai build", "--runtime genai --quantize int4", 1036 * MB, 4.21
    ),
    **{("optimum", q): _optimum(q) for q in (None, "int8", "int8-weights", "int4")},
    # a quantized folder's integers through a GPTQ checkpoint: no float graph of the blocks
    ("genai", "exact"): Route(
        "the onnxruntime-genai build of the folder's integers",
        "--runtime genai --quantize int4 (a quantized folder)",
        582 * MB,
        3.05,
    ),
}


def need(route: Route, weights: int) -> int:
    """Peak RAM ``route`` takes for ``weights`` bytes of float32 weights."""
    return int(route.fixed + route.factor * weights)


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
    """The cheapest route where it fits, else the RAM it needs."""
    routes = [route for key, route in ROUTES.items() if key[1] != "exact"]  # any folder's
    cheapest = min(routes, key=lambda route: need(route, weights))
    needed = gib(need(cheapest, weights))
    close = "close other programs or " if closing else ""
    if need(cheapest, weights) <= free:
        return f"{close}use {cheapest.flags}, which fits (about {needed})"
    return (
        f"no route fits: {close}use a machine with at least {needed} of free RAM ({cheapest.flags})"
    )
