"""``torchrun --nproc-per-node 2 -m softlabels train-student``: two real gloo processes on the CPU.

One uninterrupted two-rank run is the reference: it must complete with one run folder written by
rank 0, reach the accuracy of a one-process run, and equal, bit for bit, a two-rank run whose
rank 1 was killed mid-run (torchrun then stops rank 0 too) and that was then resumed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from student_helpers import write_store

from softlabels.sources import DatasetSource, read_weights
from softlabels.training.config import TrainConfig
from softlabels.training.train import train_student

SLOW_STUDENT = f"{Path(__file__).parent / 'plugins_for_student_tests.py'}:slow_mlp"
EPOCHS = 4
PER_RANK_BATCH = 32
ACCURACY_TOLERANCE = 0.03  # 11 of the 360 validation samples


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, digits_train: DatasetSource) -> Path:
    """A good, slightly noisy teacher's scaled logits: the true class plus noise."""
    labels = np.array([digits_train.dataset[i][1] for i in range(len(digits_train))])
    noise = np.random.default_rng(0).normal(scale=0.5, size=(len(labels), 10))
    logits = (3.0 * np.eye(10)[labels] + noise).astype(np.float32)
    return write_store(tmp_path_factory.mktemp("ddp") / "labels.zarr", digits_train, logits=logits)


def torchrun_command(store: Path, out: Path) -> list[str]:
    options: dict[str, Any] = {
        "labels": store,
        "dataset": "digits",
        "student": SLOW_STUDENT,
        "epochs": EPOCHS,
        "batch-size": PER_RANK_BATCH,
        "device": "cpu",
        "seed": 3,
        "out": out,
    }
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return [
        *launcher,
        "-m",
        "softlabels",
        "train-student",
        *(f"--{key}={value}" for key, value in options.items()),
    ]


def environment(delay: float = 0.0) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "SOFTLABELS_TEST_DELAY": str(delay)}


@pytest.fixture(scope="module")
def reference(
    store: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("ddp") / "reference"
    result = subprocess.run(
        torchrun_command(store, out),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def metrics(run: Path) -> list[dict[str, Any]]:
    try:
        rows: list[dict[str, Any]] = json.loads((run / "metrics.json").read_text())
    except FileNotFoundError:
        return []
    return rows


def test_two_ranks_complete_and_rank_zero_alone_writes(
    reference: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, result = reference
    assert result.stdout.count("Best validation accuracy") == 1  # rank 0's summary only
    assert sorted(path.name for path in out.iterdir()) == [
        ".lock",
        "best.pt",
        "config.json",
        "final.pt",
        "last.pt",
        "metrics.json",
        "summary.json",
    ]
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["world_size"] == 2 and config["batch_size"] == PER_RANK_BATCH
    assert [row["epoch"] for row in metrics(out)] == list(range(1, EPOCHS + 1))


def test_two_ranks_reach_the_accuracy_of_one(
    reference: tuple[Path, subprocess.CompletedProcess[str]], store: Path, tmp_path: Path
) -> None:
    """Same global batch (2 x 32 vs 64), same learning rate and epochs; only the sample split differs."""
    single = train_student(
        TrainConfig(
            labels=str(store),
            dataset="digits",
            student="mlp",
            epochs=EPOCHS,
            batch_size=2 * PER_RANK_BATCH,
            device="cpu",
            seed=3,
            out=str(tmp_path / "single"),
            progress=False,
        )
    )
    two_ranks = metrics(reference[0])[-1]["val_accuracy"]
    assert single.final_val_accuracy > 0.85
    assert abs(two_ranks - single.final_val_accuracy) <= ACCURACY_TOLERANCE


def test_a_run_rank_zero_refuses_stops_every_rank_with_one_line(
    reference: tuple[Path, subprocess.CompletedProcess[str]], store: Path
) -> None:
    out = reference[0]
    before = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    command = [*torchrun_command(store, out), "--lr=0.2"]
    result = subprocess.run(
        command, env=environment(), capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode != 0
    assert "holds a run with other settings (config.lr: run has 0.05, now 0.2)" in result.stderr
    assert "error: rank 1: rank 0 stopped before the run began" in result.stderr  # not a gloo traceback
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir()} == before


def worker_pids(launcher: int) -> dict[int, int]:
    """torchrun's worker processes by rank (read from their environment)."""
    workers = {}
    children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    for pid in map(int, children):
        try:
            variables = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        ranks = [entry.split(b"=", 1)[1] for entry in variables if entry.startswith(b"RANK=")]
        if ranks:
            workers[int(ranks[0])] = pid
    return workers


def test_a_killed_rank_stops_the_run_and_a_rerun_resumes_to_the_same_weights(
    reference: tuple[Path, subprocess.CompletedProcess[str]], store: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    # 23 batches of 20 ms per epoch, so the kill lands in the middle of the run.
    launcher = subprocess.Popen(
        torchrun_command(store, out),
        env=environment(0.02),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while len(metrics(out)) < 1 and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    workers = worker_pids(launcher.pid)
    assert sorted(workers) == [0, 1], "the run ended before it could be killed"
    os.kill(workers[1], signal.SIGKILL)
    assert launcher.wait(timeout=120) != 0
    assert not Path(f"/proc/{workers[0]}").exists()  # torchrun stopped the surviving rank
    assert 1 <= len(metrics(out)) < EPOCHS

    resumed = subprocess.run(
        torchrun_command(store, out),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed after epoch" in resumed.stdout
    expected = read_weights(reference[0] / "final.pt")[0]
    got = read_weights(out / "final.pt")[0]
    assert expected.keys() == got.keys() and all(torch.equal(got[key], expected[key]) for key in expected)
    assert [row["val_accuracy"] for row in metrics(out)] == [
        row["val_accuracy"] for row in metrics(reference[0])
    ]
