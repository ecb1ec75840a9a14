"""Progress in log files: plain lines at a bounded rate when stderr is not a terminal (fake clock)."""

from __future__ import annotations

import io

import pytest

from softlabels.errors import InvalidArgumentError
from softlabels.progress import INTERVAL_ENV, PlainLines, format_duration, progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_log_file_gets_one_line_per_interval_with_rate_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    clock, log = FakeClock(), io.StringIO()
    with progress(50_000, desc="student epoch 3/20", stream=log, clock=clock) as bar:
        for _ in range(100):  # 100 batches of 128 samples, 1 s each: a line at 30 s, 60 s and 90 s
            clock.now += 1.0
            bar.update(128)
    lines = log.getvalue().splitlines()
    assert lines == [
        "student epoch 3/20: 3.8k/50.0k samples (7.7%), 128 samples/s, ETA 6m 01s",
        "student epoch 3/20: 7.7k/50.0k samples (15.4%), 128 samples/s, ETA 5m 31s",
        "student epoch 3/20: 11.5k/50.0k samples (23.0%), 128 samples/s, ETA 5m 01s",
    ]


def test_the_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INTERVAL_ENV, "5")
    clock, log = FakeClock(), io.StringIO()
    bar = progress(20, desc="generate", unit="shard", stream=log, clock=clock)
    for _ in range(20):
        clock.now += 1.0
        bar.update()
    bar.close()
    assert len(log.getvalue().splitlines()) == 4
    assert log.getvalue().splitlines()[-1] == "generate: 20/20 shards (100.0%), 1 shards/s, ETA -"


@pytest.mark.parametrize("value", ["0", "-3", "soon", "nan"])
def test_a_bad_interval_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(INTERVAL_ENV, value)
    with pytest.raises(InvalidArgumentError, match=INTERVAL_ENV):
        progress(10, desc="generate", stream=io.StringIO())


def test_disabled_progress_prints_nothing() -> None:
    log = io.StringIO()
    with progress(10, desc="generate", enabled=False, stream=log) as bar:
        bar.update(10)
    assert log.getvalue() == ""


def test_a_terminal_gets_a_tqdm_bar() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    bar = progress(10, desc="generate", stream=Terminal())
    assert not isinstance(bar, PlainLines)
    bar.close()


def test_durations_read_naturally() -> None:
    assert [format_duration(s) for s in (4.4, 65, 3599.6, 7620)] == ["4s", "1m 05s", "1h 00m", "2h 07m"]
