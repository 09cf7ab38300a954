"""The markdown table helper every report builds its tables with."""

import pytest

from seqpatch_core.base.tables import cell, markdown_table


@pytest.mark.parametrize(
    ("headers", "rows", "align", "expected"),
    [
        (["a", "b"], [], None, "| a | b |\n|---|---|"),
        (["a"], [[1]], None, "| a |\n|---|\n| 1 |"),
        (["method", "Dice"], [["seqpatch", "0.912"], ["unet", 0.5]], None,
         "| method | Dice |\n|---|---|\n| seqpatch | 0.912 |\n| unet | 0.5 |"),
        (["x", "y"], [["", None]], None, "| x | y |\n|---|---|\n|  | None |"),
        (["a|b", "c"], [["1 | 2", "3\n4"]], None, "| a\\|b | c |\n|---|---|\n| 1 \\| 2 | 3 4 |"),
        (["l", "r", "c", "n"], [[1, 2, 3, 4]], "lrc ", "| l | r | c | n |\n|:---|---:|:---:|---|\n| 1 | 2 | 3 | 4 |"),
        (["l", "r", "c", "n"], [], ["left", "right", "center", None], "| l | r | c | n |\n|:---|---:|:---:|---|"),
        (["a", "b"], iter([("x", 1)]), ["R", None], "| a | b |\n|---:|---|\n| x | 1 |"),
    ],
    ids=["empty", "one-row", "two-rows", "empty-cells", "pipes-escaped", "align-letters", "align-words", "generator"],
)  # fmt: skip
def test_markdown_table(headers, rows, align, expected):
    assert markdown_table(headers, rows, align) == expected


@pytest.mark.parametrize(
    ("headers", "rows", "align"),
    [
        ([], [], None),
        (["a", "b"], [[1]], None),
        (["a"], [[1, 2]], None),
        (["a", "b"], [], "l"),
        (["a"], [], ["x"]),
    ],
    ids=["no-columns", "short-row", "long-row", "align-count", "align-unknown"],
)
def test_markdown_table_rejects(headers, rows, align):
    with pytest.raises(ValueError):
        markdown_table(headers, rows, align)


@pytest.mark.parametrize(
    ("value", "text"), [("a|b", "a\\|b"), (1.5, "1.5"), ("l1\r\nl2", "l1 l2"), ("y \\ x", "y \\ x")]
)
def test_cell(value, text):
    assert cell(value) == text


def test_reports_keep_their_layout():
    """The package's tables: header, rule, one line per row, the same text as before the helper."""
    from seqpatch_core.evaluation.robustness import RobustnessMap, robustness_table

    res = RobustnessMap(offsets_mm=[-3.0, 0.0], point_yx=(1.0, 2.0), slice=4, reference="label", window="soft",
                        seconds={"seqpatch": 0.5}, outside=[[False, True]] * 2,
                        dice={"seqpatch": [[None, 0.5], [0.1, 0.2]]}, grids_mm={"seqpatch": [[None, 1.0], [1.0, 1.0]]})
    table = robustness_table(res).split("\n\n")[-1]
    assert table == "| y \\ x | -3 | +0 |\n|---|---|---|\n| -3 | n/a | 0.500 × |\n| +0 | 0.100 | 0.200 × |"
