"""``--data table``: a concept-annotated CSV of the user's own, and every malformed column."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from compress.cli.main import app
from compress.core.errors import BadInputError
from evaluators.cbm.data.table import load_table

runner = CliRunner()
COLOURS = ["red", "blue", "green"]


def write_table(path, rows: int = 60) -> None:
    """60 animals: binary ``wings`` (yes/no), ``fur`` (0/1), categorical ``colour`` (3 values),
    numeric ``weight`` and ``size``, a ``kind`` label that follows wings and fur."""
    lines = ["id,wings,fur,colour,weight,size,kind"]
    for i in range(rows):
        wings, fur = i % 2, (i // 2) % 2
        kind = ["fish", "bird", "mammal", "bat"][wings + 2 * fur]
        lines.append(
            f"{i},{'yes' if wings else 'no'},{fur},{COLOURS[i % 3]},{i / 10},{i % 7},{kind}"
        )
    path.write_text("\n".join(lines) + "\n")


def test_binary_and_one_hot_concepts_with_features(tmp_path):
    csv = tmp_path / "animals.csv"
    write_table(csv)
    data = load_table(csv, 0, ["wings", "fur", "colour"], "kind", ["weight", "size"])
    assert data.concept_names == ["wings", "fur", "colour=blue", "colour=green", "colour=red"]
    assert data.groups == [[0], [1], [2, 3, 4]] and data.group_names == ["wings", "fur", "colour"]
    assert data.class_names == ["bat", "bird", "fish", "mammal"] and data.input_dim == 2
    c = torch.cat([data.train.c, data.val.c, data.test.c])
    assert (c[:, 2:].sum(dim=1) == 1).all()  # one colour per row
    assert len(data.train) + len(data.val) + len(data.test) == 60
    x, y = torch.cat([data.train.x, data.val.x]), torch.cat([data.train.y, data.val.y])
    assert set(x[:, 1].tolist()) <= set(range(7))  # the size column itself
    assert (x.shape[0], y.max().item()) == (len(data.train) + len(data.val), 3)


def test_without_features_inputs_are_generated_from_the_concepts(tmp_path):
    csv = tmp_path / "animals.csv"
    write_table(csv)
    data = load_table(csv, 0, ["wings", "fur"], "kind", input_dim=8)
    again = load_table(csv, 0, ["wings", "fur"], "kind", input_dim=8)
    assert data.input_dim == 8 and torch.equal(data.train.x, again.train.x)  # seeded


def test_cli_trains_and_intervenes_on_a_table(tmp_path):
    csv, out = tmp_path / "animals.csv", tmp_path / "model"
    write_table(csv, rows=120)
    result = runner.invoke(app, [
        "cbm", "train", "-o", str(out), "--data", "table", "--data-path", str(csv),
        "--concepts", "wings,fur,colour", "--label", "kind", "--features", "weight,size",
        "--epochs", "5", "--concept-hidden", "8",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    options = json.loads((out / "cbm.json").read_text())["data"]["options"]
    assert options == {"concepts": ["wings", "fur", "colour"], "label": "kind",
                       "features": ["weight", "size"]}  # fmt: skip
    result = runner.invoke(
        app, ["cbm", "intervene", str(out), "--level", "group", "--max-interventions", "2"]
    )
    assert result.exit_code == 0, result.output


GOOD = ["--concepts", "wings,fur", "--label", "kind"]


def refused_training(csv, out, args: list[str]) -> str:
    """``cbm train`` on the table ``csv`` exits 2 with one ``error:`` line (returned) and writes
    no model to ``out``."""
    result = runner.invoke(
        app, ["cbm", "train", "-o", str(out), "--data", "table", "--data-path", str(csv), *args,
              "--epochs", "1"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert not out.exists()
    return lines[0]


@pytest.mark.parametrize(
    "edit, args, message",
    [
        (None, ["--concepts", "wings,horns", "--label", "kind"], "no columns ['horns']"),
        (None, ["--concepts", "wings", "--label", "species"], "no columns ['species']"),
        (None, [*GOOD, "--features", "colour"], "feature column 'colour' holds 'red'"),
        (None, ["--concepts", "wings,kind", "--label", "kind"], "named twice"),
        (None, ["--label", "kind"], "--concepts"),
        (None, ["--concepts", "", "--label", "kind"], "at least one concept"),
        (("1,yes,", "1,,"), GOOD, "column 'wings' has missing values ('') on 1 row: line 3"),
        (("1,yes,", "1,yes,1,"), GOOD, "line 3 has 8 fields"),
        (("id,wings", "id,id"), GOOD, "repeats columns ['id']"),
        ("constant", ["--concepts", "colour", "--label", "kind"], "one value only"),
        ("one class", GOOD, "one class only"),
        ("header only", GOOD, "at least one data row"),
        ("missing", GOOD, "does not exist"),
    ],
)
def test_malformed_tables_are_one_error_line(tmp_path, edit, args, message):
    csv, out = tmp_path / "animals.csv", tmp_path / "model"
    write_table(csv)
    text = csv.read_text()
    if edit == "constant":
        text = text.replace("blue", "red").replace("green", "red")
    elif edit == "one class":
        head, *body = text.splitlines()
        text = "\n".join([head, *(line.rsplit(",", 1)[0] + ",bird" for line in body)])
    elif edit == "header only":
        text = text.splitlines()[0] + "\n"
    elif isinstance(edit, tuple):
        text = text.replace(*edit, 1)
    csv.write_text(text)
    if edit == "missing":
        csv.unlink()
    assert message in refused_training(csv, out, args)


def blank_out(path, column: str, rows: list[int], marks: list[str]) -> None:
    """Replace ``column``'s cell on data rows ``rows`` (0-based) by ``marks`` in turn."""
    head, *body = path.read_text().splitlines()
    index = head.split(",").index(column)
    for row, mark in zip(rows, marks * len(rows), strict=False):
        cells = body[row].split(",")
        cells[index] = mark
        body[row] = ",".join(cells)
    path.write_text("\n".join([head, *body]) + "\n")


def test_missing_concept_values_are_refused_not_made_categories(tmp_path):
    csv = tmp_path / "animals.csv"
    write_table(csv)
    blank_out(csv, "fur", [1, 4, 6, 9, 12, 20, 30], ["NaN", "nan", "NA"])
    with pytest.raises(BadInputError) as refused:
        load_table(csv, 0, ["wings", "fur"], "kind")
    message = str(refused.value)
    assert f"table {csv} column 'fur' has missing values ('NA', 'NaN', 'nan')" in message
    assert "on 7 rows: lines 3, 6, 8, 11, 14 and 2 more" in message
    assert "fill those cells or drop those rows" in message


@pytest.mark.parametrize("column, args", [("wings", GOOD), ("kind", GOOD)])
def test_cli_refuses_a_table_with_nan_concepts_or_labels(tmp_path, column, args):
    csv, out = tmp_path / "animals.csv", tmp_path / "model"
    write_table(csv)
    blank_out(csv, column, [0, 5], ["NaN", "nan"])
    line = refused_training(csv, out, args)
    assert f"column '{column}' has missing values ('NaN', 'nan') on 2 rows: lines 2, 7" in line
    assert "fill those cells or drop those rows" in line


def test_table_flags_need_table_data(tmp_path):
    result = runner.invoke(
        app, ["cbm", "train", "-o", str(tmp_path / "m"), "--concepts", "a", "--label", "b"]
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --concepts, --label apply to --data table only"
