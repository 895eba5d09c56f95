"""The progress line of `ferry tasks watch`: redrawn in place on a terminal, one line per
change otherwise (so a log file or a pipe gets a readable history, not carriage returns)."""

from __future__ import annotations

import shutil
from typing import TextIO

from shared.contracts import TaskStatus, TaskView

BAR_WIDTH = 30


def render(task: TaskView, width: int = BAR_WIDTH) -> str:
    done, end = task.progress_value, task.end_value
    if end > 0:
        fraction = min(done / end, 1.0)
        filled = round(fraction * width)
        bar = "#" * filled + "-" * (width - filled)
        amount = f"{fraction:4.0%} {done}/{end}"
    else:  # no total known yet: a count without a bar that pretends to know
        bar = "." * width
        amount = f"   ? {done}"
    items = (
        f" items {task.items_succeeded} ok/{task.items_failed} failed" if task.items_total else ""
    )
    message = f" {task.progress_message}" if task.progress_message else ""
    remark = f" ({status_note(task)})" if status_note(task) else ""
    return f"[{bar}] {amount} {task.status.value}{remark}{items}{message}"


def status_note(task: TaskView) -> str | None:
    """What the status alone does not say: a cancel the worker has not confirmed yet, or
    why a QUEUED task has not started."""
    if task.cancelling and not task.status.is_terminal:
        return "cancelling: requested, not confirmed by the worker yet"
    if task.status is TaskStatus.QUEUED and task.waiting_reason:
        return f"waiting: {task.waiting_reason}"
    return None


class ProgressDisplay:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._last = ""

    def show(self, task: TaskView) -> None:
        line = render(task)
        if line == self._last:
            return
        if self.tty:
            # A line longer than the terminal wraps, and "\r" would then redraw only its tail.
            line = line[: shutil.get_terminal_size().columns - 1]
            self.stream.write("\r" + line.ljust(len(self._last)))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._last = line

    def finish(self) -> None:
        if self.tty and self._last:
            self.stream.write("\n")
            self.stream.flush()
