"""Markdown tables: the one helper every report of the package builds its tables with.

``markdown_table(["method", "Dice"], [["seqpatch", "0.912"]])`` gives::

    | method | Dice |
    |---|---|
    | seqpatch | 0.912 |

Cells are written with ``str()``, so numbers are formatted by the caller (``f"{dice:.3f}"``); a
``|`` inside a cell is escaped (``\\|``) and a line break becomes a space, so no cell can split the
row. An empty cell is written as two spaces between its pipes (``|  |``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

ALIGN_RULES = {None: "---", "": "---", "l": ":---", "left": ":---", "r": "---:", "right": "---:",
               "c": ":---:", "center": ":---:", "centre": ":---:"}  # fmt: skip


def cell(value: object) -> str:
    """One cell's text: ``str(value)`` with pipes escaped and line breaks turned into spaces."""
    text = str(value).replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return text.replace("|", "\\|")


def _line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    align: str | Sequence[str | None] | None = None,
) -> str:
    """A GitHub-flavoured markdown table, lines joined by ``\\n`` (no trailing newline).

    ``align``: ``None`` (no alignment marks, ``---``), one letter per column as a string
    (``"lrc"``: left, right, centre; a space or ``-`` for none), or a sequence with one entry per
    column, each ``None``, ``"l"``/``"left"``, ``"r"``/``"right"`` or ``"c"``/``"center"``.
    Every row must have as many cells as there are headers (``ValueError`` otherwise).
    """
    headers = [cell(h) for h in headers]
    if not headers:
        raise ValueError("a table needs at least one column")
    if align is None:
        rules = ["---"] * len(headers)
    else:
        marks = [None if a in (" ", "-") else a for a in align] if isinstance(align, str) else list(align)
        if len(marks) != len(headers):
            raise ValueError(f"align has {len(marks)} entries for {len(headers)} columns")
        try:
            rules = [ALIGN_RULES[m if m is None else m.lower()] for m in marks]
        except KeyError as e:
            raise ValueError(f"unknown alignment {e.args[0]!r}; use l, r, c or None") from None
    lines = [_line(headers), "|" + "|".join(rules) + "|"]
    for i, row in enumerate(rows):
        cells = [cell(v) for v in row]
        if len(cells) != len(headers):
            raise ValueError(f"row {i} has {len(cells)} cells for {len(headers)} columns")
        lines.append(_line(cells))
    return "\n".join(lines)
