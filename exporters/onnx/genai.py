"""Build a model with onnxruntime-genai's model builder and run it with its generator.

The builder (``onnxruntime_genai.models.builder``) writes a fused decoder (GroupQueryAttention,
SkipLayerNorm, MatMulNBits for int4) plus ``genai_config.json``; the generator keeps the key/value
cache inside the runtime. The builder runs in a child process (:mod:`exporters.onnx.builder`)
because it puts its own folder on ``sys.path`` and needs two adjustments for transformers 4.57.

:class:`GenaiLM` gives a built folder the ``__call__``/``generate`` interface that
:mod:`exporters.onnx.parity`, :func:`exporters.onnx.quantize.window_perplexity` and
:mod:`exporters.onnx.timing` use for PyTorch and optimum models, so every runtime is checked and
timed by the same code. Token ids come from the Hugging Face tokenizer saved beside the model:
the same ids PyTorch sees.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from compress.core.errors import BadInputError

GENAI_CONFIG = "genai_config.json"
PRECISIONS = ("fp32", "int4")


def is_genai_folder(folder: Path) -> bool:
    """Whether ``folder`` was built for onnxruntime-genai (it holds ``genai_config.json``)."""
    return (Path(folder) / GENAI_CONFIG).is_file()


def context_length(folder: Path) -> int:
    """The positions the build attends to: ``genai_config.json``'s ``context_length``."""
    return _model_config(folder)["context_length"]


def _model_config(folder: Path) -> dict:
    return json.loads((Path(folder) / GENAI_CONFIG).read_text())["model"]


def _cache_floor(model_config: dict) -> int:
    """The fewest positions the generator's key/value cache may hold: the local window where a
    block attends through one (GroupQueryAttention's ``sliding_window_cache`` refuses a smaller
    cache), within the context. A recorded window no block uses (the builder records one for
    a Mistral or Phi-3 window as long as the context) needs no floor."""
    sliding = model_config["decoder"].get("sliding_window") or {}
    if not sliding.get("layers", True):
        return 0
    return min(sliding.get("window_size", 0), model_config["context_length"])


def execution_provider() -> str:
    """``cuda`` where onnxruntime offers CUDA, else ``cpu``."""
    import onnxruntime

    return "cuda" if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else "cpu"


def build(
    folder: Path, output: Path, precision: str, provider: str, quant: dict | None = None
) -> None:
    """Run the model builder on the local model ``folder`` into ``output`` (offline); ``quant``
    (:func:`int4_quant_config`) for int4.

    Raises:
        BadInputError: the builder fails (an unsupported architecture, say): its last line; or
            it is killed (out of memory): the weights, the free RAM and what helps.
    """
    from compress.model.preflight import float32_weights, free_ram
    from exporters.onnx.fit import killed_line

    root = Path(__file__).resolve().parents[2]
    command = [
        sys.executable,
        "-m",
        "exporters.onnx.builder",
        "-i",
        str(folder),
        "-o",
        str(output),
        "-p",
        precision,
        "-e",
        provider,
        "-c",
        str(output / ".builder_cache"),
    ]
    if quant is not None:
        command += ["--target_options", json.dumps(quant)]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    free = free_ram()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode < 0:  # ended by a signal: SIGKILL from the out-of-memory killer
        signal_name = signal.Signals(-result.returncode).name
        quantize = "int4" if precision == "int4" else None
        raise BadInputError(
            killed_line(signal_name, "genai", quantize, float32_weights(folder), free)
        )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
        raise BadInputError(f"onnxruntime-genai's model builder failed: {' '.join(tail)}")
    _remove_tree(output / ".builder_cache")


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def session_config(folder: Path, threads: int):
    """The folder's ``genai_config.json`` with ``threads`` intra-op threads, like
    :func:`exporters.onnx.load_ort` gives ONNX Runtime (the runtime's default is every core),
    so that timings compare like with like."""
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    options = {"intra_op_num_threads": threads}
    config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
    return config


class GenaiLM:
    """An onnxruntime-genai model behind the ``__call__``/``generate`` interface of
    transformers causal LMs (batch 1, greedy), for parity, perplexity and timing."""

    def __init__(
        self, folder: Path, eos_token_ids: list[int] | None = None, threads: int | None = None
    ):
        import onnxruntime_genai as og

        self.og = og
        self.model = og.Model(session_config(folder, threads or torch.get_num_threads()))
        config = _model_config(folder)
        if eos_token_ids is None:
            eos = config["eos_token_id"]
            eos_token_ids = eos if isinstance(eos, list) else [eos]
        self.eos_token_ids = list(eos_token_ids)
        self.min_length = _cache_floor(config)

    def _generator(self, ids: torch.Tensor, new_tokens: int):
        """A generator fed ``ids``, its cache sized for ``new_tokens`` more (at least
        ``min_length``: the callers stop after ``new_tokens``)."""
        params = self.og.GeneratorParams(self.model)
        max_length = max(ids.shape[-1] + new_tokens, self.min_length)
        params.set_search_options(max_length=max_length, do_sample=False)
        generator = self.og.Generator(self.model, params)
        generator.append_tokens(np.asarray(ids.reshape(-1).tolist(), dtype=np.int32))
        return generator

    def _logits(self, generator) -> torch.Tensor:
        return torch.from_numpy(np.array(generator.get_output("logits"), dtype=np.float32))

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, attention_mask=None) -> SimpleNamespace:
        """Logits ``(1, T, V)`` of one forward pass over the prompt."""
        generator = self._generator(input_ids, 1)
        return SimpleNamespace(logits=self._logits(generator))

    def stream(self, input_ids: torch.Tensor, max_new_tokens: int, exact: bool = False):
        """Greedy tokens as they are generated, each with the raw logits it was chosen from.

        The runtime's generator picks the tokens and stops at end-of-sequence; with ``exact``
        every one of ``max_new_tokens`` is taken, end-of-sequence masked as transformers'
        ``min_new_tokens`` does: the argmax is taken here and fed back with ``append_tokens``
        (the runtime's own ``min_length`` writes -FLT_MAX into the logits it reports).
        """
        generator = self._generator(input_ids, max_new_tokens)
        if not exact:
            for _ in range(max_new_tokens):
                if generator.is_done():  # end-of-sequence
                    return
                generator.generate_next_token()  # runs the step, then picks from its logits
                yield int(generator.get_next_tokens()[0]), self._logits(generator)[:, -1]
            return
        for step in range(max_new_tokens):
            logits = self._logits(generator)[:, -1]
            choice = logits.clone()
            choice[:, self.eos_token_ids] = -torch.inf
            token = int(choice.argmax(-1))
            yield token, logits
            if step + 1 < max_new_tokens:
                generator.append_tokens(np.array([token], dtype=np.int32))

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        min_new_tokens: int = 0,
        return_dict_in_generate: bool = False,
        output_logits: bool = False,
        **_: object,  # attention_mask, do_sample, pad_token_id: batch 1 greedy needs none
    ):
        exact = min_new_tokens >= max_new_tokens
        steps = list(self.stream(input_ids, max_new_tokens, exact))
        new = torch.tensor([[token for token, _ in steps]], dtype=input_ids.dtype)
        sequences = torch.cat([input_ids, new], dim=1)
        if not return_dict_in_generate:
            return sequences
        return SimpleNamespace(sequences=sequences, logits=[logits for _, logits in steps])


def stream_text(folder: Path, prompt: str, max_new_tokens: int) -> Iterator[str]:
    """Pieces of the greedy continuation of ``prompt``, yielded as the tokens come.

    Raises:
        BadInputError: ``folder`` is no onnxruntime-genai build, or the prompt and
            ``max_new_tokens`` exceed its context.
    """
    from compress.model.compat import load_tokenizer
    from exporters.onnx.context import check_fits

    if not is_genai_folder(folder):
        raise BadInputError(
            f"{folder} has no {GENAI_CONFIG}: run compress export onnx --runtime genai"
        )
    tokenizer = load_tokenizer(folder)
    ids = tokenizer(prompt, return_tensors="pt", return_token_type_ids=False)["input_ids"]
    check_fits(ids.shape[1], max_new_tokens, context_length(folder))
    tokens: list[int] = []
    shown = ""
    for token, _ in GenaiLM(folder).stream(ids, max_new_tokens):
        tokens.append(token)
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            yield text[len(shown) :]
            shown = text
