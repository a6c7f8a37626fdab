"""The saved model.safetensors after `compress prune` with reconstruction: the sparsity the
report claims is there, in the file, as exact zeros; everything outside the blocks is untouched."""

import re

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from compress.cli.main import app

FAST = ["--nsamples", "4", "--seqlen", "32", "--batch-size", "2", "--device", "cpu"]
BLOCK_LINEAR = re.compile(r"model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight")
PER_BLOCK = 7  # q, k, v, o, gate, up, down
pytestmark = pytest.mark.slow  # four CLI runs with reconstruction


@pytest.mark.parametrize(
    "method,pattern",
    [
        ("wanda", "2:4"),
        ("sparsegpt", "4:8"),
        ("wanda", "unstructured"),
        ("sparsegpt", "unstructured"),
    ],
)
def test_saved_weights_hold_the_pattern_after_br_gp(method, pattern, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    args = ["prune", str(tiny_model_dir), "--method", method, "--pattern", pattern]
    args += ["--reconstruct", "br+gp", "--recon-epochs", "1", "--output", str(out), *FAST]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    dense, saved = (
        load_file(tiny_model_dir / "model.safetensors"),
        load_file(out / "model.safetensors"),
    )
    assert saved.keys() == dense.keys()
    pruned = sorted(name for name in saved if BLOCK_LINEAR.fullmatch(name))
    assert len(pruned) == PER_BLOCK * 2
    for name in pruned:
        kept = saved[name] != 0.0  # exact zeros, not small values
        assert not torch.equal(saved[name], dense[name] * kept), f"{name}: reconstruction ran"
        if pattern == "unstructured":
            assert int(kept.sum()) == kept.numel() // 2, name
            if method == "wanda":  # Wanda compares within each output row
                assert (kept.sum(dim=1) == kept.shape[1] // 2).all(), name
        else:
            n, m = map(int, pattern.split(":"))
            groups = kept.reshape(kept.shape[0], -1, m).sum(dim=2)  # along the input dimension
            assert (groups <= n).all(), name
            assert int(groups.sum()) == kept.numel() * n // m, name
    for name in saved.keys() - set(pruned):
        if "layers." not in name:  # embeddings, final norm (and a head, when untied)
            assert torch.equal(saved[name], dense[name]), name
