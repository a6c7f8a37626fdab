"""Does the ONNX export compute what the PyTorch model computes?

Two checks, both on the same fixed prompts, in float32:

- logits: max |logit_torch - logit_ort| over every position of every prompt (the prefill path),
  and over the decode steps of greedy generation while both runs still agree on the tokens (the
  past-key-values path when the export has one);
- tokens: greedy generation gives the same new tokens in ONNX Runtime as in PyTorch.

The PyTorch side can be computed first (:func:`reference_outputs`) and the model freed before the
ONNX model loads (:func:`compare_parity`), so a large model is never held twice. Both models only
need ``__call__(input_ids=, attention_mask=) -> .logits`` and ``generate``, which
``transformers`` models and ``optimum``'s ``ORTModelForCausalLM`` share.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

# Plain English, code and digits: different token statistics, all short enough for tiny models.
PROMPTS = (
    "The capital of France is",
    "Pruning removes weights from a neural network so that",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "In 1905 Albert Einstein published four papers, and 2 + 2 =",
)


@dataclass
class ParityResult:
    """What the check measured; ``passed`` is derived from the numbers and the tolerance."""

    atol: float
    max_abs_logit_diff: float  # prefill logits, every position of every prompt
    max_abs_decode_logit_diff: float  # greedy decode steps, up to the first token mismatch
    prompts: int
    prompt_tokens: int
    max_new_tokens: int
    tokens_equal: bool
    mismatches: list[dict]  # {"prompt": i, "torch": [...], "ort": [...]} for each differing prompt
    mean_abs_logit_diff: float = 0.0  # prefill logits, mean over every position and vocab entry
    # A quantized graph's rounding moves every logit a little and may flip a near-tie: it passes
    # when the *mean* |logit diff| is within atol; the max and the greedy tokens are recorded
    quantized: bool = False

    @property
    def passed(self) -> bool:
        if self.quantized:
            return self.mean_abs_logit_diff <= self.atol
        worst = max(self.max_abs_logit_diff, self.max_abs_decode_logit_diff)
        return worst <= self.atol and self.tokens_equal

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def encode_prompts(tokenizer, prompts: tuple[str, ...] = PROMPTS) -> list[torch.Tensor]:
    """One ``(1, T)`` id tensor per prompt; no token_type_ids (ORT decoders take none)."""
    return [
        tokenizer(p, return_tensors="pt", return_token_type_ids=False)["input_ids"] for p in prompts
    ]


@torch.no_grad()
def _greedy(model, input_ids: torch.Tensor, max_new_tokens: int, pad_token_id: int):
    out = model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=pad_token_id,
        return_dict_in_generate=True,
        output_logits=True,
    )
    new_tokens = out.sequences[0, input_ids.shape[1] :].tolist()
    return new_tokens, [step.float() for step in out.logits]


def _decode_diff(torch_steps, ort_steps, torch_tokens, ort_tokens) -> float:
    """Max logit difference over the steps both runs took from the same context."""
    worst = 0.0
    for step, (a, b) in enumerate(zip(torch_steps, ort_steps, strict=True)):
        worst = max(worst, (a - b).abs().max().item())
        if torch_tokens[step] != ort_tokens[step]:
            break  # later steps see different contexts; their logits are not comparable
    return worst


@dataclass
class Reference:
    """What the PyTorch model computed on one prompt: computed first, so the PyTorch model can be
    freed before the ONNX model loads (two copies of a large model need not fit at once)."""

    ids: torch.Tensor  # (1, T)
    logits: torch.Tensor  # (1, T, V) prefill logits
    tokens: list[int]  # greedy new tokens
    steps: list[torch.Tensor]  # the logits each greedy token was chosen from


@torch.no_grad()
def reference_outputs(
    torch_model, prompts: list[torch.Tensor], max_new_tokens: int, pad_token_id: int
) -> list[Reference]:
    """The PyTorch side of the check on ``prompts`` (each ``(1, T)``)."""
    references = []
    for ids in prompts:
        logits = torch_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float()
        tokens, steps = _greedy(torch_model, ids, max_new_tokens, pad_token_id)
        references.append(Reference(ids, logits, tokens, steps))
    return references


@torch.no_grad()
def compare_parity(
    references: list[Reference],
    ort_model,
    max_new_tokens: int,
    atol: float,
    pad_token_id: int,
    quantized: bool = False,
) -> ParityResult:
    """Compare ``ort_model`` against the PyTorch ``references`` of :func:`reference_outputs`."""
    prefill = decode = total = 0.0
    count = 0
    mismatches = []
    for index, ref in enumerate(references):
        got = ort_model(input_ids=ref.ids, attention_mask=torch.ones_like(ref.ids)).logits.float()
        difference = (ref.logits - got).abs()
        prefill = max(prefill, difference.max().item())
        total, count = total + difference.sum().item(), count + difference.numel()
        ort_tokens, ort_steps = _greedy(ort_model, ref.ids, max_new_tokens, pad_token_id)
        decode = max(decode, _decode_diff(ref.steps, ort_steps, ref.tokens, ort_tokens))
        if ref.tokens != ort_tokens:
            mismatches.append({"prompt": index, "torch": ref.tokens, "ort": ort_tokens})
    return ParityResult(
        atol=atol,
        max_abs_logit_diff=prefill,
        max_abs_decode_logit_diff=decode,
        prompts=len(references),
        prompt_tokens=sum(ref.ids.shape[1] for ref in references),
        max_new_tokens=max_new_tokens,
        tokens_equal=not mismatches,
        mismatches=mismatches,
        mean_abs_logit_diff=total / count,
        quantized=quantized,
    )


def check_parity(
    torch_model,
    ort_model,
    prompts: list[torch.Tensor],
    max_new_tokens: int,
    atol: float,
    pad_token_id: int,
    quantized: bool = False,
) -> ParityResult:
    """Compare ``ort_model`` against ``torch_model`` on ``prompts`` (each ``(1, T)``)."""
    references = reference_outputs(torch_model, prompts, max_new_tokens, pad_token_id)
    return compare_parity(references, ort_model, max_new_tokens, atol, pad_token_id, quantized)
