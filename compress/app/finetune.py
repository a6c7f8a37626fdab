"""``compress finetune`` as a workflow: fine-tune a pruned folder, sparsity kept exactly."""

from __future__ import annotations

from dataclasses import dataclass

from compress.core.shared_options import progress_option
from compress.finetune.config import FinetuneConfig


@dataclass(kw_only=True)
class FinetuneRequest:
    config: FinetuneConfig
    progress: bool = progress_option()


def run_finetune(request: FinetuneRequest) -> dict:
    """Fine-tune as configured; return the report's ``finetune`` section."""
    from compress.finetune import finetune

    return finetune(request.config, progress=request.progress)
