"""Progress of a long embedding job on stderr: texts done, tokens/s, ETA, texts over the limit.

On a terminal the line is redrawn in place (at most twice a second); with --progress into a
file or pipe a full line is written every 10 seconds. The summary line is written either way.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


def clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    def __init__(self, enabled: bool, fraction_done: Callable[[], float | None], over_limit_word: str,
                 stream: TextIO = sys.stderr) -> None:
        self.stream, self.enabled = stream, enabled
        self.tty = stream.isatty()
        self.fraction_done = fraction_done
        self.word = over_limit_word  # "truncated" or "split into windows"
        self.start = time.monotonic()
        self.last = 0.0
        self.texts = self.tokens = self.over = 0  # embedded by this run
        self.resumed = self.resumed_over = 0  # taken from the checkpoint

    def skip(self, rows: int, over: int) -> None:
        self.resumed += rows
        self.resumed_over += over

    def update(self, rows: int, tokens: int, over: int) -> None:
        self.texts += rows
        self.tokens += tokens
        self.over += over
        now = time.monotonic()
        if self.enabled and now - self.last >= (0.5 if self.tty else 10.0):
            self.last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        line = (f"{self.resumed + self.texts:,} texts, {self.texts / elapsed:,.1f} texts/s, "
                f"{self.tokens / elapsed:,.0f} tokens/s, {self.resumed_over + self.over:,} {self.word}")
        fraction = self.fraction_done()
        if fraction:
            # The rate of this run only; the resumed part of the input took no embedding time.
            line = f"{100 * fraction:5.1f}% " + line
            done_here = self.texts / max(self.texts + self.resumed, 1)
            start_fraction = fraction * (1 - done_here)
            if fraction > start_fraction and self.texts:
                eta = elapsed * (1 - fraction) / (fraction - start_fraction)
                line += f", ETA {clock(eta)}"
        end = "\r" if self.tty else "\n"
        self.stream.write(("\r\x1b[K" if self.tty else "") + line + end)
        self.stream.flush()

    def summary(self, output: str, rows: int, dim: int, max_length: int, precision: str = "float32") -> str:
        elapsed = time.monotonic() - self.start
        resumed = f" ({self.resumed:,} from the checkpoint)" if self.resumed else ""
        over = self.resumed_over + self.over
        limit = f"{over:,} {self.word} at {max_length} tokens" if over else f"none over {max_length} tokens"
        line = (f"embedded {rows:,} texts{resumed} -> {output} ({rows} x {dim} {precision}) in {clock(elapsed)}: "
                f"{self.texts / max(elapsed, 1e-9):,.1f} texts/s, {self.tokens / max(elapsed, 1e-9):,.0f} tokens/s; {limit}")
        if self.enabled and self.tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(line + "\n")
        self.stream.flush()
        return line
