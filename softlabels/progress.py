"""Progress of long jobs: a tqdm bar on a terminal, a plain line every N seconds anywhere else.

A bar redraws itself with carriage returns, which a log file cannot show, so when stderr is not a
terminal (batch jobs, ``nohup``, CI) :func:`progress` prints one plain line at a bounded rate
instead::

    generate: 12.8k/50.0k samples (25.6%), 410 samples/s, ETA 1m 31s

The interval is 30 seconds unless ``SOFTLABELS_PROGRESS_INTERVAL`` (seconds) says otherwise. This
module imports nothing heavy (tqdm only on a terminal).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, TextIO

from softlabels.errors import InvalidArgumentError

__all__ = ["DEFAULT_INTERVAL", "INTERVAL_ENV", "Progress", "format_duration", "plain_interval", "progress"]

INTERVAL_ENV = "SOFTLABELS_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0
"""Seconds between two plain progress lines."""


class Progress(Protocol):
    """What jobs use of a progress display: count work done, then close (or leave the ``with`` block)."""

    def update(self, n: int = 1) -> Any: ...

    def close(self) -> None: ...

    def __enter__(self) -> Progress: ...

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> Any: ...


def progress(
    total: int,
    *,
    desc: str,
    unit: str = "sample",
    enabled: bool = True,
    leave: bool = True,
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Progress:
    """A progress display for ``total`` units of work, fit for where ``stream`` (stderr) goes.

    Args:
        total: Units of work in all (samples, shards).
        desc: What runs, first on every line (``generate``, ``student epoch 3/20``).
        unit: The unit's name, singular.
        enabled: False shows nothing.
        leave: Keep a terminal bar on screen after it finishes.
        stream: Where to write; default ``sys.stderr``.
        clock: Seconds from any origin (tests pass a fake one).
    """
    out = sys.stderr if stream is None else stream
    if not enabled:
        return _Silent()
    if _is_terminal(out):
        from tqdm import tqdm

        bar: Progress = tqdm(
            total=total, desc=desc, unit=unit, unit_scale=True, dynamic_ncols=True, leave=leave, file=out
        )
        return bar
    return PlainLines(total, desc=desc, unit=unit, stream=out, interval=plain_interval(), clock=clock)


def plain_interval() -> float:
    """Seconds between plain lines: ``$SOFTLABELS_PROGRESS_INTERVAL``, else 30.

    Raises:
        InvalidArgumentError: The variable is set to something other than a positive number.
    """
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidArgumentError(f"{INTERVAL_ENV} must be a positive number of seconds, got {raw!r}")
    return seconds


class PlainLines:
    """Counts work and prints ``desc: done/total unit (percent), rate, ETA`` at most once per interval."""

    def __init__(
        self,
        total: int,
        *,
        desc: str,
        unit: str,
        stream: TextIO,
        interval: float,
        clock: Callable[[], float],
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.stream, self.interval, self.clock = stream, interval, clock
        self.done = 0
        self.started = self.last_line = clock()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units; print a line when the interval has passed since the last one."""
        self.done += n
        now = self.clock()
        if now - self.last_line >= self.interval:
            self.last_line = now
            print(self.line(now), file=self.stream, flush=True)

    def line(self, now: float) -> str:
        """The progress line at time ``now``."""
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        share = f" ({self.done / self.total:.1%})" if self.total else ""
        left = self.total - self.done
        eta = format_duration(left / rate) if rate > 0 and left > 0 else "-"
        return (
            f"{self.desc}: {_count(self.done)}/{_count(self.total)} {self.unit}s{share}, "
            f"{_rate(rate)} {self.unit}s/s, ETA {eta}"
        )

    def close(self) -> None:
        """Nothing to tidy: every line is already complete."""

    def __enter__(self) -> PlainLines:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


class _Silent:
    def update(self, n: int = 1) -> None:
        """Count nothing."""

    def close(self) -> None:
        """Nothing to close."""

    def __enter__(self) -> _Silent:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def format_duration(seconds: float) -> str:
    """``42s``, ``3m 05s``, ``2h 07m``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _count(value: int) -> str:
    """``950``, ``12.8k``, ``1.28M``."""
    for suffix, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.{1 if suffix == 'k' else 2}f}{suffix}"
    return str(value)


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"
