"""How long a prune takes, planned before it starts: arithmetic only (no torch).

One forward of block 0, timed on this machine at the run's shapes (:mod:`.probe`), gives the
machine's throughput in flops per second for a decoder block. Everything the run does is then
counted in the same currency and divided by it:

* block forwards: a forward of one block on ``n`` sequences of ``T`` tokens costs
  ``n T (2 P + 4 T h)`` flops (``P`` weights of its linear layers, two flops each per token;
  ``4 T h`` per token for the attention scores and their weighted sum, ``h`` the hidden width);
  how many forwards each block makes is counted from the engine (:func:`block_forwards`,
  :func:`training_forwards`): it depends on the reconstruction technique, the measured errors,
  early stopping, ``--one-pass`` and the non-uniform profiles' first pass;
* a training step: forward and backward, three forwards' worth (two with SAM's second one: six);
* the pruner's own work: its statistics, timed per calibration sequence (:mod:`.probe`) and
  given here as forward-equivalent flops per token, and its decision, which each pruner states
  per distinct layer input in forward-equivalent flops (``Pruner.work``);
* the non-uniform profiles' first pass: per block one forward with the statistics, then per
  candidate sparsity (``errors``) the pruner's decision and one forward more;
* evaluation (``--eval``): the model's forward, twice (before and after), head included;
* the time already spent (loading the model and the calibration text, measured), and saving,
  taken to take as long as that loading (the same bytes, written instead of read).

What it leaves out: the optimizer's own step (small next to a forward and backward of a batch
of a few thousand tokens), checkpoints, and the difference between blocks (every block is
taken to be block 0's shape).

:func:`fitting_settings` then looks for the calibration that fits an hour, fewer samples first
(down to :data:`MIN_NSAMPLES`), then shorter windows (down to :data:`MIN_SEQLEN`).
"""

from __future__ import annotations

from dataclasses import dataclass

from compress.core.config import PruneConfig, ReconOptimizer, SparsityProfile

HOUR = 3600.0
TRAIN_STEP_FORWARDS = 3.0  # a backward costs about two forwards
MIN_NSAMPLES = 16  # a suggestion keeps at least this many sequences ...
MIN_SEQLEN = 256  # ... of at least this many tokens before it gives up


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of the model: its blocks and the pruner's work per block."""

    blocks: int
    linear_weights: int  # weights of one block's linear layers
    hidden: int
    head_weights: int  # the LM head's weights (evaluation only)
    pruner_fixed: float  # the pruner's decision per block, forward-equivalent flops
    pruner_per_token: float  # its statistics per calibration token, the same
    pruner_needs_data: bool = True  # False: no statistics forward (magnitude)

    def flops_per_token(self, seqlen: int) -> float:
        """One block's forward flops per token at ``seqlen`` tokens a sequence."""
        return 2.0 * self.linear_weights + 4.0 * seqlen * self.hidden


def throughput(shape: ModelShape, seconds: float, rows: int, seqlen: int) -> float:
    """Flops per second from one block's timed forward on ``rows`` x ``seqlen`` tokens."""
    return rows * seqlen * shape.flops_per_token(seqlen) / max(seconds, 1e-9)


def block_forwards(
    config: PruneConfig, blocks: int, one_pass: bool, statistics: bool = True
) -> tuple[int, int]:
    """Forwards of one block over the whole calibration set, and over the held-out set, summed
    over the blocks (the engine's steps 1, 2, 5 and the errors measured before training;
    :mod:`compress.engine.steps`); ``statistics``: whether the pruner sees data (one forward
    more per block)."""
    if one_pass:  # statistics, prune and propagate in one forward
        return blocks, blocks
    recon = config.reconstruct
    technique = recon.technique
    per_block = int(technique.global_targets or recon.errors)  # the dense block's output
    per_block += int(technique.trains and not technique.global_targets)  # local targets
    per_block += int(recon.errors) + 1  # the pruned block before training, then propagation
    crossing = technique.cross_block and technique.trains
    extra = 0
    if technique.cross_block:
        extra += blocks - 1  # propagating the window's first block
        if crossing and not technique.global_targets:
            extra += blocks - 1  # the cross-block targets
        if technique.trains:
            extra += 1  # the last block trained alone, then propagated again
    calibration = blocks * (per_block + int(statistics)) + extra
    return calibration, blocks * per_block + extra


def training_forwards(config: PruneConfig, blocks: int, nsamples: int) -> tuple[float, float]:
    """Block forwards' worth of training, in sequences (each a forward of one block on one
    calibration sequence), and early stopping's held-out forwards, in whole held-out sets; both
    summed over the windows (with ``cr``: two blocks each after the first, and the last block
    once more alone)."""
    recon = config.reconstruct
    if not recon.technique.trains:
        return 0.0, 0.0
    window_blocks = blocks
    if recon.technique.cross_block:
        window_blocks = 1 + 2 * (blocks - 1) + 1
    batches = -(-nsamples // config.calibration.batch_size)
    if recon.steps:
        sequences = recon.steps * min(config.calibration.batch_size, nsamples)
        epochs = -(-recon.steps // batches)
    else:
        sequences, epochs = recon.epochs * nsamples, recon.epochs
    per_step = TRAIN_STEP_FORWARDS * (2 if recon.optimizer is ReconOptimizer.sam else 1)
    held_out = (epochs + 1) * window_blocks if recon.early_stop else 0
    return window_blocks * sequences * per_step, float(held_out)


@dataclass(frozen=True)
class RunFacts:
    """What the app knows of this run before pruning starts, besides its config."""

    flops_per_second: float  # from the timed forward (:func:`throughput`)
    elapsed: float  # seconds spent loading so far (saving is taken to take as long)
    one_pass: bool  # whether --one-pass applies to this run
    holdout_nsamples: int  # held-out sequences (0: none)
    eval_windows: int | None  # windows --eval scores (None: no --eval, or all of its text)
    profile_candidates: int  # sparsities the errors profile's first pass tries per block


@dataclass(frozen=True)
class Estimate:
    """The run's estimated seconds: the whole process from loading, and its pruning part."""

    seconds: float
    prune_seconds: float


def estimate(
    config: PruneConfig, shape: ModelShape, facts: RunFacts, nsamples: int, seqlen: int
) -> Estimate:
    """The run as ``config`` sets it up, but with ``nsamples`` x ``seqlen`` calibration tokens."""
    fps, blocks = facts.flops_per_second, shape.blocks

    def block_seconds(sequences: float, length: int) -> float:
        return sequences * length * shape.flops_per_token(length) / fps

    calibration, held_out = block_forwards(config, blocks, facts.one_pass, shape.pruner_needs_data)
    trained, early_stop = training_forwards(config, blocks, nsamples)
    tokens = nsamples * seqlen
    prune = block_seconds(calibration * nsamples + trained, seqlen)
    prune += block_seconds((held_out + early_stop) * facts.holdout_nsamples, seqlen)
    prune += blocks * (shape.pruner_fixed + shape.pruner_per_token * tokens) / fps
    if config.sparsity_profile is not SparsityProfile.uniform:  # the first pass
        tried = facts.profile_candidates
        prune += block_seconds(blocks * (1 + tried) * nsamples, seqlen)
        prune += blocks * (shape.pruner_per_token * tokens + tried * shape.pruner_fixed) / fps
    evaluation = 0.0
    if config.evaluation.enabled and facts.eval_windows:
        length = config.evaluation.seqlen or seqlen
        per_token = blocks * shape.flops_per_token(length) + 2.0 * shape.head_weights
        evaluation = 2 * facts.eval_windows * length * per_token / fps
    return Estimate(2 * facts.elapsed + evaluation + prune, prune)


@dataclass(frozen=True)
class Suggestion:
    """Calibration settings and their estimate; ``fits`` is False when even the smallest
    settings tried take over an hour."""

    nsamples: int
    seqlen: int
    seconds: float
    fits: bool


def fitting_settings(
    config: PruneConfig, shape: ModelShape, facts: RunFacts, limit: float = HOUR
) -> Suggestion | None:
    """The largest calibration under ``limit`` seconds, or None when the run as configured
    already is: ``--nsamples`` halved first, down to :data:`MIN_NSAMPLES` (more samples help
    less than the length of each beyond a few dozen), then ``--seqlen`` halved, down to
    :data:`MIN_SEQLEN`; when nothing tried fits, the smallest of them."""
    calib = config.calibration
    nsamples, seqlen = calib.nsamples, calib.seqlen
    seconds = estimate(config, shape, facts, nsamples, seqlen).seconds
    if seconds <= limit:
        return None
    suggestion, tried = Suggestion(nsamples, seqlen, seconds, False), []
    while nsamples > MIN_NSAMPLES:
        nsamples = max(nsamples // 2, MIN_NSAMPLES)
        tried.append((nsamples, seqlen))
    while seqlen > MIN_SEQLEN:
        seqlen = max(seqlen // 2, MIN_SEQLEN)
        tried.append((nsamples, seqlen))
    for n, t in tried:
        seconds = estimate(config, shape, facts, n, t).seconds
        suggestion = Suggestion(n, t, seconds, seconds <= limit)
        if suggestion.fits:
            break
    return suggestion


def duration(seconds: float) -> str:
    """``3 h 40 min``, ``50 min``, ``40 s``: minutes from a minute on, seconds below."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def estimate_line(total: Estimate, blocks: int, forward: str, suggestion: Suggestion | None) -> str:
    """The line the prune prints before its long work; ``forward`` describes the timed one."""
    line = f"estimate: about {duration(total.seconds)} for {blocks} blocks ({forward})"
    if suggestion is None:
        return line
    flags = f"--nsamples {suggestion.nsamples} --seqlen {suggestion.seqlen}"
    if suggestion.fits:
        return f"{line}; {flags} would take about {duration(suggestion.seconds)}"
    return f"{line}; even {flags} would take about {duration(suggestion.seconds)}"
