"""Direct log-likelihood scoring: one forward pass per request, no harness, no batching.

The tests score the same documents with this module and through lm-eval and require the
numbers to agree to 1e-6, which checks both the offline task configs (prompts) and the
harness wiring. Tokenization follows the convention lm-eval uses for causal models, so the
two see the same tokens: trailing spaces of the context move to the continuation, the pair
is encoded as one string and the continuation is what follows the context's own tokens; an
empty context is replaced by the BOS (else EOS) token; over-long inputs lose tokens on the left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tests.evaluators.oracles.prompts import ITEMS, Item


@dataclass
class ItemScore:
    """Scores of one document: log-likelihood per request and the metrics they imply."""

    logliks: list[float]
    greedy: list[bool]
    acc: float
    acc_norm: float


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of the context and of the continuation that follows it."""
    if not context:
        prefix = tokenizer.bos_token_id
        prefix = tokenizer.eos_token_id if prefix is None else prefix
        cont = tokenizer.encode(continuation, add_special_tokens=False)
        return ([prefix], cont) if cont[0] != prefix else (cont[:1], cont[1:])
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode(context + continuation)
    head = tokenizer.encode(context)
    return head, whole[len(head) :]


@torch.no_grad()
def continuation_logprob(
    model: torch.nn.Module, tokenizer, context: str, continuation: str, max_length: int
) -> tuple[float, bool]:
    """``log p(continuation | context)`` and whether it is the greedy continuation."""
    head, cont = encode_pair(tokenizer, context, continuation)
    ids = (head + cont)[-(max_length + 1) :][:-1]  # the last token is only ever a target
    device = next(model.parameters()).device
    logits = model(torch.tensor([ids], device=device)).logits[0, -len(cont) :]  # (C, V)
    logprobs = F.log_softmax(logits, dim=-1)
    target = torch.tensor(cont, device=device)
    greedy = bool((logprobs.argmax(dim=-1) == target).all())
    return float(logprobs.gather(1, target[:, None]).sum()), greedy


def score_item(model: torch.nn.Module, tokenizer, item: Item, max_length: int) -> ItemScore:
    """Score every request of ``item``; ties go to the first answer, as in ``argmax``."""
    pairs = [continuation_logprob(model, tokenizer, c, x, max_length) for c, x in item.requests]
    logliks = [loglik for loglik, _ in pairs]
    greedy = [flag for _, flag in pairs]
    normed = [loglik / len(choice) for loglik, choice in zip(logliks, item.choices, strict=True)]
    pick = max(range(len(logliks)), key=logliks.__getitem__)
    pick_norm = max(range(len(normed)), key=normed.__getitem__)
    acc = float(greedy[0]) if item.greedy_acc else float(pick == item.gold)
    return ItemScore(logliks, greedy, acc, float(pick_norm == item.gold))


def score_docs(
    model: torch.nn.Module, tokenizer, task: str, docs: list[dict], max_length: int
) -> list[ItemScore]:
    """Score ``docs`` of ``task`` (a name in :data:`evaluators.tasks.registry.TASKS`)."""
    return [score_item(model, tokenizer, ITEMS[task](doc), max_length) for doc in docs]


def lambada_perplexity(scores: list[ItemScore]) -> float:
    """LAMBADA's perplexity: ``exp`` of minus the mean last-word log-likelihood."""
    return math.exp(-sum(score.logliks[0] for score in scores) / len(scores))
