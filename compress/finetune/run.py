"""One fine-tuning run: folders, checkpoint for ``--resume``, the training loop, the output."""

from __future__ import annotations

import json
import math
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from compress.core.errors import BadInputError
from compress.core.io import atomic_file, check_target, publish, staging_folder
from compress.core.report import (
    RECIPE_NAME,
    REPORT_FORMAT,
    REPORT_NAME,
    FinetuneSection,
    finetune_section,
    move_source_evaluation,
    now_iso,
    update_report,
    write_json_atomic,
)
from compress.finetune.config import FinetuneConfig
from compress.finetune.data import heldout_windows, training_windows, window_order
from compress.finetune.training import (
    build_optimizer,
    count_zeros,
    heldout_loss,
    lr_lambda,
    resolve_autocast,
    sparsity_masks,
    train_step,
)

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "state.pt"
# fields that may change between a run and its --resume
RESUMABLE_CHANGES = ("resume", "overwrite", "eval_every", "save_every", "device")


def prepare_output(config: FinetuneConfig) -> Path:
    """Check the folders; return the staging folder the run writes into (see compress.core.io).

    The checkpoint lives in the staging folder, so it survives a crash for --resume; without
    --resume an old staging folder is cleared.
    """
    output, source = Path(config.output), Path(config.model)
    if not (source / "config.json").is_file():
        raise BadInputError(
            f"{source} is not a model folder (no config.json): point to a compress prune output"
        )
    if output.resolve() == source.resolve():
        raise BadInputError("--output must differ from the input folder; pick a new folder")
    check_target(output, config.overwrite)
    staging = staging_folder(output)
    if not config.resume:
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, config: FinetuneConfig) -> dict | None:
    """The saved state when resuming and one exists; refuses a run with other settings."""
    if not (config.resume and path.is_file()):
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    saved, now = state["config"], config.to_dict()
    changed = [k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]]
    if changed:
        name = changed[0]
        raise BadInputError(
            f"--resume: {name} was {saved.get(name)!r} in the checkpoint, now {now[name]!r}; "
            "use the original settings or start over with --overwrite"
        )
    return state


def save_output(
    model: nn.Module, tokenizer, config: FinetuneConfig, output: Path, section: FinetuneSection
) -> None:
    """Model (in the source folder's dtype), tokenizer, recipe and report with ``finetune``.

    The source report's ``evaluation`` measured the model before fine-tuning, so it moves into
    ``finetune.source_evaluation``; evaluators fill a fresh one for this model.
    """
    source = Path(config.model)
    saved_config = json.loads((source / "config.json").read_text())
    name = saved_config.get("dtype") or saved_config.get("torch_dtype")  # renamed in 4.56
    saved = getattr(torch, name, None) if isinstance(name, str) else None
    model.to(saved if isinstance(saved, torch.dtype) else torch.float32)
    model.save_pretrained(output, safe_serialization=True)
    tokenizer.save_pretrained(output)
    if (source / RECIPE_NAME).is_file():
        shutil.copyfile(source / RECIPE_NAME, output / RECIPE_NAME)
    if (source / REPORT_NAME).is_file():
        report = json.loads((source / REPORT_NAME).read_text())
    else:
        report = {"format": REPORT_FORMAT, "model": {"source": str(source)}, "created": now_iso()}
    section = move_source_evaluation(section, report)
    write_json_atomic(output / REPORT_NAME, report)
    update_report(output, "finetune", section)


def perplexity_entry(step: int, loss: float) -> dict:
    return {"step": step, "loss": loss, "perplexity": math.exp(loss)}


class FinetuneRun:
    """One fine-tuning run: model, data, optimizer and schedule, and what was measured."""

    def __init__(self, config: FinetuneConfig) -> None:
        from compress.model.loading import load_model

        self.config = config
        self.staging = prepare_output(config)
        loaded = load_model(config.model, device=config.device, dtype="float32")
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.device = next(self.model.parameters()).device
        self.masks = sparsity_masks(self.model)
        self.zeros_before = count_zeros(self.masks)
        self.train_ids, self.train_info = training_windows(self.tokenizer, config)
        self.eval_ids, self.eval_info = heldout_windows(self.tokenizer, config)
        self.per_step = config.batch * config.grad_accum
        self.order = window_order(len(self.train_ids), config.steps * self.per_step, config.seed)
        self.optimizer = build_optimizer(self.model, self.masks, config)
        base = self.optimizer.base_optimizer if config.uses_sam else self.optimizer
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(base, lr_lambda(config))
        self.dtype = resolve_autocast(config, self.device)
        self.checkpoint = self.staging / CHECKPOINT_DIR / CHECKPOINT_FILE
        self.history: dict = {"train": [], "heldout": []}
        self.step, self.train_seconds, self.resumed_from = 0, 0.0, None

    def autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def evaluate(self) -> float | None:
        """Held-out loss now, appended to the history (None when turned off)."""
        if self.eval_ids is None:
            return None
        loss = heldout_loss(self.model, self.eval_ids, self.config.batch, self.autocast)
        self.history["heldout"].append(perplexity_entry(self.step, loss))
        return loss

    def restore(self) -> None:
        """Continue from the checkpoint under --resume, else measure the starting point."""
        state = load_checkpoint(self.checkpoint, self.config)
        if state is None:
            self.evaluate()
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.history, self.step = state["history"], state["step"]
        self.train_seconds = state["train_seconds"]
        self.resumed_from = self.step

    def save_checkpoint(self) -> None:
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
            "train_seconds": self.train_seconds,
            "config": self.config.to_dict(),
        }
        save_checkpoint(self.checkpoint, state)

    def train_one(self) -> float:
        """One optimizer step on the next ``batch x grad_accum`` windows; returns seconds."""
        cfg = self.config
        chosen = self.order[self.step * self.per_step : (self.step + 1) * self.per_step]
        micro = [self.train_ids[i].to(self.device) for i in chosen.split(cfg.batch)]
        began = time.perf_counter()
        loss = train_step(self.model, self.optimizer, self.masks, micro, self.autocast)
        self.scheduler.step()
        seconds = time.perf_counter() - began
        self.train_seconds += seconds
        self.step += 1
        self.history["train"].append(
            {"step": self.step, "loss": loss, "lr": self.scheduler.get_last_lr()[0]}
        )
        return seconds

    def train(self, progress: bool = True) -> None:
        """Steps until ``config.steps``, with held-out loss and checkpoints on their schedules."""
        from tqdm.auto import tqdm

        cfg = self.config
        self.model.train()
        with tqdm(
            total=cfg.steps, initial=self.step, disable=not progress, desc="finetune", unit="step"
        ) as bar:
            while self.step < cfg.steps:
                seconds = self.train_one()
                loss = self.history["train"][-1]["loss"]
                tok_s = self.per_step * cfg.seqlen / seconds
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tok_s:.0f}")
                bar.update()
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    held = self.evaluate()
                    if held is not None:
                        bar.write(
                            f"step {self.step}: held-out loss {held:.4f}, "
                            f"perplexity {math.exp(held):.2f}"
                        )
                if self.step % cfg.save_every == 0 and self.step < cfg.steps:
                    self.save_checkpoint()
        self.model.eval()

    def section(self) -> FinetuneSection:
        """The report's ``finetune`` section; checks that no pruned weight came back."""
        zeros_after = count_zeros(self.masks)
        if zeros_after != self.zeros_before:
            raise RuntimeError(
                f"fine-tuning changed the pruned zeros: {self.zeros_before} -> {zeros_after}"
            )
        return finetune_section(
            config=self.config.to_dict(),
            tokens=self.config.steps * self.per_step * self.config.seqlen,
            train_data=self.train_info,
            heldout_data=self.eval_info,
            heldout=self.history["heldout"],
            masked_parameters=len(self.masks),
            zeros_before=self.zeros_before,
            zeros_after=zeros_after,
            train_seconds=self.train_seconds,
            device=str(self.device),
            autocast=str(self.dtype).removeprefix("torch.") if self.dtype else None,
            resumed_from_step=self.resumed_from,
            history=self.history,
        )


def finetune(config: FinetuneConfig, progress: bool = True) -> FinetuneSection:
    """Fine-tune ``config.model`` into ``config.output``; returns the report's ``finetune`` section.

    Raises:
        BadInputError: bad folder, data too short, output not empty, or --resume with changed
            settings.
    """
    run = FinetuneRun(config)
    run.restore()
    run.train(progress)
    section = run.section()
    save_output(run.model, run.tokenizer, config, run.staging, section)
    shutil.rmtree(run.staging / CHECKPOINT_DIR, ignore_errors=True)
    publish(run.staging, Path(config.output))
    return section
