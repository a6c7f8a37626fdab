"""The shape every concept dataset takes: inputs ``x``, binary concepts ``c``, labels ``y``.

Symbols follow the CBM papers: ``x`` (N, d) inputs, ``c`` (N, k) binary concepts, ``y`` (N,)
class indices. Concept groups partition the k concepts (a singleton group per concept when the
data has no grouping).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from compress.core.errors import BadInputError


@dataclass
class ConceptSplit:
    """One split: ``x`` float (N, d), ``c`` float 0/1 (N, k), ``y`` long (N,).

    ``c`` is what ``g`` is trained on. Where it is a denoised version of the annotation (CUB's
    class-majority labels), ``c_instance`` keeps each sample's own labels (what an expert
    reveals at instance level) and ``certainty`` (N, k) the annotator's certainty
    (CUB: 1 not visible, 2 guessing, 3 probably, 4 definitely).
    """

    x: torch.Tensor
    c: torch.Tensor
    y: torch.Tensor
    c_instance: torch.Tensor | None = None
    certainty: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.y.shape[0]

    @property
    def own_c(self) -> torch.Tensor:
        """Each sample's own concept labels."""
        return self.c if self.c_instance is None else self.c_instance

    def subset(self, index: torch.Tensor) -> ConceptSplit:
        extras = [None if t is None else t[index] for t in (self.c_instance, self.certainty)]
        return ConceptSplit(self.x[index], self.c[index], self.y[index], *extras)


@dataclass
class ConceptDataset:
    """Train/validation/test splits with the names and groups of concepts and classes."""

    name: str
    train: ConceptSplit
    val: ConceptSplit
    test: ConceptSplit
    concept_names: list[str]
    class_names: list[str]
    groups: list[list[int]] = field(default_factory=list)
    group_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.groups:
            self.groups = [[i] for i in range(self.n_concepts)]
            self.group_names = list(self.concept_names)
        members = sorted(i for group in self.groups for i in group)
        assert members == list(range(self.n_concepts)), "groups must partition the concepts"

    @property
    def n_concepts(self) -> int:
        return len(self.concept_names)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_dim(self) -> int:
        return self.train.x.shape[1]

    def split(self, name: str) -> ConceptSplit:
        if name not in ("train", "val", "test"):
            raise BadInputError(f"split {name!r} is unknown: use train, val or test")
        return getattr(self, name)


def split_indices(
    n: int,
    fractions: tuple[float, float, float],
    generator: torch.Generator,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A seeded permutation of ``range(n)`` cut into train/val/test by ``fractions``.

    With ``labels`` the cut is stratified: every class is cut by the same fractions.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise BadInputError(
            f"split fractions {fractions} must be three non-negative numbers summing to 1"
        )
    strata = (
        [torch.arange(n)]
        if labels is None
        else [(labels == v).nonzero().flatten() for v in labels.unique()]
    )
    parts: tuple[list[torch.Tensor], ...] = ([], [], [])
    for members in strata:
        order = members[torch.randperm(len(members), generator=generator)]
        n_train = int(round(fractions[0] * len(order)))
        n_val = int(round(fractions[1] * len(order)))
        pieces = (order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])
        for part, piece in zip(parts, pieces, strict=True):
            part.append(piece)
    train, val, test = (torch.cat(part) for part in parts)
    return train, val, test


def embed_concepts(
    c: torch.Tensor, input_dim: int, wx_std: float, z_std: float, generator: torch.Generator
) -> torch.Tensor:
    """Inputs ``x = W_x c + z`` with ``W_x ~ N(0, wx_std²)`` and ``z ~ N(0, z_std²)``.

    The synthetic generator's input model; the tabular datasets (led7digit, Zoo) carry only the
    concepts and the label, so they use it too to give the concept predictor a noisy input.
    """
    w_x = torch.randn(input_dim, c.shape[1], generator=generator) * wx_std
    z = torch.randn(c.shape[0], input_dim, generator=generator) * z_std
    return c @ w_x.T + z


def make_splits(
    x: torch.Tensor,
    c: torch.Tensor,
    y: torch.Tensor,
    fractions: tuple[float, float, float],
    generator: torch.Generator,
) -> tuple[ConceptSplit, ConceptSplit, ConceptSplit]:
    """Cut full tensors into three class-stratified splits with :func:`split_indices`."""
    whole = ConceptSplit(x.float(), c.float(), y.long())
    train, val, test = split_indices(len(whole), fractions, generator, whole.y)
    return whole.subset(train), whole.subset(val), whole.subset(test)


def class_majority(c: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(n_classes, k) majority vote of each concept within each class (a tie counts as 1).

    Koh et al. denoise CUB's attributes this way; class-level intervention values use it too.
    A class without samples gets all zeros.
    """
    counts = torch.zeros(n_classes, c.shape[1]).index_add_(0, y, c.float())
    sizes = torch.bincount(y, minlength=n_classes).unsqueeze(1)
    return ((2 * counts >= sizes) & (sizes > 0)).float()
