"""How numbers, intervals, durations and NumPy values are written: in JSON files, markdown tables
and log lines. One home, so every report, summary and log line shows a value the same way."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MISSING = "—"  # a table cell with no value (undefined metric, not recorded)


# ----------------------------------------------------------------------------- JSON


def plain_json(value: Any) -> Any:
    """``value`` with plain JSON values only, recursively: NumPy scalars as Python numbers, paths as
    strings, NaN and infinities as null (strict JSON has no NaN); tuples become lists."""
    if isinstance(value, dict):
        return {key: plain_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_default(value: Any) -> Any:
    """``json.dumps(..., default=json_default)``: a NumPy scalar as its Python number, anything
    else the encoder does not know (a path, a dtype) as its text."""
    return value.item() if isinstance(value, np.generic) else str(value)


# ----------------------------------------------------------------------------- numbers


def is_missing(value: Any) -> bool:
    """None or NaN (a metric undefined on one class, a setting not recorded)."""
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def float_or_nan(value: Any) -> float:
    """``value`` as a float, None as NaN (a JSON null read back)."""
    return float("nan") if value is None else float(value)


def rounded(value: float | None, digits: int = 3) -> str:
    """A number for a log line: ``digits`` decimals; "n/a" when undefined (None or NaN, e.g. AUROC with one class)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def format_number(value: Any, digits: int = 3) -> str:
    """A table cell: ``digits`` decimals, "—" when undefined."""
    return MISSING if is_missing(value) else f"{value:.{digits}f}"


def format_parameters(value: Any) -> str:
    """A parameter count in millions ("7.0 M"), "—" when not recorded."""
    return MISSING if is_missing(value) else f"{value / 1e6:.1f} M"


def format_interval(low: float, high: float, digits: int = 3, signed: bool = False) -> str:
    """A confidence interval as "[low, high]"; ``signed`` writes a + on positive bounds (differences)."""
    sign = "+" if signed else ""
    return f"[{low:{sign}.{digits}f}, {high:{sign}.{digits}f}]"


# ----------------------------------------------------------------------------- durations


def format_duration(seconds: Any) -> str:
    """A measured duration for a table: "72 s", "9.3 min", "2.5 h"; "—" when not recorded."""
    if is_missing(seconds):
        return MISSING
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_estimate(seconds: float) -> str:
    """A rough duration (an estimate): "72 s", "9 min", "1 h 05 min"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{max(minutes, 1)} min"


def format_clock(seconds: float) -> str:
    """Elapsed or remaining time on a progress line: "04:07", "1:02:09"."""
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


# ----------------------------------------------------------------------------- markdown


def markdown_cell(text: Any) -> str:
    """``text`` safe inside one markdown table cell (no column bar, no line break)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> str:
    """A GitHub markdown table by hand (pandas' to_markdown needs the optional tabulate package)."""
    right = right or [False] * len(header)
    lines = [
        "| " + " | ".join(markdown_cell(h) for h in header) + " |",
        "|" + "|".join("---:" if r else ":---" for r in right) + "|",
    ]
    lines += ["| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
