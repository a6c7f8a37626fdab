#!/usr/bin/env python3
"""The peer with its OWL: llm-compressor 0.14 `oneshot` Wanda or SparseGPT on a model folder,
uniform or ``--sparsity-profile owl``, run by the peer's own interpreter (its venv, see
../shared/bench/README.md). A copy of ../shared/bench/llmc_cpu_peer.py (the windows, the
modifiers, the JSON line) extended with the peer's OWL options for benchmarks/sparsity_profile.py.

    PEER=../.peer/bin/python
    $PEER benchmarks/peer_owl.py MODEL_DIR OUT_DIR --windows windows.json --method wanda \\
        --sparsity 0.7 --sparsity-profile owl --owl-m 5 --owl-lambda 0.08

OWL in llm-compressor 0.14 (``SparsityModifierBase._infer_owl_layer_sparsity``): per decoder layer
the share of |W|·‖X‖ scores above ``owl_m`` × their mean, rescaled to [0, 2λ] and centred on the
target, an unweighted mean over layers. Three things in 0.14 stop it from running as
documented, and this script works around them without changing the peer's numbers:
- its activation pass (``_get_activations``) runs the calibration pipeline from inside
  ``on_initialize``, whose first event raises "Cannot invoke event before initializing"; here
  the same sums (per batch ``sqrt(sum x²)`` of each Linear's input, over ``nsamples=128``) come
  from plain forward pre-hooks over the same dataloader;
- with ``targets=["Linear"]`` (the shared script's) the per-layer sparsities (one per decoder
  layer) fail the check against the number of target modules (one per Linear), so OWL targets
  the decoder layers (``--owl-targets``, default the model's decoder layer class);
- the inferred sparsities are a dict by layer name, which ``on_calibration_start`` does not
  index (it handles a list or one float), so the dict is turned into the list of the target
  layers' values in order right after the peer computes it.
Prints one JSON line: seconds of the oneshot call, peak RSS, per-decoder-layer sparsity
measured, and the peer's OWL sparsities.
"""

import argparse
import json
import resource
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("out")
ap.add_argument("--windows", required=True, help="JSON file: a list of token-id lists")
ap.add_argument("--method", choices=["wanda", "sparsegpt"], default="wanda")
ap.add_argument("--sparsity", type=float, default=0.5)
ap.add_argument("--sparsity-profile", choices=["uniform", "owl"], default="uniform")
ap.add_argument("--owl-m", type=float, default=5.0)
ap.add_argument("--owl-lambda", type=float, default=0.08)
ap.add_argument("--owl-targets", help="the modules OWL allocates over (default: decoder layers)")
a = ap.parse_args()

import llmcompressor  # noqa: E402
from datasets import Dataset  # noqa: E402
from llmcompressor import oneshot  # noqa: E402
from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier  # noqa: E402

tok = AutoTokenizer.from_pretrained(a.model)
model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
windows = json.load(open(a.windows))
nsamples, seqlen = len(windows), len(windows[0])
ds = Dataset.from_dict({"input_ids": windows, "attention_mask": [[1] * seqlen] * nsamples})
Base = SparseGPTModifier if a.method == "sparsegpt" else WandaPruningModifier
owl_sparsities: dict = {}


class Modifier(Base):
    """The peer's modifier; OWL's dict of sparsities handed on as the list it can index."""

    def _get_activations(self, model, dataloader, nsamples=128):
        acts: dict = {}

        def save(name):
            def hook(_module, args):
                x = args[0] if isinstance(args, tuple) else args
                acts[name] = acts.get(name, 0) + x.pow(2).sum(dim=(0, 1)).sqrt() / nsamples

            return hook

        handles = [
            m.register_forward_pre_hook(save(name))
            for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and "lm_head" not in name
        ]
        with torch.no_grad():
            for batch in dataloader:
                model(**{k: v.to(model.device) for k, v in batch.items()})
        for handle in handles:
            handle.remove()
        return acts

    def on_initialize(self, state, **kwargs):
        done = super().on_initialize(state, **kwargs)
        if isinstance(self.sparsity, dict):
            owl_sparsities.update(self.sparsity)
            self.sparsity = [self.sparsity[name] for name in self._target_layers]
        return done


options = {"sparsity": a.sparsity, "mask_structure": "0:0", "ignore": ["re:.*lm_head"]}
if a.sparsity_profile == "owl":
    layer_class = type(model.model.layers[0]).__name__
    owl_m = int(a.owl_m) if a.owl_m.is_integer() else a.owl_m  # the peer's field is an int
    options |= {"sparsity_profile": "owl", "owl_m": owl_m, "owl_lmbda": a.owl_lambda}
    options["targets"] = [a.owl_targets or layer_class]
else:
    options["targets"] = ["Linear"]
recipe = Modifier(**options)
t = time.perf_counter()
oneshot(
    model=model,
    tokenizer=tok,
    dataset=ds,
    recipe=[recipe],
    num_calibration_samples=nsamples,
    max_seq_length=seqlen,
    batch_size=1,
    shuffle_calibration_samples=False,
    output_dir=None,
)
seconds = time.perf_counter() - t
per_layer = []
zeros = numel = 0
for layer in model.model.layers:
    weights = [m.weight for m in layer.modules() if isinstance(m, torch.nn.Linear)]
    z, n = sum(int((w == 0).sum()) for w in weights), sum(w.numel() for w in weights)
    per_layer.append(round(z / n, 4))
    zeros, numel = zeros + z, numel + n
model.save_pretrained(a.out)
tok.save_pretrained(a.out)
print(
    json.dumps(
        {
            "peer": f"llmcompressor {llmcompressor.__version__}",
            "method": a.method,
            "sparsity_profile": a.sparsity_profile,
            "owl_m": a.owl_m,
            "owl_lambda": a.owl_lambda,
            "nsamples": nsamples,
            "seqlen": seqlen,
            "oneshot_seconds": round(seconds, 1),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "measured_sparsity": zeros / numel,
            "block_sparsity": per_layer,
            "owl_sparsities": [round(float(v), 4) for v in owl_sparsities.values()],
            "torch_threads": torch.get_num_threads(),
        }
    )
)
