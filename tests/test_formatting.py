"""The one formatting module: how values look in JSON, tables and log lines."""

import json
import math
from pathlib import Path

import numpy as np

from mura_utils.utils.formatting import (
    float_or_nan,
    format_clock,
    format_duration,
    format_estimate,
    format_interval,
    format_number,
    format_parameters,
    json_default,
    markdown_table,
    plain_json,
)


def test_plain_json_is_strict_json():
    value = {"a": np.float32(0.5), "b": [np.int64(3), float("nan")], "c": (Path("x/y"), np.bool_(True))}
    plain = plain_json(value)
    assert plain == {"a": 0.5, "b": [3, None], "c": ["x/y", True]}
    json.dumps(plain, allow_nan=False)


def test_json_default_writes_numpy_scalars_as_numbers_and_the_rest_as_text():
    assert json.loads(json.dumps({"n": np.int64(2), "p": Path("a")}, default=json_default)) == {"n": 2, "p": "a"}


def test_durations():
    assert [format_duration(s) for s in (72, 557, 9000, float("nan"))] == ["72 s", "9.3 min", "2.5 h", "—"]
    assert [format_estimate(s) for s in (72, 557, 3900)] == ["72 s", "9 min", "1 h 05 min"]
    assert [format_clock(s) for s in (247, 3729)] == ["04:07", "1:02:09"]


def test_numbers_and_intervals():
    assert format_number(0.87149) == "0.871" and format_number(float("nan")) == "—" and format_number(None) == "—"
    assert format_number(12.6, 0) == "13" and format_parameters(7.0e6) == "7.0 M"
    assert math.isnan(float_or_nan(None)) and float_or_nan(np.float32(0.25)) == 0.25
    assert format_interval(0.1, 0.25) == "[0.100, 0.250]"
    assert format_interval(-0.01, 0.02, signed=True) == "[-0.010, +0.020]"


def test_markdown_table_escapes_cells():
    assert markdown_table(["a", "b"], [["x|y", "1"]], [False, True]) == "| a | b |\n|:---|---:|\n| x\\|y | 1 |\n"
