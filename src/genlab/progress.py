"""Live progress of training runs: the `Progress` a run reports (`train.fit`'s `progress`
function) and `LiveBoard`, the lab's display of one line per entry.

In a terminal the board is redrawn in place with two ANSI sequences (cursor up N lines, clear to
the end of the screen), and other messages scroll above it; elsewhere (a log file, a pipe, CI)
it prints plain lines: an entry's progress at most every `every_s` seconds and at each epoch's end.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from typing import Callable, TextIO

SHOWN_LOSSES = 3  # training figures on a progress line (a GAN logs more than fit on it)
REDRAW_S = 0.1  # the least time between two in-place redraws: events come every SYNC_EVERY steps from every worker


@dataclass(frozen=True)
class Progress:
    """Where a training run is, as `fit` reports it at each host sync and each epoch's end."""

    name: str  # the model's registry name
    step: int  # optimizer steps done
    total: int  # the budget in steps (train.total_steps)
    epoch: int  # the epoch under way, or just ended when `test` is set (1-based)
    epochs: int  # epochs the budget spans (the last may be partial)
    losses: dict[str, float]  # the epoch's means of the logged training values so far
    test: dict[str, float] | None  # the ended epoch's test figures; None mid-epoch
    elapsed_s: float  # wall time of this training call so far, evaluations included
    steps_done: int  # steps this call has trained: the rate behind `remaining_s`

    @property
    def remaining_s(self) -> float | None:
        if self.steps_done == 0:
            return None
        return self.elapsed_s / self.steps_done * (self.total - self.step)


def duration(seconds: float | None) -> str:
    """A short human duration: 42s, 3m05s, 1h02m; '?' when unknown."""
    if seconds is None:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress_line(entry: str, p: Progress) -> str:
    """e.g. `vae: step 1200/4935 (epoch 9/35)  loss 41.2  kl 3.1  test loss 40.8  1m02s, ~3m30s left`."""
    shown = [f"{k} {v:.4g}" for k, v in list(p.losses.items())[:SHOWN_LOSSES]]
    if p.test:
        key, value = next(iter(p.test.items()))
        shown.append(f"test {key} {value:.4g}")
    left = "done" if p.step >= p.total else f"~{duration(p.remaining_s)} left"
    return f"{entry}: step {p.step}/{p.total} (epoch {p.epoch}/{p.epochs})  {'  '.join(shown)}  {duration(p.elapsed_s)}, {left}"


class LiveBoard:
    """One line per entry (waiting, its progress, then its headline), and messages.

    `tty`: redraw the lines in place on `out`, messages and finished entries' headlines scrolling
    above them; else plain lines
    through `log`: an entry's progress at most every `every_s` seconds and at each epoch's end,
    messages and headlines as they come."""

    def __init__(
        self,
        names: list[str],
        log: Callable[[str], None] = print,
        tty: bool = False,
        out: TextIO | None = None,
        every_s: float = 12.0,
        width: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.lines = {name: f"{name}: waiting" for name in names}
        self.log, self.tty, self.out, self.every_s, self.clock = log, tty, out, every_s, clock
        self.width = width or shutil.get_terminal_size((100, 24)).columns
        self._on_screen = 0  # board lines drawn below the cursor's line (tty)
        self._last_line: dict[str, float] = {}  # when each entry's last plain progress line was printed
        self._last_draw = float("-inf")

    def update(self, entry: str, p: Progress) -> None:
        self.lines[entry] = progress_line(entry, p)
        now = self.clock()
        if self.tty:
            if p.test is not None or now - self._last_draw >= REDRAW_S:
                self._draw()
        elif p.test is not None or now - self._last_line.get(entry, float("-inf")) >= self.every_s:
            self._last_line[entry] = now
            self.log(self.lines[entry])

    def message(self, line: str) -> None:
        """A line that stays (a note, a warning): above the board in a terminal."""
        if self.tty:
            self._draw(above=line)
        else:
            self.log(line)

    def finish(self, entry: str, headline: str) -> None:
        """In a terminal the headline leaves the board for the lines above it, whole (the board's are cut to the width)."""
        if self.tty:
            del self.lines[entry]
            self._draw(above=headline)
        else:
            self.lines[entry] = headline
            self.log(headline)

    def _draw(self, above: str | None = None) -> None:
        # Back to the board's first line, clear to the end of the screen, write it again. Lines
        # are cut to the width, so each takes one row and the count to go back up stays right.
        parts = [f"\x1b[{self._on_screen}F\x1b[J" if self._on_screen else ""]
        if above is not None:
            parts.append(above + "\n")
        parts += [line[: self.width - 1] + "\n" for line in self.lines.values()]
        self.out.write("".join(parts))
        self.out.flush()
        self._on_screen = len(self.lines)
        self._last_draw = self.clock()
