"""Watching training: one JSON line per step in metrics.jsonl, a loss-curve PNG, a live progress line.

The files are written by rank 0 only; the PNG is redrawn at each evaluation, atomically, so a
viewer never opens half a picture.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from lanterne.files import atomic_path, atomic_write_text

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"


class MetricsLog:
    """Appends one JSON object per line; on resume, forgets the lines after the resumed step."""

    def __init__(self, run_folder: Path, resume_step: int | None) -> None:
        self.path = Path(run_folder) / METRICS_FILE
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines() if _step_of(line) <= resume_step]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return math.inf  # a line cut by a kill: dropped


def plot_loss_curve(records: list[dict[str, Any]], path: Path, title: str) -> None:
    """Training loss per step and validation loss per evaluation, drawn to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train"]
    validation = [(r["step"], r["validation_loss"]) for r in records if r.get("kind") == "eval"]
    final = [r for r in records if r.get("kind") == "final"][-1:]
    figure, axes = plt.subplots(figsize=(8, 4.5))
    if train:
        axes.plot(*zip(*train), label="training loss", linewidth=0.8, alpha=0.7)
    if validation:
        axes.plot(*zip(*validation), label="validation loss (a few random batches)", marker="o")
    if final:
        axes.plot([final[0]["step"]], [final[0]["validation_loss"]], label=f"validation loss over {final[0]['tokens']:,} tokens",
                  linestyle="none", marker="*", markersize=12, color="black")
    axes.set(xlabel="step", ylabel="cross-entropy (nats / token)", title=title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)


class ProgressDisplay:
    """A live line (step, loss, tokens/s, MFU, ETA) in a terminal; plain lines every `log_interval` steps elsewhere."""

    def __init__(self, total_steps: int, start_step: int, log_interval: int, enabled: bool = True) -> None:
        self.total, self.log_interval, self.enabled = total_steps, max(1, log_interval), enabled
        self.live = enabled and sys.stderr.isatty()
        self.started = time.perf_counter()
        self.start_step = start_step
        self._progress = None
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("step"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                transient=False,
            )
            self._task = self._progress.add_task("train", total=total_steps, completed=start_step, status="")
            self._progress.start()

    def update(self, step: int, loss: float, tokens_per_second: float, mfu: float | None) -> None:
        if not self.enabled:
            return
        mfu_text = f", MFU {100 * mfu:.1f}%" if mfu is not None else ""
        status = f"loss {loss:.4f}, {tokens_per_second:,.0f} tok/s{mfu_text}"
        if self._progress is not None:
            self._progress.update(self._task, completed=step, status=status)
        elif step % self.log_interval == 0 or step == self.total:
            done = step - self.start_step
            elapsed = time.perf_counter() - self.started
            eta = elapsed / done * (self.total - step) if done else 0.0
            print(f"step {step}/{self.total}: {status}, ETA {eta:.0f} s", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
