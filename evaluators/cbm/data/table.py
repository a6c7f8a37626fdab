"""A concept-annotated table of the user's own: a CSV file with a header row.

Columns, by name:

- ``concepts``: each is either binary (every value 0/1, true/false or yes/no, any case), giving
  one concept, or categorical (any other values), expanded one-hot into one concept per value
  (``column=value``) forming one group, as Zoo's leg count is;
- ``label``: the class (any values; classes are its distinct values, sorted);
- ``features`` (optional): numeric input columns. Without them ``x`` is generated from the
  concepts as the synthetic loader does, ``x = W_x c + z``
  (:func:`~evaluators.cbm.data.base.embed_concepts`), seeded.

Rows are split 70/15/15, stratified by class and seeded. Every malformed column is a one-line
error naming it (and the first bad row). A missing value (an empty cell, or ``NaN``, ``NA``,
``N/A``, ``null`` and the like, as pandas and R write one) in any named column is refused with
the rows that hold one: never a category or a class of its own.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from compress.core.errors import BadInputError
from evaluators.cbm.data.base import ConceptDataset, embed_concepts, make_splits

TRUE, FALSE = {"1", "1.0", "true", "yes"}, {"0", "0.0", "false", "no"}
# cells that mean "no value" (lowercased): pandas' default NA strings, less "none" (a category)
MISSING = {"", "nan", "-nan", "na", "n/a", "#n/a", "#na", "<na>", "null"}
SHOWN_ROWS = 5


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV file; a ragged or empty file is an error."""
    if not path.is_file():
        raise BadInputError(f"table {path} does not exist: pass --data-path FILE.csv")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            lines = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BadInputError(f"table {path} is not a readable CSV file ({exc})") from exc
    if len(lines) < 2:
        raise BadInputError(f"table {path} needs a header row and at least one data row")
    header = [name.strip() for name in lines[0]]
    for number, row in enumerate(lines[1:], start=2):
        if len(row) != len(header):
            raise BadInputError(
                f"table {path} line {number} has {len(row)} fields, the header {len(header)}"
            )
    return header, [[cell.strip() for cell in row] for row in lines[1:]]


def check_columns(header: list[str], concepts: list[str], label: str, features: list[str]) -> None:
    """Every named column exists once, and no column plays two roles."""
    if not concepts:
        raise BadInputError("--concepts: name at least one concept column")
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise BadInputError(f"table header repeats columns {duplicated}: rename them")
    named = [*concepts, label, *features]
    missing = [name for name in named if name not in header]
    if missing:
        raise BadInputError(f"table has no columns {missing}: it has {header}")
    twice = sorted({name for name in named if named.count(name) > 1})
    if twice:
        raise BadInputError(
            f"columns {twice} are named twice among --concepts, --label and --features"
        )


def column(path: Path, header: list[str], rows: list[list[str]], name: str) -> list[str]:
    """One column's cells; missing values (:data:`MISSING`) are an error naming their lines."""
    index = header.index(name)
    cells = [row[index] for row in rows]
    missing = [(line, cell) for line, cell in enumerate(cells, start=2) if cell.lower() in MISSING]
    if missing:
        raise BadInputError(missing_values(path, name, missing))
    return cells


def missing_values(path: Path, name: str, missing: list[tuple[int, str]]) -> str:
    """The refusal of ``missing`` (line, cell) pairs: what they hold, how many, the first lines."""
    found = ", ".join(repr(cell) for cell in sorted({cell for _, cell in missing}))
    lines = ", ".join(str(line) for line, _ in missing[:SHOWN_ROWS])
    more = f" and {len(missing) - SHOWN_ROWS} more" if len(missing) > SHOWN_ROWS else ""
    plural = "s" if len(missing) > 1 else ""
    return (
        f"table {path} column {name!r} has missing values ({found}) on {len(missing)} "
        f"row{plural}: line{plural} {lines}{more}; fill those cells or drop those rows"
    )


def concept_columns(name: str, cells: list[str]) -> tuple[torch.Tensor, list[str]]:
    """(n, 1) for a binary column, (n, values) one-hot for a categorical one, and their names."""
    lowered = [cell.lower() for cell in cells]
    if set(lowered) <= TRUE | FALSE:
        return torch.tensor([[float(cell in TRUE)] for cell in lowered]), [name]
    values = sorted(set(cells))
    if len(values) < 2:
        raise BadInputError(f"concept column {name!r} has one value only: it carries nothing")
    index = torch.tensor([values.index(cell) for cell in cells])
    one_hot = torch.nn.functional.one_hot(index, len(values)).float()
    return one_hot, [f"{name}={value}" for value in values]


def feature_matrix(
    path: Path, header: list[str], rows: list[list[str]], names: list[str]
) -> torch.Tensor:
    """(n, len(names)) float inputs; a non-number is an error naming column and line."""
    out = []
    for name in names:
        values = []
        for number, cell in enumerate(column(path, header, rows, name), start=2):
            try:
                values.append(float(cell))
            except ValueError:
                raise BadInputError(
                    f"feature column {name!r} holds {cell[:30]!r} on line {number}: "
                    "features must be numbers"
                ) from None
        out.append(values)
    x = torch.tensor(out).T
    if not torch.isfinite(x).all():
        raise BadInputError(f"feature columns {names} hold inf or nan: give finite numbers")
    return x


def load_table(
    path: Path | None,
    seed: int = 0,
    concepts: list[str] | None = None,
    label: str | None = None,
    features: list[str] | None = None,
    input_dim: int = 16,
    wx_std: float = 1.0,
    z_std: float = 2.0,
) -> ConceptDataset:
    """Load a CSV table as a concept dataset (module docstring)."""
    if path is None or label is None or concepts is None:
        raise BadInputError(
            "--data table needs --data-path FILE.csv, --concepts COLS and --label COL"
        )
    path, features = Path(path), list(features or [])
    header, rows = read_csv(path)
    check_columns(header, list(concepts), label, features)
    parts, concept_names, groups = [], [], []
    for name in concepts:
        block, names = concept_columns(name, column(path, header, rows, name))
        groups.append(list(range(len(concept_names), len(concept_names) + len(names))))
        parts.append(block)
        concept_names += names
    c = torch.cat(parts, dim=1)
    labels = column(path, header, rows, label)
    class_names = sorted(set(labels))
    if len(class_names) < 2:
        raise BadInputError(f"label column {label!r} has one class only: need at least two")
    y = torch.tensor([class_names.index(v) for v in labels])
    generator = torch.Generator().manual_seed(seed)
    if features:
        x = feature_matrix(path, header, rows, features)
    else:
        x = embed_concepts(c, input_dim, wx_std, z_std, generator)
    train, val, test = make_splits(x, c, y, (0.7, 0.15, 0.15), generator)
    if len(train) == 0:
        raise BadInputError(f"table {path} has too few rows ({len(rows)}) to split 70/15/15")
    return ConceptDataset(
        name="table",
        train=train,
        val=val,
        test=test,
        concept_names=concept_names,
        class_names=class_names,
        groups=groups,
        group_names=list(concepts),
    )
