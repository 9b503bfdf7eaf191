"""Progress, for people and for other processes.

``progress_bar`` is every bar the package draws: tqdm's live bar on a terminal or in Jupyter, and
on anything else (a log file, nohup, CI) a plain line every QUIET_INTERVAL_S seconds at most, with
rounded numbers and no carriage returns, so a long run's log stays readable (tqdm there would
write hundreds of ``\r`` updates per epoch). ``progress_write`` prints a line beside the bars.

``ProgressLog``: ``fit`` appends a JSON line every second or so to the file named by the
environment variable MURA_PROGRESS_FILE (set by `mura reproduce` for its notebook kernels), and
`mura reproduce` shows it as a live bar with elapsed and remaining time (``ProgressFollower``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from mura_utils.utils.formatting import format_clock

PROGRESS_FILE_VARIABLE = "MURA_PROGRESS_FILE"
QUIET_INTERVAL_S = 30.0  # off a terminal: at most one progress line this often (plus one at the end)


def live_bars() -> bool:
    """Whether bars can redraw in place: a Jupyter kernel (tqdm.auto's widget bars) or stderr,
    where tqdm draws, on a terminal."""
    from tqdm.auto import tqdm

    notebook = sys.modules.get("tqdm.notebook")  # imported by tqdm.auto only in a Jupyter kernel
    if notebook is not None and issubclass(tqdm, notebook.tqdm_notebook):
        return True
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def _postfix_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


class QuietBar:
    """tqdm's interface as the package uses it (iterate, ``update``, ``n``, ``set_postfix``,
    ``set_postfix_str``, ``refresh``, ``close``, ``with``), printing one plain line at most every
    ``interval`` seconds and, when ``leave``, a last one on closing (unless that one said it all)."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        leave: bool = True,
        disable: bool = False,
        initial: int = 0,
        file: IO[str] | None = None,
        interval: float = QUIET_INTERVAL_S,
    ):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit, self.leave = iterable, total, desc, unit, leave
        self.disable, self.n, self.initial, self.interval = disable, initial, initial, interval
        self.file = file if file is not None else sys.stderr
        self.postfix, self.closed, self.printed = "", False, None  # printed: n at the last line
        self.started = self.last_line = time.monotonic()

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> QuietBar:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        self.refresh()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **values: Any) -> None:
        values = {**(ordered_dict or {}), **values}
        self.set_postfix_str(", ".join(f"{key}={_postfix_value(value)}" for key, value in values.items()), refresh)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s
        if refresh:
            self.refresh()

    def refresh(self) -> None:
        """Print the current line if ``interval`` seconds have passed since the last one."""
        if time.monotonic() - self.last_line >= self.interval:
            self._print()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.leave and self.printed != self.n:
            self._print()

    def line(self) -> str:
        """``desc: n/total unit (pct%) in mm:ss, rate unit/s, ~mm:ss left, postfix``, numbers rounded."""
        elapsed = time.monotonic() - self.started
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts[0] += f" in {format_clock(elapsed)}"
        parts.append(f"{rate:.1f} {self.unit}/s")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"~{format_clock((self.total - self.n) / rate)} left")
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc}: {', '.join(parts)}" if self.desc else ", ".join(parts)

    def _print(self) -> None:
        self.last_line, self.printed = time.monotonic(), self.n
        if self.disable or self.file is None:
            return
        self.file.write(self.line() + "\n")
        self.file.flush()


def progress_bar(iterable: Iterable | None = None, **options: Any):
    """A progress bar over ``iterable`` (or updated by hand): tqdm.auto's live bar on a terminal or
    in Jupyter, a QuietBar otherwise. ``options``: total, desc, unit, leave, disable, initial."""
    if live_bars():
        from tqdm.auto import tqdm

        return tqdm(iterable, **options)
    return QuietBar(iterable, **options)


def progress_write(line: str) -> None:
    """Print ``line`` on stdout: through tqdm beside live bars (they are redrawn below it), else plainly, flushed."""
    if live_bars():
        from tqdm.auto import tqdm

        tqdm.write(line)
    else:
        print(line, flush=True)


class ProgressLog:
    """Appends {"run", "epoch", "epochs", "step", "steps"} lines, at most one per ``interval``
    seconds (plus one at each epoch's end); does nothing when the variable is unset."""

    def __init__(self, run: str, epochs: int, steps: int, enabled: bool = True, interval: float = 1.0):
        self.path = os.environ.get(PROGRESS_FILE_VARIABLE) if enabled else None
        self.run, self.epochs, self.steps, self.interval = run, epochs, steps, interval
        self.last = -float("inf")

    def update(self, epoch: int, step: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.path or (not force and now - self.last < self.interval):
            return
        self.last = now
        line = {"run": self.run, "epoch": epoch, "epochs": self.epochs, "step": step, "steps": self.steps}
        with open(self.path, "a") as handle:  # one short write per line: readers never see half a line
            handle.write(json.dumps(line) + "\n")


class ProgressFollower:
    """Reads the lines written since the last call (the parent's side of ProgressLog)."""

    def __init__(self, path: str | Path):
        self.path, self.offset = Path(path), 0

    def new_lines(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with open(self.path) as handle:
            handle.seek(self.offset)
            text = handle.read()
        complete = text[: text.rfind("\n") + 1]
        self.offset += len(complete.encode())
        return [json.loads(line) for line in complete.splitlines() if line.strip()]
