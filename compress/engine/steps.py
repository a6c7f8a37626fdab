"""The sequential engine: prune and reconstruct one decoder block (or window of two) at a time.

Per block ``i``, in this order:
  1. targets: run the still-dense block on the dense stream (GP: the dense model's own
     activations) or on the sparse stream (BR: the dense block on the sparse inputs);
  2. statistics: run block ``i`` on the sparse stream with a pre-hook on every prunable layer
     feeding its pruner (stopping each batch once the last layer has seen its input);
  3. prune: each pruner returns a keep-mask (SparseGPT also updates the weights: LR);
  4. reconstruct (BR variants): train the window — block ``i``, or blocks ``i-1, i`` for CR —
     against the targets, masks held exact; then, with ``--quantize``, round each block that
     no later window trains to the grid (:mod:`.quantize_step`; SparseGPT under LR rounds in
     step 3 instead);
  5. propagate the sparse stream (and the held-out streams) through the updated window;
  6. measure the normalized error against the dense model before and after step 4;
  7. checkpoint the changed blocks, the streams and the outcome so far (``--resume``).

With ``--one-pass`` (no reconstruction, no errors measured) steps 2, 3 and 5 are one forward of
block ``i`` over the whole calibration set as one batch (:mod:`.one_pass`).

The engine reaches models only through :class:`~compress.model.blocks.BlockAdapter`, pruners only
through :class:`~compress.algorithms.pruners.base.Pruner`, training only through
:func:`~compress.algorithms.reconstruct.reconstruct`, the activations only through its
:class:`~compress.engine.activations.ActivationStore` and checkpoints only through a
:class:`~compress.engine.workfolder.WorkFolder`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from compress.algorithms import distributed
from compress.algorithms.finite import check_finite_stream, check_finite_weights
from compress.algorithms.masks import zero_count
from compress.algorithms.pruners import Pruner
from compress.algorithms.pruners.sparsegpt import SparseGPTPruner
from compress.algorithms.quant.grid import check_grid
from compress.algorithms.reconstruct import Batches, normalized_error, reconstruct
from compress.algorithms.sparsity_profile import allocate_by_errors, candidates, carried, owl_plan
from compress.core.config import PruneConfig, SparsityProfile, Technique
from compress.core.dtypes import torch_dtype
from compress.core.errors import BadInputError
from compress.core.report import (
    BlockEntry,
    LayerCounts,
    block_entry,
    block_errors,
    block_sparsity,
    layer_counts,
    layer_entry,
)
from compress.engine.activations import ActivationStore, Stream, Streams
from compress.engine.one_pass import hooked_forward, one_pass_applies
from compress.engine.profile_pass import first_pass
from compress.engine.quantize_step import (
    gptq_group,
    grid_of,
    joint,
    pruner_of,
    quantize_block,
    quantizes_only,
    round_layer,
    rounds_in_prune_step,
    sibling_pruners,
)
from compress.engine.statistics import collect_statistics
from compress.engine.workfolder import WorkFolder
from compress.model.blocks import BlockAdapter, BlockCall, weight_view
from compress.model.moe import unfused_experts
from compress.model.placement import (
    execution_device,
    holds_offloaded,
    measure_peak,
    onloaded,
    release_free_memory,
)

ProgressFn = Callable[[int, int, float], None]


@dataclass
class PruneOutcome:
    """Masks and per-layer / per-block measurements for report.json."""

    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    layers: dict[str, dict] = field(default_factory=dict)
    scales: dict[str, torch.Tensor] = field(default_factory=dict)  # quantized layers' float16
    blocks: list[dict] = field(default_factory=list)
    seconds: float = 0.0


@torch.no_grad()
def stream_error(outputs: Stream, targets: Stream | None) -> float | None:
    """The paper's normalized error ``sum ||out - y||² / sum ||y||²`` (None without targets)."""
    if targets is None:
        return None
    device = outputs[0].device
    return normalized_error(
        lambda b, out: out, Batches(outputs), Batches(targets), device, torch.float32
    )


def zeros_entry(weight: torch.Tensor) -> LayerCounts:
    """The ``sparsity`` and ``zeros`` entries of a layer in report.json."""
    return layer_counts(zero_count(weight), weight.numel())


def check_layers(adapter: BlockAdapter, config: PruneConfig) -> None:
    """Fail before any work if an N:M pattern does not tile some layer's input width, or a
    layer's unstructured target rounds to all of its weights (``round(s * numel)`` of them are
    dropped: 0.999999 empties a 576 x 576 layer while 1.0 is refused), or a quantization
    group size does not divide it."""
    grid = grid_of(config)
    for index in range(len(adapter)):
        for name, module in adapter.prunable_layers(index, config.skip).items():
            weight = weight_view(module)
            config.parsed_pattern.check_width(weight.shape[1], name)
            if grid is not None:
                check_grid(grid, weight.shape[1], name)
            target, size = config.sparsity_for(name), weight.numel()
            if not config.parsed_pattern.structured and round(target * size) >= size:
                raise BadInputError(
                    f"sparsity {target} prunes all {size:,} weights of {name}; choose one below "
                    f"{1 - 0.5 / size:.9f} to keep any"
                )


SCALES_KEY = "quantization-scales:"  # a checkpointed block's scales, beside its weights
DAMAGED_CHECKPOINT = "the checkpoint is damaged: repair it or download it again"


class Engine:
    """Runs the per-block steps listed in the module docstring over a whole model."""

    def __init__(
        self,
        model: nn.Module,
        config: PruneConfig,
        work: WorkFolder | None = None,
        stats_samples: int | None = None,
        accelerator: torch.device | None = None,
        keep_masks: bool = True,
    ) -> None:
        """``keep_masks=False``: ``outcome.masks`` drops a block's masks once no later window
        trains it (1 byte a pruned weight otherwise held to the end; the CLI saves weights only).
        ``stats_samples``: only the first this many calibration sequences feed the pruners'
        statistics (real text first, self-generated after it); all of them reconstruct.
        ``accelerator``: where blocks whose weights wait on CPU or disk run their turn
        (sequential onloading); default: where the embeddings are. ``work``: where to
        checkpoint (one process only, see :meth:`WorkFolder.checkpoints`)."""
        self.model = model
        self.config = config
        self.stats_samples = stats_samples
        self.recon = config.reconstruct
        self.technique = config.reconstruct.technique
        self.adapter = BlockAdapter(model)
        self.adapter.check_prunable()
        self.work = work if work is not None and work.checkpoints() else None
        self.device = model.get_input_embeddings().weight.device
        self.dtype = next(model.parameters()).dtype
        self.accelerator = accelerator or self.device
        self.keep_masks = keep_masks
        self.grid = grid_of(config)
        self.joint = joint(config)  # SparseGPT rounds as it prunes (step 3)
        self.quantizes_only = quantizes_only(config)  # step 3 is GPTQ with the zeros kept
        self.rounds_in_step3 = rounds_in_prune_step(config)
        self.activations = ActivationStore(
            self.recon.activations_device,
            torch_dtype(self.recon.activations_dtype, self.dtype),
            self.dtype,
            self.device,
            self.accelerator,
        )
        self.outcome = PruneOutcome()
        with unfused_experts(self.adapter.blocks):
            check_layers(self.adapter, config)
            self.block_sizes = [  # pruned weights per block: what the profile's mean weighs
                sum(
                    weight_view(m).numel()
                    for m in self.adapter.prunable_layers(i, config.skip).values()
                )
                for i in range(len(self.adapter))
            ]
        self.ratios: list[float] = []  # non-uniform profiles: the first pass
        self.curves: list[list[tuple[float, float]]] = []  # errors profile: the first pass
        self.plan: list[float] = []  # non-uniform profiles: each block's share
        self.one_pass = False  # decided by run() (--one-pass where it applies)

    # -- running blocks on streams -------------------------------------------------------
    @torch.no_grad()
    def forward(self, window: list[int], stream: Stream, calls: list[list[BlockCall]]) -> Stream:
        return [self._run(window, calls, b, x) for b, x in enumerate(stream)]

    def _run(
        self, window: list[int], calls: list[list[BlockCall]], b: int, x: torch.Tensor
    ) -> torch.Tensor:
        keep = self.activations.keep
        if not len(x):  # this rank's slice of batch b is empty (data-parallel)
            return keep(x)
        return keep(self._run_blocks(window, calls, b, self.activations.onload(x)))

    # -- the steps -------------------------------------------------------------------------
    def _targets(self, i: int, s: Streams) -> None:
        """Step 1, with block ``i`` still dense."""
        window = [i]
        s.dense_out = self.forward(window, s.dense, s.calls) if s.dense is not None else None
        if self.technique.trains and not self.technique.global_targets:
            s.local = self.forward(window, s.sparse, s.calls)
            s.cross = (
                self.forward(window, s.prev_local, s.calls) if s.prev_local is not None else None
            )

    def _collect(
        self,
        i: int,
        leaders: dict[str, Pruner],
        layers: dict[str, nn.Module],
        stream: Stream,
        calls: list[list[BlockCall]],
        keep_outputs: bool = False,
    ) -> Stream | None:
        """Step 2 on block ``i`` fed ``stream`` (statistics from the first ``stats_samples``
        sequences only, when set), summed over data-parallel ranks; with ``keep_outputs``, the
        block's outputs too (:func:`collect_statistics`)."""
        outputs = collect_statistics(
            lambda b, x: self._run([i], calls, b, x),
            stream,
            leaders,
            layers,
            self.config.calibration.batch_size,
            self.stats_samples,
            keep_outputs,
        )
        for pruner in leaders.values():
            for total in pruner.statistics():
                total.all_reduce_()
        return outputs

    def _sparsities(self, i: int, names: list[str]) -> dict[str, float]:
        """Each layer's target in block ``i``: the config's, or the block's planned share
        with the earlier blocks' rounding carried (``outcome.layers``, restored on
        ``--resume``)."""
        if self.config.sparsity_profile is SparsityProfile.uniform:
            return {name: self.config.sparsity_for(name) for name in names}
        zeros = sum(layer["zeros"] for layer in self.outcome.layers.values())
        return dict.fromkeys(names, carried(self.plan[: i + 1], self.block_sizes, zeros))

    def _pruners(self, groups: list[list[str]], layers: dict[str, nn.Module]) -> dict[str, Pruner]:
        """Step 3's pruners, siblings sharing statistics (:func:`sibling_pruners`)."""
        return sibling_pruners(*pruner_of(self.config), groups, layers)

    def _dense_copies(self, layers: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
        """``none`` keeps the masks only: the dense weights to put back under them (nothing to put
        back where nothing is pruned: ``--method none``)."""
        if self.technique is not Technique.none or self.config.method.value == "none":
            return {}
        return {name: weight_view(m).detach().clone() for name, m in layers.items()}

    def _prune_group(
        self,
        group: list[str],
        pruners: dict[str, Pruner],
        layers: dict[str, nn.Module],
        targets: dict[str, float],
        dense: dict[str, torch.Tensor],
    ) -> None:
        """Step 3 for one group of siblings: their masks, their weights, their entries in
        ``outcome``."""
        members = [pruners[name] for name in group]
        sparsities = [targets[name] for name in group]
        pattern = self.config.parsed_pattern
        # errors of the rounding alone (None: rounded in SparseGPT's loop as it pruned)
        errors: list[float | None] = [None] * len(group)
        if self.joint:
            results = SparseGPTPruner.prune_group(members, sparsities, pattern, self.grid)
        elif self.quantizes_only:
            keeps = [member.weight != 0 for member in members]
            results, errors = gptq_group(members, keeps, self.grid)
        else:
            results = type(members[0]).prune_group(members, sparsities, pattern)
        for name, result, error in zip(group, results, errors):
            weight = weight_view(layers[name])
            if name in dense:  # "none": keep the mask, undo the pruner's weight update
                with torch.no_grad():
                    weight.copy_(dense[name] * result.mask)
            if self.rounds_in_step3 and result.scales is None:  # to nearest, mask kept
                rounded = round_layer(weight, self.grid, result.mask)
                result.scales, error = rounded.scales, rounded.error
            self.outcome.masks[name] = result.mask.cpu()  # off the accelerator: 1 byte/weight
            self.outcome.layers[name] = layer_entry(
                weight.shape, targets[name], zero_count(weight), result.seconds
            )
            if result.scales is not None:
                self.outcome.scales[name] = result.scales.cpu()
                self.outcome.layers[name]["quant_error"] = error

    def _prune(self, i: int, s: Streams) -> None:
        """Steps 2-3 for block ``i``."""
        layers = self.adapter.prunable_layers(i, self.config.skip)
        pruner_cls, _ = pruner_of(self.config)
        dense = self._dense_copies(layers)
        groups = self.adapter.sibling_groups(i, layers)
        pruners = self._pruners(groups, layers)
        leaders = {group[0]: pruners[group[0]] for group in groups}
        if pruner_cls.needs_data and pruners:
            self._collect(i, leaders, layers, s.sparse, s.calls)
        targets = self._sparsities(i, list(layers))
        for group in groups:
            self._prune_group(group, pruners, layers, targets, dense)
            pruners[group[0]].free()
        self._report_in_block_order(layers)

    def _prune_in_one_pass(self, i: int, s: Streams) -> Stream:
        """Steps 2, 3 and 5 for block ``i`` in one forward (``--one-pass``, :mod:`.one_pass`):
        the pruned stream leaving the block."""
        layers = self.adapter.prunable_layers(i, self.config.skip)
        dense = self._dense_copies(layers)
        groups = self.adapter.sibling_groups(i, layers)
        pruners = self._pruners(groups, layers)
        targets = self._sparsities(i, list(layers))

        def prune_group(group: list[str]) -> None:
            self._prune_group(group, pruners, layers, targets, dense)
            pruners[group[0]].free()

        assert len(s.sparse) == 1, "one pass runs the calibration set as one batch"
        out = hooked_forward(
            lambda: self.forward([i], s.sparse, s.calls), groups, pruners, layers, prune_group
        )
        self._report_in_block_order(layers)
        return out

    def _report_in_block_order(self, layers: dict[str, nn.Module]) -> None:
        """``outcome.layers`` in the block's layer order, not the order the groups ran in."""
        for name in layers:
            self.outcome.layers[name] = self.outcome.layers.pop(name)

    def _measure(self, window: list[int]) -> None:
        """Count the zeros of the window's pruned layers again after reconstruction: these are
        the weights saved (a CR window re-measures the block it trains a second time)."""
        for j in window:
            for name, module in self.adapter.prunable_layers(j, self.config.skip).items():
                self.outcome.layers[name].update(zeros_entry(weight_view(module)))

    def _quantize(self, j: int, stream: Stream, calls: list[list[BlockCall]]) -> None:
        """Step 4's rounding of block ``j`` (no later window trains it), fed ``stream``, its
        inputs now: scales and errors into ``outcome``, zeros counted again (a kept weight may
        round to 0)."""
        layers = self.adapter.prunable_layers(j, self.config.skip)
        keeps = {
            name: self.outcome.masks[name] if name in self.outcome.masks else weight_view(m) != 0
            for name, m in layers.items()
        }
        quantized = quantize_block(
            layers,
            self.adapter.sibling_groups(j, layers),
            keeps,
            self.grid,
            self.config.quantize.quantizer,
            self.config.pruner.sparsegpt,
            lambda leaders: self._collect(j, leaders, layers, stream, calls),
        )
        for name, q in quantized.items():
            self.outcome.scales[name] = q.scales
            self.outcome.layers[name]["quant_error"] = q.error
        self._measure([j])

    def _quantize_finished(self, i: int, window: list[int], sets: dict[str, Streams]) -> None:
        """Round the blocks step ``i`` finishes training (with CR, block ``i`` is trained again
        in the next window; the last one is rounded after its final window, in :meth:`step`)."""
        if self.grid is None or self.rounds_in_step3:
            return
        calib = sets["calibration"]
        if len(window) == 2:
            self._quantize(window[0], calib.prev_sparse, calib.calls)
        elif not self.technique.cross_block or i == len(self.adapter) - 1:
            self._quantize(i, calib.sparse, calib.calls)

    def _forget_masks(self, j: int) -> None:
        prefix = self.adapter.block_name(j) + "."
        for name in [name for name in self.outcome.masks if name.startswith(prefix)]:
            del self.outcome.masks[name]

    def _param_masks(self, window: list[int]) -> dict[nn.Parameter, torch.Tensor]:
        masks = {}
        for i in window:
            for name, module in self.adapter.prunable_layers(i, self.config.skip).items():
                mask = self.outcome.masks[name].to(module.weight.device)
                masks[module.weight] = mask if isinstance(module, nn.Linear) else mask.t()
        return masks

    def _train(self, i: int, window: list[int], sets: dict[str, Streams]) -> dict:
        """Step 4 on ``window`` (ending at block ``i``)."""
        cr = len(window) == 2

        def inputs_targets(s: Streams) -> tuple[Stream, Stream]:
            x = s.prev_sparse if cr else s.sparse
            if self.technique.global_targets:
                return x, s.dense_out
            return x, (s.cross if cr else s.local)

        blocks = [self.adapter.blocks[j] for j in window]
        for block in blocks:
            block.float()
        params = [p for block in blocks for p in block.parameters()]
        calib, holdout = sets["calibration"], sets.get("holdout")
        x, y = inputs_targets(calib)
        watch = None
        if holdout is not None:
            hx, hy = inputs_targets(holdout)
            watch = (
                lambda b, xb: self._run_blocks(window, holdout.calls, b, xb),
                Batches(hx),
                Batches(hy),
            )
        generator = torch.Generator().manual_seed(
            self.config.calibration.seed * 100_003 + i * 2 + int(cr)
        )
        result = reconstruct(  # data-parallel: sums gradients over ranks
            params,
            self._param_masks(window),
            lambda b, xb: self._run_blocks(window, calib.calls, b, xb),
            Batches(x),
            Batches(y),
            self.recon,
            generator,
            holdout=watch,
            autocast_dtype=self.dtype if self.dtype != torch.float32 else None,
        )
        for block in blocks:
            block.to(self.dtype)
        return {"window": window, **result}

    def _run_blocks(
        self, window: list[int], calls: list[list[BlockCall]], b: int, x: torch.Tensor
    ) -> torch.Tensor:
        for index in window:
            x = self.adapter.run_block(index, x, calls[b][index])
        return x

    def _propagate(self, window: list[int], s: Streams) -> tuple[Stream, Stream]:
        """Step 5: (input of the window's last block, output of the window), updated weights."""
        x = s.sparse
        if len(window) == 2:
            x = self.forward(window[:1], s.prev_sparse, s.calls)
        return x, self.forward(window[-1:], x, s.calls)

    def _advance(self, s: Streams, last_input: Stream, output: Stream) -> None:
        """The streams entering the next block."""
        s.prev_sparse = last_input if self.technique.cross_block else None
        s.prev_local = s.local if self.technique.cross_block else None
        s.sparse, s.dense = output, s.dense_out
        s.dense_out = s.local = s.cross = None

    def _stream_errors(self, outputs: dict[str, Stream], sets: dict[str, Streams]) -> dict:
        return {name: stream_error(outputs[name], s.dense_out) for name, s in sets.items()}

    def step(self, i: int, sets: dict[str, Streams]) -> BlockEntry:
        """Steps 1-6 for block ``i`` on the calibration (and held-out) streams; the entry's
        peak accelerator memory is filled in by :meth:`run`, which measures around the step."""
        start = time.perf_counter()
        for s in sets.values():
            self._targets(i, s)
        if self.one_pass:
            calib = sets["calibration"]
            ends = {"calibration": (calib.sparse, self._prune_in_one_pass(i, calib))}
            for name, s in sets.items():
                if name != "calibration":
                    ends[name] = self._propagate([i], s)
            for name, s in sets.items():
                self._advance(s, *ends[name])
            return self._entry(i, start, None, [])
        self._prune(i, sets["calibration"])
        window = self.window(i)
        if self.recon.errors:
            pruned = {name: self.forward([i], s.sparse, s.calls) for name, s in sets.items()}
            before = self._stream_errors(pruned, sets)
        trained = []
        if self.technique.trains:
            trained.append(self._train(i, window, sets))
        self._quantize_finished(i, window, sets)
        ends = {name: self._propagate(window, s) for name, s in sets.items()}
        if self.technique.trains and len(window) == 2 and i == len(self.adapter) - 1:
            for name, s in sets.items():  # the paper's last window: the final block alone
                s.sparse, s.prev_sparse = ends[name][0], None
            trained.append(self._train(i, [i], sets))
            if self.grid is not None:
                self._quantize(i, sets["calibration"].sparse, sets["calibration"].calls)
            ends = {name: self._propagate([i], s) for name, s in sets.items()}
        errors = None
        if self.recon.errors:
            after = self._stream_errors({name: end[1] for name, end in ends.items()}, sets)
            errors = block_errors(before, after)
        if trained:
            self._measure(window)
        for name, s in sets.items():
            self._advance(s, *ends[name])
        return self._entry(i, start, errors, trained)

    def _entry(self, i: int, start: float, errors: dict | None, trained: list) -> BlockEntry:
        """Block ``i``'s entry in report.json (its step began at ``start``)."""
        seconds = round(time.perf_counter() - start, 3)
        names = self.adapter.prunable_layers(i, self.config.skip)
        layers = [self.outcome.layers[name] for name in names]
        sparsity = block_sparsity(
            self.config.sparsity_profile.value,
            layers,
            self.ratios[i] if self.config.sparsity_profile is SparsityProfile.owl else None,
            self.plan[i] if self.plan else None,
            self.curves[i] if self.curves else None,
        )
        passes = 1 if self.one_pass else 2
        return block_entry(i, seconds, None, errors, trained or None, sparsity, passes)

    def window(self, i: int) -> list[int]:
        """The blocks step ``i`` trains or runs: ``[i]``, or ``[i - 1, i]`` with CR."""
        return [i - 1, i] if self.technique.cross_block and i > 0 else [i]

    # -- the whole model -------------------------------------------------------------------
    def _plan(self, calib_ids: torch.Tensor) -> None:
        """Non-uniform profiles: the first pass, then each block's share (deterministic, so
        ``--resume`` simply plans again)."""
        config, sizes = self.config, self.block_sizes
        t, lam = config.sparsity, config.owl_lambda
        errors = config.sparsity_profile is SparsityProfile.errors
        tried = candidates(t, lam) if errors else []
        self.ratios, curves = first_pass(self, calib_ids, tried, config.owl_m)
        if errors:
            self.curves, self.plan = curves, allocate_by_errors(curves, sizes, t)
        else:
            self.plan = owl_plan(self.ratios, sizes, t, lam)

    def _streams(self, ids: torch.Tensor) -> Streams:
        need_dense = self.technique.global_targets or self.recon.errors
        batch_size = len(ids) if self.one_pass else self.config.calibration.batch_size
        return self.activations.capture(self.adapter, ids, batch_size, need_dense)

    def _check_finite_block(self, i: int) -> None:
        """Block ``i``'s weights (onloaded) hold no NaN or Inf: one would spoil its statistics
        and, through its outputs, every block after it."""
        prefix = self.adapter.block_name(i)
        named = ((f"{prefix}.{n}", p) for n, p in self.adapter.blocks[i].named_parameters())
        check_finite_weights(named, DAMAGED_CHECKPOINT)

    def _check_finite_outside_blocks(self) -> None:
        """The embeddings, final norm and head hold no NaN or Inf."""
        prefix = self.adapter.blocks_path + "."
        named = self.model.named_parameters()
        check_finite_weights(
            ((n, p) for n, p in named if not n.startswith(prefix)), DAMAGED_CHECKPOINT
        )

    def _checkpoint_due(self, i: int, offloaded: bool) -> bool:
        """After step ``i``: the interval has passed, the window's weights live in an offload
        store (a later step may not read them back as they are now), or it is the last step."""
        elapsed = time.perf_counter() - self._saved_at
        last = i == len(self.adapter) - 1
        return offloaded or last or elapsed >= self.config.checkpoint_every

    def _checkpoint(self, i: int, sets: dict[str, Streams], recipe: dict) -> None:
        """The state after step ``i``, with every block changed since the last checkpoint."""
        blocks = {j: self._block_state(j) for j in sorted(self._unsaved)}
        prefix = self.adapter.block_name(i) + "."  # masks a later CR window still trains
        live = {name: mask for name, mask in self.outcome.masks.items() if name.startswith(prefix)}
        outcome = {"layers": self.outcome.layers, "blocks": self.outcome.blocks}
        streams = self.activations.state(sets)
        self.work.save_step(i, blocks, streams, live, outcome, recipe)
        self._unsaved.clear()
        self._saved_at = time.perf_counter()

    def _block_state(self, j: int) -> dict[str, torch.Tensor]:
        """Block ``j``'s weights for a checkpoint, with its layers' quantization scales."""
        state = dict(self.adapter.blocks[j].state_dict())
        prefix = self.adapter.block_name(j) + "."
        for name, scales in self.outcome.scales.items():
            if name.startswith(prefix):
                state[SCALES_KEY + name] = scales
        return state

    def _restore(self, recipe: dict, sets: dict[str, Streams]) -> int:
        loaded = self.work.load_step(recipe)
        if loaded is None:
            return 0
        state, blocks, streams, masks = loaded
        for index, block_state in blocks.items():
            for key in [key for key in block_state if key.startswith(SCALES_KEY)]:
                self.outcome.scales[key.removeprefix(SCALES_KEY)] = block_state.pop(key)
            self.adapter.blocks[index].load_state_dict(block_state)
        self.activations.restore(sets, streams)
        self.outcome.masks.update({k: v.to(self.device) for k, v in masks.items()})
        self.outcome.layers = state["outcome"]["layers"]
        self.outcome.blocks = state["outcome"]["blocks"]
        return state["next_block"]

    def run(
        self,
        calib_ids: torch.Tensor,
        holdout_ids: torch.Tensor | None = None,
        recipe: dict | None = None,
        resume: bool = False,
        on_block: ProgressFn | None = None,
    ) -> PruneOutcome:
        """Prune (and reconstruct) every block; checkpoint when a work folder is set, every
        ``config.checkpoint_every`` seconds (see :meth:`_checkpoint_due`).

        ``holdout_ids`` (optional) get their own streams: held-out errors and early stopping.
        ``recipe`` identifies the run in checkpoints; ``resume`` continues from the last one.
        Fused MoE experts are one Linear per expert projection while their block is onloaded
        and stepped (:mod:`compress.model.moe`; layer names and masks use those names), fused again
        before the checkpoint.
        """
        start = time.perf_counter()
        hidden = self.model.get_input_embeddings().embedding_dim
        tokens = calib_ids.numel() + (0 if holdout_ids is None else holdout_ids.numel())
        streams = 3 if self.technique.trains else 2  # sparse, dense, and targets or CR inputs
        self.activations.place(tokens, hidden, streams)
        self.one_pass = one_pass_applies(
            self.config, self.stats_samples, self.model.config, *calib_ids.shape, self.accelerator
        )
        self._check_finite_outside_blocks()
        if self.config.sparsity_profile is not SparsityProfile.uniform:
            self._plan(calib_ids)
        sets = {"calibration": self._streams(calib_ids)}
        if holdout_ids is not None:
            sets["holdout"] = self._streams(holdout_ids)
        recipe = recipe or {}
        first = self._restore(recipe, sets) if resume and self.work else 0
        total = len(self.adapter)
        if on_block:
            on_block(first, total, 0.0)
        self._unsaved: set[int] = set()
        self._saved_at = time.perf_counter()
        for i in range(first, total):
            block_start = time.perf_counter()
            blocks = [self.adapter.blocks[j] for j in self.window(i)]
            device = execution_device(blocks[-1], self.accelerator)
            offloaded = holds_offloaded(blocks)
            with onloaded(blocks, device):
                self._check_finite_block(i)
                with unfused_experts(blocks), measure_peak(device) as peak:
                    entry = self.step(i, sets)
                check_finite_stream(sets["calibration"].sparse, i)
                entry["peak_accelerator_bytes"] = peak.bytes
                self.outcome.blocks.append(entry)
                # keep ranks bit-identical where kernels are not deterministic
                distributed.broadcast_([t for b in blocks for t in b.state_dict().values()])
                if self.work is not None:
                    self._unsaved.update(self.window(i))
                    if self._checkpoint_due(i, offloaded):
                        self._checkpoint(i, sets, recipe)
            if not self.keep_masks and i > 0:  # the next window is [i + 1] or [i, i + 1]
                self._forget_masks(i - 1)
            release_free_memory()  # the block's freed working set, before the next block's
            if on_block:
                on_block(i + 1, total, calib_ids.numel() / (time.perf_counter() - block_start))
        self.outcome.seconds = time.perf_counter() - start
        return self.outcome


def prune_model(
    model: nn.Module,
    calibration_ids: torch.Tensor,
    config: PruneConfig,
    on_block: ProgressFn | None = None,
    holdout_ids: torch.Tensor | None = None,
) -> PruneOutcome:
    """Prune every decoder block of ``model`` in place, without checkpoints (see :class:`Engine`).

    Args:
        model: a supported causal LM (see :data:`compress.model.blocks.BLOCK_PATHS`).
        calibration_ids: token ids ``(N, T)``.
        config: method, sparsity, pattern, skips, overrides and reconstruction.
        on_block: called as ``on_block(done, total, tokens_per_second)`` before the first
            block (done = blocks already finished) and after each block.
        holdout_ids: held-out token ids ``(N', T)`` for held-out errors and early stopping.
    """
    return Engine(model, config).run(calibration_ids, holdout_ids, on_block=on_block)
