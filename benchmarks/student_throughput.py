"""What does distilling from a label store cost per student step, against hard labels and online KD?

The same student (``cnn-small``), SoftLabelDataset, DataLoader settings, optimizer and training
step (the trainer's own ``_Trainer._train_epoch``, fed a fixed number of batches: the trainer
has no public per-step hook) in four arms, alternated and repeated to spread machine noise:

* ``hard``: ``train-student --no-kd`` (no store: the store-less SoftLabelDataset, cross-entropy);
* ``store``: KD from a float16 ``full`` store of the split, labels read whole (the default
  256 MiB memory budget holds them);
* ``store-streamed``: the same with ``--memory-budget-mb 0``, so chunks are streamed;
* ``online``: the classic recipe: the hard-label dataset, and a teacher (``cnn-wide`` by
  default) run under ``inference_mode`` on every batch, its ``logits / T`` fed to the same
  distillation loss.

Each arm times ``--steps`` steps after ``--warmup`` steps of a fresh model and DataLoader;
per-epoch figures are the median per-step time x steps per epoch. Reported: store / hard (goal
at most 1.05), online / store, and the teacher's forward cost against the student's.

Run: ``python benchmarks/student_throughput.py [--store PATH] [--steps 60] [--repeats 2]``
(without ``--store``, one is generated with a random-weights ``cnn`` teacher: speed does not
depend on teacher quality).
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from common import cifar10_root, write_results

from softlabels import generate
from softlabels.runtime import resolve_device
from softlabels.sources import build_model
from softlabels.streaming import SoftLabelDataset, SoftLabelLoader
from softlabels.training.config import TrainConfig
from softlabels.training.run_dir import locked_run_dir
from softlabels.training.train import (
    _DistillationLoss,
    _prepare,
    _student_loss,
    _Trainer,
)

ARMS = ("hard", "store", "store-streamed", "online")


class _NoBar:
    """Stands in for the trainer's progress bar."""

    def update(self, count: int) -> None:
        del count


def random_store(dataset: str, out: Path, num_workers: int) -> str:
    """A float16 full store of the training split from a random-weights ``cnn`` (reused if complete)."""
    generate(
        dataset=dataset,
        teacher="cnn",
        random_weights=True,
        temperature=4.0,
        out=str(out),
        num_workers=num_workers,
        progress=False,
    )
    return str(out)


def arm_config(arm: str, args: argparse.Namespace, dataset: str, out: Path) -> TrainConfig:
    """The ``train-student`` settings of an arm (online KD trains like the hard-label baseline)."""
    common = {
        "dataset": dataset,
        "student": "cnn-small",
        "epochs": 1,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "seed": 0,
        "out": str(out),
        "progress": False,
        "device": "cpu",
    }
    if arm in ("hard", "online"):
        return TrainConfig(no_kd=True, **common)
    budget = 0 if arm == "store-streamed" else 256
    return TrainConfig(labels=args.store, memory_budget_mb=budget, **common)


def build_trainer(
    config: TrainConfig, online_loss: _DistillationLoss | None
) -> tuple[_Trainer, SoftLabelDataset]:
    """The trainer ``train_student`` builds for ``config`` (with ``online_loss`` if given), and its data."""
    train_data = SoftLabelDataset(
        config.labels,
        config.dataset,
        split=config.split,
        seed=config.seed,
        buffer_chunks=config.buffer_chunks,
        memory_budget_bytes=config.memory_budget_mb << 20,
    )
    loss = online_loss or _student_loss(config, train_data)
    job = _prepare("student", config, train_data, config.student, None, loss)
    return _Trainer(job, resolve_device(config.device)), train_data


def online_batches(batches: Iterable[Any], teacher: torch.nn.Module, temperature: float) -> Iterator[Any]:
    """The hard-label batches with the teacher's ``logits / T`` in place of the (empty) stored labels."""
    for inputs, _, targets in batches:
        with torch.inference_mode():
            logits = teacher(inputs) / temperature
        yield inputs, logits.clone(), targets


def time_arm(arm: str, args: argparse.Namespace, dataset: str, teacher: torch.nn.Module) -> float:
    """Seconds per training step of ``arm``, over ``args.steps`` steps after ``args.warmup``."""
    with tempfile.TemporaryDirectory() as scratch, locked_run_dir(out := Path(scratch) / "run"):
        config = arm_config(arm, args, dataset, out)
        online = arm == "online"
        loss = _DistillationLoss("full", args.temperature, args.temperature, args.alpha) if online else None
        trainer, train_data = build_trainer(config, loss)
        train_data.set_epoch(0)
        batches: Iterator[Any] = iter(trainer.train_loader)  # the trainer's own loader
        if online:
            batches = online_batches(batches, teacher, args.temperature)
        trainer._train_epoch(islice(batches, args.warmup), _NoBar())
        started = time.perf_counter()
        trainer._train_epoch(islice(batches, args.steps), _NoBar())
        seconds = (time.perf_counter() - started) / args.steps
        trainer.train_loader.close()
        return seconds


def loader_ms(arm: str, args: argparse.Namespace, dataset: str, batches: int) -> float:
    """Milliseconds per batch of the arm's DataLoader alone (no training), after ``args.warmup`` batches."""
    config = arm_config(arm, args, dataset, Path("unused"))
    train_data = SoftLabelDataset(
        config.labels, config.dataset, seed=config.seed, memory_budget_bytes=config.memory_budget_mb << 20
    )
    loader = iter(SoftLabelLoader(train_data, config.batch_size, num_workers=config.num_workers))
    for _ in islice(loader, args.warmup):
        pass
    started = time.perf_counter()
    for _ in islice(loader, batches):
        pass
    return 1000 * (time.perf_counter() - started) / batches


def loss_ms(loss: Any, labels: Any, batch_size: int, repeats: int = 200) -> float:
    """Milliseconds of one forward + backward of ``loss`` on a batch of 10-class logits."""
    logits = torch.randn(batch_size, 10, requires_grad=True)
    targets = torch.randint(0, 10, (batch_size,))
    loss(logits, labels, targets).backward()
    started = time.perf_counter()
    for _ in range(repeats):
        loss(logits, labels, targets).backward()
    return 1000 * (time.perf_counter() - started) / repeats


def component_costs(args: argparse.Namespace, dataset: str) -> dict[str, Any]:
    """The two places a store can add cost, timed alone: the DataLoader and the loss."""
    hard_loss = _student_loss(
        arm_config("hard", args, dataset, Path("unused")), SoftLabelDataset(None, dataset)
    )
    kd_loss = _DistillationLoss("full", args.temperature, args.temperature, args.alpha)
    return {
        "loader_ms_per_batch": {arm: loader_ms(arm, args, dataset, args.steps) for arm in ARMS[:3]},
        "loss_ms_per_batch": {
            "hard": loss_ms(hard_loss, torch.empty(args.batch_size, 0), args.batch_size),
            "store": loss_ms(kd_loss, torch.randn(args.batch_size, 10), args.batch_size),
        },
    }


def forward_ms(model: torch.nn.Module, batch: torch.Tensor, repeats: int) -> float:
    """Median milliseconds of one inference forward pass over ``batch``."""
    model.eval()
    times = []
    with torch.inference_mode():
        model(batch)
        for _ in range(repeats):
            started = time.perf_counter()
            model(batch)
            times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def forward_costs(teacher: torch.nn.Module, batch_size: int) -> dict[str, float]:
    """Forward cost of the online teacher and the student on one batch of CIFAR-sized inputs."""
    batch = torch.randn(batch_size, 3, 32, 32)
    student = build_model("cnn-small", num_classes=10, in_channels=3, input_size=32)
    teacher_ms, student_ms = forward_ms(teacher, batch, 10), forward_ms(student, batch, 10)
    return {
        "teacher_forward_ms": teacher_ms,
        "student_forward_ms": student_ms,
        "teacher_over_student_forward": teacher_ms / student_ms,
    }


def summarize(seconds: dict[str, list[float]], steps_per_epoch: int) -> dict[str, Any]:
    """Median per-step times, epoch equivalents and the two ratios the issue asks for."""
    median = {arm: statistics.median(values) for arm, values in seconds.items()}
    return {
        "steps_per_epoch": steps_per_epoch,
        "seconds_per_step": seconds,
        "median_seconds_per_step": median,
        "epoch_seconds_estimate": {arm: value * steps_per_epoch for arm, value in median.items()},
        "store_over_hard": median["store"] / median["hard"],
        "store_streamed_over_hard": median["store-streamed"] / median["hard"],
        "online_over_store": median["online"] / median["store"],
    }


def markdown(summary: dict[str, Any], costs: dict[str, float], teacher: str) -> str:
    """The per-arm times and ratios as a markdown table."""
    lines = ["| arm | median s/step | epoch estimate (s) | / hard |", "| --- | --- | --- | --- |"]
    hard = summary["median_seconds_per_step"]["hard"]
    for arm, value in summary["median_seconds_per_step"].items():
        lines.append(
            f"| {arm} | {value:.3f} | {summary['epoch_seconds_estimate'][arm]:.0f} | {value / hard:.3f} |"
        )
    lines += [
        "",
        f"store / hard: {summary['store_over_hard']:.3f} (goal <= 1.05); streamed store / hard: "
        f"{summary['store_streamed_over_hard']:.3f}; online ({teacher}) / store: "
        f"{summary['online_over_store']:.2f}; {teacher} forward = {costs['teacher_over_student_forward']:.1f}x "
        f"the student's ({costs['teacher_forward_ms']:.0f} vs {costs['student_forward_ms']:.0f} ms per batch)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", default=None, help="float16 full store of the CIFAR-10 train split")
    parser.add_argument("--teacher", default="cnn-wide", help="the online-distillation teacher")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.9)
    args = parser.parse_args()
    dataset = f"imagefolder:{cifar10_root()}"
    if args.store is None:
        args.store = random_store(
            dataset, Path("data/bench/throughput/cnn-random-float16.zarr"), args.num_workers
        )
    teacher = build_model(args.teacher, num_classes=10, in_channels=3, input_size=32).eval()
    seconds: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for repeat in range(args.repeats):
        for arm in ARMS if repeat % 2 == 0 else reversed(ARMS):
            seconds[arm].append(time_arm(arm, args, dataset, teacher))
            print(f"repeat {repeat + 1} {arm}: {seconds[arm][-1]:.3f} s/step", flush=True)
    rows = len(SoftLabelDataset(None, dataset).source)
    summary = summarize(seconds, math.ceil(rows / args.batch_size))
    costs = forward_costs(teacher, args.batch_size)
    components = component_costs(args, dataset)
    command = "python benchmarks/student_throughput.py " + " ".join(
        f"--{key.replace('_', '-')} {value}" for key, value in vars(args).items()
    )
    path = write_results(
        "student_throughput",
        {
            "command": command,
            "dataset": "CIFAR-10 JPEGs [train]",
            "student": "cnn-small",
            "teacher": args.teacher,
            "threads": torch.get_num_threads(),
            **summary,
            "forward_costs": costs,
            "components": components,
        },
    )
    print(markdown(summary, costs, args.teacher))
    print(
        f"alone: DataLoader ms/batch {components['loader_ms_per_batch']}, loss fwd+bwd ms/batch "
        f"{components['loss_ms_per_batch']}"
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
