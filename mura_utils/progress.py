"""Training progress that another process can follow: ``fit`` appends a JSON line every second or
so to the file named by the environment variable MURA_PROGRESS_FILE (set by `mura reproduce` for
its notebook kernels), and `mura reproduce` shows it as a live bar with elapsed and remaining time."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

PROGRESS_FILE_VARIABLE = "MURA_PROGRESS_FILE"


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
