"""Distributed training's parts that run in one process: the environment, devices and rank shares."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from softlabels.errors import InvalidArgumentError
from softlabels.sources import DatasetSource
from softlabels.streaming.dataset import SoftLabelDataset
from softlabels.streaming.loader import SoftLabelLoader
from softlabels.training import distributed
from softlabels.training.distributed import Distributed, device_for, from_environment


def test_without_torchrun_variables_a_run_is_one_process() -> None:
    assert from_environment({}) == distributed.SINGLE_PROCESS
    assert not from_environment({"PATH": "/bin"}).active


def test_torchrun_variables_give_the_rank() -> None:
    context = from_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert context == Distributed(rank=3, world_size=4, local_rank=1)
    assert context.active and not context.is_main


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"RANK": "0", "WORLD_SIZE": "2"}, "missing: LOCAL_RANK"),
        (
            {"RANK": "two", "WORLD_SIZE": "2", "LOCAL_RANK": "0"},
            "RANK must be a whole number >= 0, got 'two'",
        ),
        ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "rank 2 does not exist among WORLD_SIZE=2"),
        ({"RANK": "0", "WORLD_SIZE": "-1", "LOCAL_RANK": "0"}, "WORLD_SIZE must be a whole number"),
    ],
)
def test_a_broken_torchrun_environment_is_one_clear_error(environ: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        from_environment(environ)


def test_each_local_rank_takes_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device_for(Distributed(3, 4, 1), torch.device("cuda")) == torch.device("cuda", 1)
    assert device_for(Distributed(3, 4, 1), torch.device("cpu")) == torch.device("cpu")
    assert device_for(distributed.SINGLE_PROCESS, torch.device("cuda")) == torch.device("cuda")
    with pytest.raises(InvalidArgumentError, match="local rank 2 has no GPU of its own: this host has 2"):
        device_for(Distributed(2, 3, 2), torch.device("cuda"))


def test_one_process_needs_no_process_group() -> None:
    value = torch.tensor(2.5)
    with distributed.process_group(distributed.SINGLE_PROCESS, torch.device("cpu")):
        assert not torch.distributed.is_initialized()
        assert distributed.sum_over_ranks(distributed.SINGLE_PROCESS, value) == (value,)
        assert distributed.share_from_main(distributed.SINGLE_PROCESS, "state") == "state"
        model = torch.nn.Linear(2, 2)
        assert distributed.wrap(model, distributed.SINGLE_PROCESS, torch.device("cpu")) is model


def rank_epoch(store: Path, source: DatasetSource, rank: int, epoch: int, budget: int) -> list[list[int]]:
    """The rows of every batch rank ``rank`` of 2 trains on in ``epoch`` (row-coded store: logit 0 is the row)."""
    dataset = SoftLabelDataset(store, source, rank=rank, world_size=2, seed=4, memory_budget_bytes=budget)
    dataset.set_epoch(epoch)
    with SoftLabelLoader(dataset, 50) as loader:
        return [[int(row) for row in labels[:, 0]] for _, labels, _ in loader]


@pytest.mark.parametrize("budget", [0, 1 << 30], ids=["streamed", "in-memory"])
def test_two_ranks_run_equal_batches_and_see_every_sample_once_per_epoch(
    digits_store: Path, digits_train: DatasetSource, budget: int
) -> None:
    """1,437 samples on 2 ranks: 719 each, so 15 batches each; one sample (the padding) is seen twice."""
    orders = []
    for epoch in (0, 1):
        batches = [rank_epoch(digits_store, digits_train, rank, epoch, budget) for rank in (0, 1)]
        assert [len(share) for share in batches] == [15, 15]  # DDP steps in lockstep: never a missing batch
        rows = [row for share in batches for batch in share for row in batch]
        counts = np.bincount(rows, minlength=len(digits_train))
        assert counts.min() == 1 and counts.sum() == 2 * 719
        assert len(np.flatnonzero(counts == 2)) == 1
        orders.append(rows)
    assert orders[0] != orders[1]  # a new order (and padded sample) every epoch


def uneven_steps(rank: int, port: int, results: str) -> None:
    """Rank 0 takes 3 steps, rank 1 one (as when a loader drops an empty batch); then both exchange."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cluster = Distributed(rank, 2, rank)
    torch.manual_seed(rank)  # different initial weights: DDP must give rank 1 rank 0's
    model = torch.nn.Linear(4, 2)
    with distributed.process_group(cluster, torch.device("cpu")):
        trained = distributed.wrap(model, cluster, torch.device("cpu"))
        steps = 3 if rank == 0 else 1
        with distributed.uneven_batches(trained, cluster, possible=True):
            for _ in range(steps):
                trained(torch.ones(2, 4)).sum().backward()
        (total,) = distributed.sum_over_ranks(cluster, torch.tensor(steps))
        shared = distributed.share_from_main(cluster, {"from rank": rank})
        distributed.barrier(cluster)
    record = {"total": float(total), "shared": shared, "weight": model.weight.detach().tolist()}
    Path(results, f"{rank}.json").write_text(json.dumps(record))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_ranks_with_uneven_batches_finish_and_agree(tmp_path: Path) -> None:
    """Two gloo processes: the one that runs out of batches first shadows the other's steps instead of hanging."""
    context = mp.spawn(uneven_steps, args=(free_port(), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the ranks hung")
    records = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1)]
    assert [record["total"] for record in records] == [4.0, 4.0]
    assert [record["shared"] for record in records] == [{"from rank": 0}] * 2
    assert records[0]["weight"] == records[1]["weight"]  # rank 0's initial weights on both
    assert not torch.distributed.is_initialized()  # nothing leaked into this process
