"""Inputs that are well-formed files or numbers but wrong in one value: a ``.jsonl`` line whose
``text`` is not a string, a negative window count. Each is one ``error:`` line, exit 2, nothing
written (see :func:`tests.compress.test_refusals.refused`)."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.compress.test_refusals import FAST, refused

NOT_STRINGS = {"int": 5, "NoneType": None, "list": ["a", "b"]}


def jsonl_with_bad_third_line(path, text) -> None:
    """A .jsonl file whose third line's ``text`` is ``text``, the others proper strings."""
    lines = [{"text": "a first document"}, {"text": "a second one"}, {"text": text}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.mark.parametrize("kind", sorted(NOT_STRINGS))
def test_prune_refuses_jsonl_text_that_is_not_a_string(kind, tiny_model_dir, tmp_path):
    calib = tmp_path / "calib.jsonl"
    jsonl_with_bad_third_line(calib, NOT_STRINGS[kind])
    args = ["prune", tiny_model_dir, "--calib", calib, "--output", tmp_path / "out", *FAST]
    refused(args, tmp_path, f"{calib}:3", f"a {kind}, not a string")


def test_eval_ppl_refuses_jsonl_text_that_is_not_a_string(tiny_model_dir, tmp_path):
    texts = tmp_path / "texts.jsonl"
    jsonl_with_bad_third_line(texts, None)
    args = ["eval", "ppl", tiny_model_dir, "--dataset", texts, "--seqlen", "32", "--device", "cpu"]
    refused([*args, "--json", tmp_path / "ppl.json"], tmp_path, f"{texts}:3", "NoneType")


CPU_PPL = ["--seqlen", "32", "--device", "cpu"]


@pytest.mark.parametrize("flag", ["--eval-windows", "--max-windows"])
def test_eval_ppl_refuses_negative_windows(flag, tiny_model_dir, tmp_path):
    args = ["eval", "ppl", tiny_model_dir, flag, "-1", *CPU_PPL, "--json", tmp_path / "p.json"]
    refused(args, tmp_path, f"{flag} must be 0 or more", "0: all", "-1")


def test_prune_refuses_negative_eval_windows(tiny_model_dir, tmp_path):
    args = ["prune", tiny_model_dir, "--eval", "--eval-windows", "-1", "--output", tmp_path / "o"]
    refused([*args, *FAST], tmp_path, "--eval-windows must be 0 or more", "0: all")


@pytest.fixture
def pruned_folder(tiny_model_dir, tmp_path):
    """A copy of the tiny model with the smallest report.json a pruned folder has."""
    folder = tmp_path / "pruned"
    shutil.copytree(tiny_model_dir, folder)
    recipe = {"evaluation": {"dataset": "wikipedia", "seqlen": 32, "max_windows": 2}}
    report = {"format": "compress.report/1", "recipe": recipe}
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def test_export_bnb_refuses_negative_eval_windows(pruned_folder, tmp_path):
    args = ["export", "bnb", pruned_folder, "-o", tmp_path / "q", "--eval-windows", "-1"]
    refused([*args, "--device", "cpu"], tmp_path, "--eval-windows must be 0 or more", "0: all")


def test_eval_all_refuses_negative_max_windows(pruned_folder, tmp_path):
    args = ["eval", "all", pruned_folder, "--max-windows", "-1", "--seqlen", "32"]
    refused([*args, "--device", "cpu"], tmp_path, "--max-windows must be 0 or more", "0: all")
