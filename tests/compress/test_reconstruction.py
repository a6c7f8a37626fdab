"""Reconstruction techniques on tiny random models."""

import torch

from compress.core.config import CalibrationConfig, PruneConfig, ReconstructConfig
from compress.engine import Engine, prune_model
from tests.tiny_models import random_llama


def tiny(layers: int = 3):
    return random_llama(vocab_size=256, layers=layers)


def ids(n: int = 8, seed: int = 0):
    return torch.randint(0, 256, (n, 32), generator=torch.Generator().manual_seed(seed))


def config(technique: str, method: str = "wanda", epochs: int = 4, **recon) -> PruneConfig:
    return PruneConfig(
        method=method,
        calibration=CalibrationConfig(nsamples=8, seqlen=32, batch_size=4),
        reconstruct=ReconstructConfig(
            technique=technique, epochs=epochs, lr=1e-3, measure_errors=True, **recon
        ),
    )


def last_errors(technique: str, **kwargs) -> dict:
    outcome = prune_model(tiny(), ids(), config(technique, **kwargs), holdout_ids=ids(4, seed=1))
    return outcome.blocks[-1]["errors"]["after_reconstruction"]


def test_br_beats_lr_and_gp_beats_br_on_calibration():
    lr, br, gp = (last_errors(t)["calibration"] for t in ("lr", "br", "br+gp"))
    assert br < lr
    assert gp < br


def test_masks_exact_after_reconstruction():
    model = tiny()
    outcome = prune_model(model, ids(), config("br+gp+cr"))
    for name, mask in outcome.masks.items():
        weight = model.get_submodule(name).weight
        assert torch.equal(weight != 0, mask), name
        assert outcome.layers[name]["sparsity"] == 0.5


def test_gp_targets_are_dense_model_activations(monkeypatch):
    model = tiny()
    calib = ids()
    with torch.no_grad():
        reference = model(input_ids=calib, output_hidden_states=True).hidden_states
    seen = []
    original = Engine._targets

    def spy(self, i, streams):
        original(self, i, streams)
        if streams.dense_out is not None and len(streams.sparse) == 2:  # the calibration set
            seen.append(torch.cat(streams.dense_out))

    monkeypatch.setattr(Engine, "_targets", spy)
    prune_model(model, calib, config("br+gp", epochs=1))
    for i, target in enumerate(seen[:-1]):  # the last hidden state is after the final norm
        torch.testing.assert_close(target, reference[i + 1])


def test_cross_block_windows_follow_the_paper():
    outcome = prune_model(tiny(layers=4), ids(), config("br+gp+cr", epochs=1))
    windows = [r["window"] for block in outcome.blocks for r in block["reconstruction"]]
    assert windows == [[0], [0, 1], [1, 2], [2, 3], [3]]


def test_none_keeps_dense_values_of_kept_weights():
    model = tiny()
    dense = model.model.layers[0].mlp.up_proj.weight.detach().clone()
    outcome = prune_model(model, ids(), config("none", method="sparsegpt"))
    mask = outcome.masks["model.layers.0.mlp.up_proj"]
    torch.testing.assert_close(model.model.layers[0].mlp.up_proj.weight, dense * mask)


def test_early_stop_records_holdout_and_never_ends_worse():
    outcome = prune_model(
        tiny(), ids(), config("br", epochs=6, early_stop=True), holdout_ids=ids(4, seed=1)
    )
    for block in outcome.blocks:
        run = block["reconstruction"][0]
        errors = run["holdout_error_per_epoch"]
        assert len(errors) == run["epochs_run"] + 1
        if run["stopped_early"]:
            assert errors[-1] >= min(errors[:-1])


def test_statistics_from_the_first_samples_only():
    """Self-generated windows reconstruct but, by default, do not feed the pruner."""
    calib = ids(8)
    cfg = PruneConfig(
        method="wanda",
        calibration=CalibrationConfig(nsamples=8, seqlen=32, batch_size=3),
        reconstruct=ReconstructConfig(technique="lr"),
    )
    mixed = Engine(tiny(), cfg, stats_samples=4).run(calib).masks
    real_only = prune_model(tiny(), calib[:4], cfg).masks
    for name in [n for n in real_only if n.startswith("model.layers.0.")]:
        assert torch.equal(mixed[name], real_only[name]), name


def test_sam_inside_reconstruction_keeps_masks_and_lowers_error():
    model = tiny()
    outcome = prune_model(
        model, ids(), config("br", optimizer="sam", rho=1e-3), holdout_ids=ids(4, seed=1)
    )
    for name, mask in outcome.masks.items():
        assert torch.equal(model.get_submodule(name).weight != 0, mask), name
    errors = outcome.blocks[-1]["errors"]
    assert (
        errors["after_reconstruction"]["calibration"]
        < errors["before_reconstruction"]["calibration"]
    )


def test_activation_storage_choice():
    from compress.engine import activation_device

    cpu = torch.device("cpu")
    assert activation_device("auto", cpu, cpu, 10**12) == cpu  # no accelerator: with the embeddings
    assert activation_device("cpu", torch.device("cuda", 0), torch.device("cuda", 0), 1) == cpu
    model = tiny()
    outcome = prune_model(model, ids(), config("br+gp", epochs=1, activations_device="cpu"))
    assert outcome.blocks[-1]["errors"]["after_reconstruction"]["calibration"] > 0


def test_early_stop_restores_the_best_epoch_bit_for_bit():
    """Training pulls the weights from 0 towards 1; the held-out targets sit at the first
    epoch's weights (Adam's first step is ``lr`` per entry), so held-out error falls once, then
    rises: the run must stop and hand back exactly the first epoch's weights."""
    from compress.algorithms.reconstruct import Batches, normalized_error, reconstruct
    from compress.core.config import ReconstructConfig

    layer = torch.nn.Linear(4, 4, bias=False)
    torch.nn.init.zeros_(layer.weight)
    mask = torch.rand(4, 4, generator=torch.Generator().manual_seed(0)) > 0.5
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    inputs = Batches([x])
    targets = Batches([x @ mask.float().T])  # pruned weights at 1
    held_out = Batches([x @ (0.1 * mask.float()).T])  # ... at lr = 0.1
    snapshots = []  # the weights at each held-out measurement, in order

    def run_held_out(b: int, inp: torch.Tensor) -> torch.Tensor:
        snapshots.append(layer.weight.detach().clone())
        return layer(inp)

    settings = ReconstructConfig(epochs=5, lr=0.1, early_stop=True)
    outcome = reconstruct(
        [layer.weight],
        {layer.weight: mask},
        lambda b, inp: layer(inp),
        inputs,
        targets,
        settings,
        torch.Generator().manual_seed(0),
        holdout=(run_held_out, inputs, held_out),
    )
    errors = outcome["holdout_error_per_epoch"]
    assert outcome["stopped_early"] and outcome["epochs_run"] == 2
    assert errors[1] < errors[0] and errors[2] > errors[1]  # the construction holds
    assert len(snapshots) == len(errors) == 3
    assert torch.equal(layer.weight.detach(), snapshots[1])  # the best epoch's, bit for bit
    assert not torch.equal(layer.weight.detach(), snapshots[2])
    final = normalized_error(lambda b, inp: layer(inp), inputs, held_out, x.device, x.dtype)
    assert final == min(errors)


def batch_compositions(seed: int, epochs: int = 3) -> list[list[frozenset[int]]]:
    """Per epoch, which samples (tagged by value) were trained on together."""
    from compress.algorithms.reconstruct import Batches, reconstruct
    from compress.core.config import ReconstructConfig

    layer = torch.nn.Linear(2, 2)
    samples = torch.arange(10.0).reshape(10, 1, 1).expand(10, 3, 2)  # sample k holds k
    stored = list(samples.split(4))  # batches of 4, 4, 2
    seen: list[frozenset[int]] = []

    def run(b: int, x: torch.Tensor) -> torch.Tensor:
        assert len(x) == len(stored[b])  # the recorded call of a batch of the same size
        seen.append(frozenset(int(v) for v in x[:, 0, 0]))
        return layer(x)

    settings = ReconstructConfig(epochs=epochs, lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    reconstruct(
        list(layer.parameters()), {}, run, Batches(stored), Batches(stored), settings, generator
    )
    return [seen[e * 3 : (e + 1) * 3] for e in range(epochs)]


def test_samples_reshuffled_across_batches_every_epoch_seeded():
    epochs = batch_compositions(seed=0)
    assert all(frozenset().union(*groups) == frozenset(range(10)) for groups in epochs)
    assert len({frozenset(groups) for groups in epochs}) > 1  # compositions change
    assert batch_compositions(seed=0) == epochs


def test_recon_steps_budget_and_share_closed():
    """--recon-steps 3 over 2 batches: two epochs, the second cut after one step; report.json
    gives the steps taken and the share of each block's error reconstruction closed."""
    model = tiny(layers=2)
    outcome = prune_model(model, ids(), config("br+gp", steps=3))
    for block in outcome.blocks:
        trained = block["reconstruction"][0]
        assert trained["steps_run"] == 3 and trained["epochs_run"] == 2
        errors = block["errors"]
        before, after = errors["before_reconstruction"], errors["after_reconstruction"]
        closed = errors["closed"]["calibration"]
        assert closed == (before["calibration"] - after["calibration"]) / before["calibration"]
        assert 0 < closed < 1


def test_recon_schedules_shape_the_learning_rate():
    """linear and cosine reach 0 at the last step from --recon-lr, constant stays; cosine stays
    above linear in the first half (more of the budget near the base rate)."""
    from compress.algorithms.reconstruct import lr_factor
    from compress.core.config import ReconSchedule

    total = 8
    linear, cosine, constant = (
        [lr_factor(s, step, total) for step in range(total + 1)] for s in ReconSchedule
    )
    assert linear[0] == cosine[0] == constant[0] == 1.0
    assert linear[-1] == 0.0 and abs(cosine[-1]) < 1e-12 and constant == [1.0] * (total + 1)
    assert linear[2] == 0.75 and all(c > lin for c, lin in zip(cosine[1:4], linear[1:4]))


def test_recon_schedule_reaches_the_optimizer(monkeypatch):
    """The learning rate each Adam step uses follows --recon-schedule."""
    seen: list[float] = []
    step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    prune_model(tiny(layers=1), ids(), config("br", steps=4, schedule="constant"))
    assert seen == [1e-3] * 4
    seen.clear()
    prune_model(tiny(layers=1), ids(), config("br", steps=4))
    assert seen == [1e-3, 0.75e-3, 0.5e-3, 0.25e-3]


def test_default_lr_scales_with_the_budget_and_is_recorded():
    """No --recon-lr: the paper's 2e-4 at its 320 steps per block, 2e-4 x 320 / steps below,
    capped at 3e-3; an explicit --recon-lr wins; report.json gives the rate each block used."""
    auto = ReconstructConfig()
    assert auto.lr is None
    assert auto.learning_rate(320) == auto.learning_rate(1000) == 2e-4
    assert abs(auto.learning_rate(64) - 1e-3) < 1e-15
    assert auto.learning_rate(16) == auto.learning_rate(1) == 3e-3
    assert ReconstructConfig(lr=5e-4).learning_rate(16) == 5e-4
    recon = PruneConfig(
        method="wanda",
        calibration=CalibrationConfig(nsamples=8, seqlen=32, batch_size=4),
        reconstruct=ReconstructConfig(technique="br", steps=160),
    )
    outcome = prune_model(tiny(layers=1), ids(), recon)
    assert outcome.blocks[0]["reconstruction"][0]["lr"] == 4e-4


def test_unknown_schedule_is_refused_in_one_line():
    import pytest

    from compress.core.errors import BadInputError

    with pytest.raises(BadInputError, match="--recon-schedule 'warm'"):
        ReconstructConfig(schedule="warm")


def test_bf16_model_reconstructs_under_cpu_autocast_with_fp32_master_weights():
    """A bfloat16 model on a CPU trains its blocks in float32 with the forward under bfloat16
    autocast (as on a GPU): each Linear sees float32 weights and returns bfloat16, the masks
    stay exact and reconstruction still closes part of the error."""
    model = tiny(layers=2).to(torch.bfloat16)
    seen: set[tuple[torch.dtype, torch.dtype]] = set()

    def spy(module, args, output):
        if torch.is_grad_enabled():  # a training step, not the statistics or error passes
            seen.add((module.weight.dtype, output.dtype))

    hooks = [
        m.register_forward_hook(spy) for m in model.modules() if isinstance(m, torch.nn.Linear)
    ]
    outcome = prune_model(model, ids(), config("br", steps=4))
    for hook in hooks:
        hook.remove()
    assert seen == {(torch.float32, torch.bfloat16)}
    for name, mask in outcome.masks.items():
        weight = model.get_submodule(name).weight
        assert weight.dtype == torch.bfloat16 and torch.equal(weight != 0, mask), name
    assert all(block["errors"]["closed"]["calibration"] > 0 for block in outcome.blocks)


def test_cpu_autocast_only_for_bfloat16():
    from compress.algorithms.reconstruct import _autocast

    cpu = torch.device("cpu")
    for dtype, enabled in ((torch.bfloat16, True), (torch.float16, False), (None, False)):
        with _autocast(cpu, dtype):
            assert torch.is_autocast_enabled("cpu") is enabled, dtype
