"""Printing helpers for the CLI: human tables by default, JSON for scripts."""
from __future__ import annotations

import json

import click

__all__ = ["table", "emit_json"]


def table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))
