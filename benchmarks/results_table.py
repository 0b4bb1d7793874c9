"""Shared by the benchmarks: result rows (dicts with the same keys) as a Markdown table."""

from __future__ import annotations

import math


def markdown_table(rows: list[dict], number: str = "{:,.2f}") -> list[str]:
    """The table's lines: a header of the keys, a row per dict; floats through ``number``,
    NaN (a ratio that does not apply) as –."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [
            ("–" if math.isnan(v) else number.format(v)) if isinstance(v, float) else str(v)
            for v in row.values()
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
