"""``--recon-loss fisher``: block errors weighted by the dense model's squared loss gradients."""

import pytest
import torch

from compress.core.config import ReconstructConfig
from compress.core.errors import BadInputError
from compress.engine import Engine, prune_model
from compress.engine.sensitivity import output_sensitivities
from compress.reconstruct import Batches, reconstruct
from tests.compress.test_reconstruction import config, ids, tiny


def test_sensitivities_are_squared_loss_gradients_with_mean_one():
    model = tiny()
    calib = ids()
    got = output_sensitivities(model, model.model.layers, list(calib.split(4)), lambda t: t)
    embeds = model.get_input_embeddings()(calib).detach().requires_grad_(True)
    out = model(inputs_embeds=embeds, output_hidden_states=True)
    loss = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].flatten(0, 1), calib[:, 1:].flatten(), reduction="sum"
    )
    layers = len(model.model.layers)
    # hidden_states[i + 1] is block i's output (the last one is after the final norm)
    grads = torch.autograd.grad(loss, out.hidden_states[1:layers])
    for i, grad in enumerate(grads):
        expected = grad.pow(2)
        expected = expected / expected.mean()
        assert torch.allclose(torch.cat(got[i]), expected, rtol=1e-4, atol=1e-6), i
    assert all(abs(float(torch.cat(s).mean()) - 1) < 1e-5 for s in got)


def _bottleneck(seed: int = 0):
    """Two outputs through one hidden unit: no weights fit both, so the loss decides which."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 1, bias=False), torch.nn.Linear(1, 2, bias=False))


def _fit(weights: Batches | None) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    net = _bottleneck()
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    y = torch.stack([x[:, 0], x[:, 1]], dim=1)  # two independent outputs
    reconstruct(
        list(net.parameters()),
        {},
        lambda b, inp: net(inp),
        Batches([x]),
        Batches([y]),
        ReconstructConfig(epochs=300, lr=1e-2),
        torch.Generator().manual_seed(0),
        weights=weights,
    )
    return net, x, y


def test_unit_weights_change_nothing_bit_for_bit():
    plain, _, _ = _fit(None)
    ones, _, _ = _fit(Batches([torch.ones(16, 2)]))
    for a, b in zip(plain.parameters(), ones.parameters()):
        assert torch.equal(a, b)


def test_weights_decide_which_output_is_fitted():
    def output_errors(weights):
        net, x, y = _fit(weights)
        with torch.no_grad():
            return (net(x) - y).pow(2).mean(0)

    first = output_errors(Batches([torch.tensor([[10.0, 0.1]]).expand(16, 2)]))
    second = output_errors(Batches([torch.tensor([[0.1, 10.0]]).expand(16, 2)]))
    assert first[0] < 0.5 * second[0]
    assert second[1] < 0.5 * first[1]


def test_engine_trains_every_window_on_its_blocks_sensitivities(monkeypatch):
    import compress.engine.steps as steps

    seen = []
    original = steps.reconstruct

    def spy(*args, weights=None, **kwargs):
        seen.append(weights)
        return original(*args, weights=weights, **kwargs)

    monkeypatch.setattr(steps, "reconstruct", spy)
    model = tiny()
    outcome = prune_model(model, ids(), config("br+gp+cr", loss="fisher"))
    assert len(seen) == len(model.model.layers) + 1  # CR: the last block alone once more
    assert all(w is not None and len(w) == 2 for w in seen)
    for name, mask in outcome.masks.items():
        assert torch.equal(model.get_submodule(name).weight != 0, mask), name
    engine = Engine(tiny(), config("br+gp"))
    engine.run(ids())
    assert engine.sensitivities is None  # mse: nothing computed


def test_fisher_lowers_the_loss_weighted_error_it_trains_on():
    """Against MSE from the same start, the Fisher run ends with the lower Fisher-weighted
    calibration error on the last block (the objective it minimises)."""

    def weighted_error(loss: str) -> float:
        model = tiny()
        engine = Engine(model, config("br+gp", loss=loss, epochs=8))
        calib = ids()
        weights = output_sensitivities(model, model.model.layers, list(calib.split(4)), lambda t: t)
        engine.run(calib)
        with torch.no_grad():
            pruned = model(input_ids=calib, output_hidden_states=True).hidden_states
        dense = tiny()
        with torch.no_grad():
            reference = dense(input_ids=calib, output_hidden_states=True).hidden_states
        i = len(model.model.layers) - 2  # a block whose output hidden_states holds un-normed
        error = (pruned[i + 1] - reference[i + 1]).pow(2) * torch.cat(weights[i])
        return float(error.sum())

    assert weighted_error("fisher") < weighted_error("mse")


def test_unknown_loss_is_refused_in_one_line():
    with pytest.raises(BadInputError, match="--recon-loss 'l1'"):
        ReconstructConfig(loss="l1")
