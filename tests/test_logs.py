"""Logs that fit in a file: off a terminal, training prints one rounded line per epoch, never tqdm's
carriage-return updates; bars are quiet lines at most every QUIET_INTERVAL_S seconds."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

from mura_utils.utils import progress
from mura_utils.utils.formatting import rounded
from mura_utils.utils.progress import QuietBar, progress_bar

UNROUNDED = re.compile(r"\d\.\d{5,}")  # e.g. 0.6541666666666667


def test_training_into_a_file_writes_one_rounded_line_per_epoch(tiny_mura, tmp_path):
    log = tmp_path / "train.log"
    arguments = ["train", "--data-root", str(tiny_mura), "--epochs", "2", "--img-size", "32", "--batch-size", "16"]
    arguments += ["--out", str(tmp_path / "run"), "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    with open(log, "w") as handle:  # bars and the per-epoch lines on (the defaults), as under nohup
        command = [sys.executable, "-m", "mura_utils.cli", *arguments]
        completed = subprocess.run(command, stdout=handle, stderr=handle, env={**os.environ, "OMP_NUM_THREADS": "1"})
    text = log.read_text()
    assert completed.returncode == 0, text[-3000:]
    assert "\r" not in text and not UNROUNDED.search(text), text
    cache, *epochs, summary = text.splitlines()  # the cache build's last line, one per epoch, fit's result
    assert re.match(r"caching images at 32px: (\d+)/\1 img \(100%\) in 00:\d\d, \d+\.\d img/s$", cache), cache
    assert [line.split(":")[0] for line in epochs] == ["custom_cnn epoch 1", "custom_cnn epoch 2"]
    assert all(re.search(r"val study AUROC (\d\.\d{3}|n/a), kappa -?\d\.\d{3}", line) for line in epochs), epochs
    assert summary.startswith("best epoch ")


def test_quiet_bar_prints_at_most_once_per_interval_and_once_on_closing(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    bar = QuietBar(range(100), desc="caching images", unit="img", file=out, interval=30)
    for _ in bar:  # one image a second: a line after every 30, and the last
        now[0] += 1
        bar.set_postfix(loss=0.123456, img_s="50", refresh=False)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in out.getvalue()
    assert lines[0] == "caching images: 30/100 img (30%) in 00:30, 1.0 img/s, ~01:10 left, loss=0.123, img_s=50"
    assert lines[-1] == "caching images: 100/100 img (100%) in 01:40, 1.0 img/s, loss=0.123, img_s=50"
    assert not UNROUNDED.search(out.getvalue())


def test_quiet_bar_that_does_not_leave_or_is_disabled_prints_nothing_quickly():
    out = io.StringIO()
    for options in ({"leave": False}, {"disable": True}):
        with QuietBar(total=5, file=out, **options) as bar:
            bar.update(5)
    assert list(QuietBar([1, 2], leave=False, file=out)) == [1, 2] and out.getvalue() == ""


def test_live_bars_only_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(progress_bar(range(3)), QuietBar)
    monkeypatch.setattr(sys, "stderr", Terminal())
    from tqdm.auto import tqdm

    bar = progress_bar(range(3), disable=True)
    assert isinstance(bar, tqdm) and list(bar) == [0, 1, 2]


def test_rounded_numbers_and_undefined_ones():
    assert rounded(0.6541666666666667) == "0.654" and rounded(2, 1) == "2.0"
    assert rounded(None) == rounded(float("nan")) == "n/a"
