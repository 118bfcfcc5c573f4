"""Plain-text tables, the one formatter the CLI, ``compare``, the experiments and the benchmarks share."""

from __future__ import annotations

__all__ = ["format_table"]


def _cell(value, key, formats) -> str:
    if key in formats:
        return formats[key].format(value) if value is not None and value != "" else ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def format_table(rows, columns=None, formats=None, align="right") -> str:
    """Fixed-width text table of ``rows`` (a list of dicts) over ``columns`` (default: the keys of
    the first row, in order). ``formats`` maps a column to a format string (e.g. ``{"sigma":
    "{:.3f}"}``); other floats get 2 decimals. ``align``: ``"right"`` or ``"left"``."""
    if align not in ("right", "left"):
        raise ValueError(f"align must be 'right' or 'left', got {align!r}")
    rows = list(rows)
    columns = list(columns) if columns is not None else list(rows[0]) if rows else []
    formats = formats or {}
    body = [[_cell(r.get(c, ""), c, formats) for c in columns] for r in rows]
    widths = [max([len(str(c))] + [len(b[i]) for b in body]) for i, c in enumerate(columns)]
    pad = str.rjust if align == "right" else str.ljust
    line = lambda cells: "  ".join(pad(str(s), w) for s, w in zip(cells, widths)).rstrip()
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(b) for b in body])
