"""The tasks' prompts written out in plain Python, independent of lm-eval's templates.

Each function turns one document (the JSONL fields of ``evaluators/tasks/offline.py``) into the requests a
log-likelihood scorer needs: ``(context, continuation)`` pairs, the gold index and the answer
strings whose character lengths ``acc_norm`` divides by. They follow lm-eval 0.4.13's task
definitions; ``loglik.py`` scores them directly so the tests can check the harness numbers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Item:
    """One multiple-choice document: a request per answer, and which answer is right."""

    requests: list[tuple[str, str]]  # (context, continuation) per answer
    gold: int
    choices: list[str]  # answer strings, for acc_norm's length normalisation
    greedy_acc: bool = False  # accuracy = the single continuation is the greedy one (LAMBADA)


def _answers(context: str, choices: list[str], gold: int) -> Item:
    return Item([(context, " " + choice) for choice in choices], gold, choices)


def boolq(doc: dict) -> Item:
    context = f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:"
    return _answers(context, ["no", "yes"], int(doc["label"]))


def rte(doc: dict) -> Item:
    context = f"{doc['sentence1']}\nQuestion: {doc['sentence2']} True or False?\nAnswer:"
    return _answers(context, ["True", "False"], int(doc["label"]))


def _clean_hellaswag(text: str) -> str:
    # WikiHow items carry "[title]"-style markers; lm-eval drops them the same way.
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def hellaswag(doc: dict) -> Item:
    context = f"{doc['activity_label']}: {doc['ctx_a']} {doc['ctx_b'].capitalize()}"
    endings = [_clean_hellaswag(ending) for ending in doc["endings"]]
    return _answers(_clean_hellaswag(context), endings, int(doc["label"]))


def winogrande(doc: dict) -> Item:
    # Partial scoring: the option fills the blank in the context; the rest is the continuation.
    blank = doc["sentence"].index("_")
    options = [doc["option1"], doc["option2"]]
    contexts = [doc["sentence"][:blank] + option for option in options]
    rest = " " + doc["sentence"][blank + 1 :].strip()
    return Item([(context, rest) for context in contexts], int(doc["answer"]) - 1, contexts)


def arc(doc: dict) -> Item:
    gold = doc["choices"]["label"].index(doc["answerKey"])
    return _answers(f"Question: {doc['question']}\nAnswer:", doc["choices"]["text"], gold)


def openbookqa(doc: dict) -> Item:
    gold = doc["choices"]["label"].index(doc["answerKey"].lstrip())
    return _answers(doc["question_stem"], doc["choices"]["text"], gold)


def piqa(doc: dict) -> Item:
    return _answers(f"Question: {doc['goal']}\nAnswer:", [doc["sol1"], doc["sol2"]], doc["label"])


def lambada(doc: dict) -> Item:
    """One request: the passage without its last word, then that word."""
    *head, last = doc["text"].split(" ")
    return Item([(" ".join(head), " " + last)], 0, [last], greedy_acc=True)


ITEMS: dict[str, Callable[[dict], Item]] = {
    "boolq": boolq,
    "rte": rte,
    "hellaswag": hellaswag,
    "winogrande": winogrande,
    "arc_easy": arc,
    "arc_challenge": arc,
    "openbookqa": openbookqa,
    "piqa": piqa,
    "lambada": lambada,
}
