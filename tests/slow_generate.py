"""``softlabels generate`` with the slow plug-in teacher, run as a real process a test can stop.

The teacher (``plugins_for_tests.py:slow_linear``) sleeps ``SOFTLABELS_TEST_DELAY`` seconds per
batch of 32, so a run over digits (23 shards of 64 rows) lasts long enough to be interrupted,
paused or raced mid-run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from softlabels.store import open_store

PLUGINS = Path(__file__).parent / "processing" / "generation" / "plugins_for_tests.py"
CLI = (sys.executable, "-c", "from softlabels.cli import main; main()")
"""The console entry point in a new interpreter: ``[*CLI, *args]`` runs ``softlabels ARGS``."""


def slow_generate_args(out: Path, *, temperature: str = "3") -> list[str]:
    """``generate`` digits with the slow teacher in chunks (and shards) of 64 rows, batches of 32."""
    return [
        "generate",
        "--dataset",
        "digits",
        "--teacher",
        f"{PLUGINS}:slow_linear",
        "--temperature",
        temperature,
        "--chunk-rows",
        "64",
        "--batch-size",
        "32",
        "--out",
        str(out),
    ]


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``softlabels ARGS`` with stdout and stderr piped (as text) and ``env`` added to the environment."""
    return subprocess.Popen(
        [*CLI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wait_for_shards(out: Path, count: int, run: subprocess.Popen[str], timeout: float = 120) -> None:
    """Return once the store at ``out`` has ``count`` finished shards; fail if ``run`` ends or time runs out first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (out / "shards_done").exists() and open_store(
            out, allow_incomplete=True
        ).shards_done().sum() >= count:
            return
        if run.poll() is not None:
            break
        time.sleep(0.05)
    if run.poll() is None:
        run.kill()
    raise AssertionError(f"the run never wrote {count} shards: {run.communicate()[1]}")
