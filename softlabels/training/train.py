"""Training loops: students from stored soft labels, and teachers from hard labels.

Both run the same loop over a :class:`SoftLabelDataset` (a teacher, or a ``--no-kd`` student,
uses it without a store, or with one whose labels it ignores), so a distilled student and its
hard-label baseline load their data identically. Every epoch ends with a validation pass on
the held-out split, the resume state (``last.pt``), ``metrics.json`` and, when validation
accuracy improves, ``best.pt``. Re-running the same configuration into the same ``--out``
continues after the last complete epoch and ends with the weights an uninterrupted run gets.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import SGD, AdamW, Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR
from torch.utils.data import DataLoader

from softlabels.errors import DataError, InvalidArgumentError, UnknownNameError
from softlabels.format.identity import Scope, store_identity
from softlabels.runtime import autocast, check_precision, resolve_device, seed_everything
from softlabels.sources import DatasetSource, ModelSource, load_dataset, load_model, save_checkpoint
from softlabels.streaming.dataset import DEFAULT_BUFFER_CHUNKS, Labels, SoftLabelDataset
from softlabels.training.losses import ENCODINGS, distillation_loss, retemper
from softlabels.training.run_dir import (
    RUN_FILES,
    TrainState,
    load_state,
    locked_run_dir,
    prepare_run_dir,
    save_state,
    write_json,
)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_LR",
    "OPTIMIZERS",
    "EpochMetrics",
    "TeacherConfig",
    "TrainConfig",
    "TrainSummary",
    "train_student",
    "train_teacher",
]

OPTIMIZERS = ("sgd", "adamw")
DEFAULT_LR = {"sgd": 0.05, "adamw": 1e-3}
DEFAULT_ALPHA = 0.9
"""Weight of the distillation term: mostly teacher, with a little hard-label cross-entropy to anchor."""

SGD_MOMENTUM = 0.9
# Where a run writes and how it reports, never what it computes: a moved run folder still resumes.
_RUN_ONLY_FIELDS = frozenset({"out", "overwrite", "progress", "command"})


@dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """Settings shared by student and teacher training; field names mirror the CLI options."""

    dataset: str
    out: str
    epochs: int
    split: str = "train"
    val_split: str = "test"
    data_root: str | None = None
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float | None = None
    weight_decay: float = 5e-4
    num_workers: int = 0
    device: str = "auto"
    precision: str = "fp32"
    seed: int = 0
    augment: bool = False
    overwrite: bool = False
    progress: bool = True
    command: str | None = None

    def __post_init__(self) -> None:
        _require_at_least("--epochs", self.epochs, 1)
        _require_at_least("--batch-size", self.batch_size, 1)
        _require_at_least("--num-workers", self.num_workers, 0)
        _require_at_least("--seed", self.seed, 0)
        if self.optimizer not in OPTIMIZERS:
            raise UnknownNameError(f"unknown optimizer '{self.optimizer}'; known: {', '.join(OPTIMIZERS)}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise InvalidArgumentError(f"--lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InvalidArgumentError(f"--weight-decay must be a number >= 0, got {self.weight_decay}")
        if self.split == self.val_split:
            raise InvalidArgumentError(
                f"--val-split must be a held-out split, not the training split '{self.split}'"
            )
        check_precision(self.precision)

    @property
    def learning_rate(self) -> float:
        """``lr``, or the optimizer's default (0.05 for SGD, 1e-3 for AdamW)."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def to_json(self) -> dict[str, Any]:
        """The settings that decide the run's results, as recorded in ``config.json``."""
        return {
            item.name: getattr(self, item.name)
            for item in dataclasses.fields(self)
            if item.name not in _RUN_ONLY_FIELDS
        }


@dataclass(frozen=True, kw_only=True)
class TrainConfig(LoopConfig):
    """Everything ``softlabels train-student`` takes.

    ``labels`` may be omitted only with ``no_kd``: the hard-label baseline then streams the raw
    data in the order a default store of it would have, so the comparison stays fair. ``alpha``
    defaults to :data:`DEFAULT_ALPHA` and ``temperature`` to the store's own.
    """

    student: str
    labels: str | None = None
    student_weights: str | None = None
    alpha: float | None = None
    temperature: float | None = None
    no_kd: bool = False
    buffer_chunks: int = DEFAULT_BUFFER_CHUNKS
    memory_budget_mb: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.no_kd:
            for option, value in (("--alpha", self.alpha), ("--temperature", self.temperature)):
                if value is not None:
                    raise InvalidArgumentError(f"{option} has no effect with --no-kd (hard labels only)")
        elif self.labels is None:
            raise InvalidArgumentError("--labels is required unless --no-kd trains on hard labels only")
        if self.alpha is not None and not (math.isfinite(self.alpha) and 0.0 <= self.alpha <= 1.0):
            raise InvalidArgumentError(f"--alpha must be a number in [0, 1], got {self.alpha}")
        if self.temperature is not None and not (math.isfinite(self.temperature) and self.temperature > 0):
            raise InvalidArgumentError(f"--temperature must be a positive number, got {self.temperature}")
        _require_at_least("--buffer-chunks", self.buffer_chunks, 1)
        _require_at_least("--memory-budget-mb", self.memory_budget_mb, 0)

    @property
    def distillation_weight(self) -> float:
        return self.alpha if self.alpha is not None else DEFAULT_ALPHA


@dataclass(frozen=True, kw_only=True)
class TeacherConfig(LoopConfig):
    """Everything ``softlabels train-teacher`` takes; ``teacher_weights`` starts from trained weights."""

    teacher: str
    teacher_weights: str | None = None


@dataclass(frozen=True)
class EpochMetrics:
    """One row of ``metrics.json``; ``epoch`` counts from 1 and ``lr`` is the rate used in it."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    seconds: float
    lr: float

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainSummary:
    """What a training run produced; also written to ``summary.json``.

    Attributes:
        kind: ``student`` or ``teacher``.
        out: The run directory.
        best_val_accuracy: Best validation accuracy over all epochs (the weights in ``best.pt``).
        best_epoch: Its epoch (from 1).
        final_val_accuracy: Validation accuracy after the last epoch (the weights in ``final.pt``).
        epochs_run: Epochs trained by this call (fewer than the total after a resume).
        resumed_after: Epochs that were already complete when this call started.
        seconds: Wall time of this call.
        metrics: Every epoch's metrics, from the first.
    """

    kind: str
    out: str
    best_val_accuracy: float
    best_epoch: int
    final_val_accuracy: float
    epochs_run: int
    resumed_after: int
    seconds: float
    metrics: tuple[EpochMetrics, ...]

    @property
    def final_weights(self) -> str:
        return str(Path(self.out) / RUN_FILES.final)

    @property
    def best_weights(self) -> str:
        return str(Path(self.out) / RUN_FILES.best)

    def to_json(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        document.update(final_weights=self.final_weights, best_weights=self.best_weights)
        return document

    def describe(self) -> str:
        resumed = f", resumed after epoch {self.resumed_after}" if self.resumed_after else ""
        return (
            f"Best validation accuracy {self.best_val_accuracy:.2%} (epoch {self.best_epoch}); final "
            f"{self.final_val_accuracy:.2%} after {len(self.metrics)} epochs ({self.epochs_run} this run"
            f"{resumed}, {self.seconds:.1f} s). Weights: {self.final_weights}, best: {self.best_weights}."
        )


class _Loss(Protocol):
    def __call__(self, logits: torch.Tensor, labels: Labels, targets: torch.Tensor) -> torch.Tensor: ...


class _HardLabelLoss:
    """Cross-entropy on the targets; the soft labels are ignored."""

    def __call__(self, logits: torch.Tensor, labels: Labels, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets)


@dataclass(frozen=True)
class _DistillationLoss:
    """The store encoding's distillation loss at ``temperature``, re-tempering ``full`` rows when needed."""

    encoding: str
    stored_temperature: float
    temperature: float
    alpha: float

    def __call__(self, logits: torch.Tensor, labels: Labels, targets: torch.Tensor) -> torch.Tensor:
        if self.encoding == "full" and self.temperature != self.stored_temperature:
            if not isinstance(labels, torch.Tensor):
                raise InvalidArgumentError("full soft labels must come as one tensor per batch")
            labels = retemper(labels, self.stored_temperature, self.temperature)
        return distillation_loss(
            logits, labels, targets, encoding=self.encoding, temperature=self.temperature, alpha=self.alpha
        )


@dataclass(frozen=True)
class _Job:
    """One run, ready to train: the model, the data, the loss and what ``config.json`` records."""

    kind: str
    config: LoopConfig
    model: ModelSource
    train_data: SoftLabelDataset
    val_source: DatasetSource
    loss: _Loss
    description: dict[str, Any]


def train_student(config: TrainConfig) -> TrainSummary:
    """Train ``config.student`` from the stored soft labels (or hard labels with ``no_kd``), resumably.

    Raises:
        StoreMismatchError: The store was made from other data.
        IncompleteStoreError: The store is not complete.
        InvalidArgumentError: ``--out`` holds a run with other settings, or an option is unusable
            with this store (e.g. ``--temperature`` on a top-k store).
    """
    train_data = SoftLabelDataset(
        config.labels,
        config.dataset,
        split=config.split,
        data_root=config.data_root,
        augment=config.augment,
        seed=config.seed,
        buffer_chunks=config.buffer_chunks,
        memory_budget_bytes=config.memory_budget_mb << 20,
    )
    loss = _student_loss(config, train_data)
    return _run(_prepare("student", config, train_data, config.student, config.student_weights, loss))


def train_teacher(config: TeacherConfig) -> TrainSummary:
    """Train ``config.teacher`` with cross-entropy on the dataset's labels, resumably.

    ``final.pt`` and ``best.pt`` are softlabels checkpoints that ``generate --teacher-weights``
    accepts.
    """
    train_data = SoftLabelDataset(
        None,
        config.dataset,
        split=config.split,
        data_root=config.data_root,
        augment=config.augment,
        seed=config.seed,
    )
    return _run(
        _prepare("teacher", config, train_data, config.teacher, config.teacher_weights, _HardLabelLoss())
    )


def _prepare(
    kind: str,
    config: LoopConfig,
    train_data: SoftLabelDataset,
    model_spec: str,
    weights: str | None,
    loss: _Loss,
) -> _Job:
    """Load the validation data and the model (seeded), and describe the run for ``config.json``."""
    val_source = _validation_source(config, train_data.source)
    seed_everything(config.seed)
    model = load_job_model(model_spec, train_data.source, weights=weights, role=kind)
    header = train_data.header
    inputs = {
        "train data": train_data.source.fingerprint,
        "validation data": val_source.fingerprint,
        "initial weights sha256": model.weights_sha256,
        "labels": None
        if header is None
        else {**store_identity(header, Scope.RESUME), "created": header.provenance.created},
    }
    description = {"config": config.to_json(), "inputs": inputs}
    return _Job(kind, config, model, train_data, val_source, loss, description)


def _student_loss(config: TrainConfig, train_data: SoftLabelDataset) -> _Loss:
    encoding, stored_temperature = train_data.encoding_name, train_data.temperature
    if config.no_kd or encoding is None or stored_temperature is None:
        return _HardLabelLoss()
    if encoding not in ENCODINGS:
        raise UnknownNameError(
            f"store format '{encoding}' has no distillation loss; known: {', '.join(ENCODINGS)}"
        )
    temperature = config.temperature if config.temperature is not None else stored_temperature
    if encoding != "full" and temperature != stored_temperature:
        raise InvalidArgumentError(
            f"--temperature {temperature:g} differs from the store's {stored_temperature:g}: "
            f"only full stores can be re-tempered, {encoding} rows are fixed"
        )
    return _DistillationLoss(encoding, stored_temperature, temperature, config.distillation_weight)


def _validation_source(config: LoopConfig, train: DatasetSource) -> DatasetSource:
    source = load_dataset(config.dataset, config.val_split, data_root=config.data_root)
    if len(source) == 0:
        raise DataError(f"validation split {config.dataset} [{config.val_split}] has no samples")
    if source.class_names != train.class_names:
        raise DataError(
            f"splits '{config.split}' and '{config.val_split}' of {config.dataset} have different "
            f"classes ({len(train.class_names)} vs {len(source.class_names)})"
        )
    return source


def load_job_model(spec: str, source: DatasetSource, *, weights: str | None, role: str) -> ModelSource:
    """The model ``spec`` sized for ``source``, from ``weights`` or freshly initialised (trainers start from scratch)."""
    return load_model(
        spec,
        num_classes=source.num_classes,
        in_channels=source.in_channels,
        input_size=source.input_shape[-1],
        weights=weights,
        random_weights=weights is None,
        role=role,
    )


def _run(job: _Job) -> TrainSummary:
    started = time.perf_counter()
    device = resolve_device(job.config.device)
    with locked_run_dir(Path(job.config.out)):
        trainer = _Trainer(job, device)
        resumed_after = trainer.progress.epochs_done
        for epoch in range(resumed_after, job.config.epochs):
            trainer.finish_epoch(trainer.train_and_validate(epoch))
        # A finished run keeps its final.pt untouched: stores made from it record its sha256.
        if resumed_after < job.config.epochs or not (trainer.out / RUN_FILES.final).exists():
            trainer.save_weights(RUN_FILES.final)
        summary = trainer.summary(resumed_after, time.perf_counter() - started)
        write_json(trainer.out / RUN_FILES.summary, summary.to_json())
    return summary


class _Trainer:
    """The model, optimizer, schedule and progress of one run, resumed from ``last.pt`` when there is one."""

    def __init__(self, job: _Job, device: torch.device) -> None:
        self.job = job
        self.config = job.config
        self.out = Path(self.config.out)
        self.device = device
        prepare_run_dir(self.out, job.kind, job.description, overwrite=self.config.overwrite)
        self.model = job.model.module.to(self.device)
        self.optimizer = _optimizer(self.config, self.model)
        self.scheduler = CosineAnnealingLR(self.optimizer, T_max=self.config.epochs)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.config.precision == "fp16")
        state = load_state(self.out / RUN_FILES.last)
        if state is not None:
            self._restore(state)
            write_json(self.out / RUN_FILES.metrics, state.metrics)  # the resume state is the source of truth
        self.progress = state or TrainState(0, {}, {}, {}, {}, [], -1.0, 0, {})
        self.val_loader: DataLoader[tuple[torch.Tensor, int]] = DataLoader(
            job.val_source.dataset,
            batch_size=self.config.batch_size,
            shuffle=False,
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=_epoch_generator(self.config.seed, self.config.epochs),
        )

    def train_and_validate(self, epoch: int) -> EpochMetrics:
        """Run epoch ``epoch`` (from 0) and the validation pass after it."""
        started = time.perf_counter()
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.job.train_data.set_epoch(epoch)
        # A per-epoch generator fixes the workers' seeds (random augmentation), leaving the global RNG alone.
        loader = DataLoader(
            self.job.train_data,
            batch_size=self.config.batch_size,
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=_epoch_generator(self.config.seed, epoch),
        )
        with _progress_bar(self.job, epoch) as bar:
            train_loss = self._train_epoch(loader, bar)
        if not math.isfinite(train_loss):
            raise InvalidArgumentError(
                f"the training loss became {train_loss} in epoch {epoch + 1}; try a lower --lr"
            )
        val_loss, val_accuracy = evaluate(self.model, self.val_loader, self.device, self.config.precision)
        self.scheduler.step()
        seconds = time.perf_counter() - started
        if self.config.progress:
            _report(
                f"{self.job.kind} epoch {epoch + 1}/{self.config.epochs}: train loss {train_loss:.4f}, "
                f"val loss {val_loss:.4f}, val accuracy {val_accuracy:.2%}, lr {lr:.3g}, {seconds:.1f} s"
            )
        return EpochMetrics(epoch + 1, train_loss, val_loss, val_accuracy, seconds, lr)

    def finish_epoch(self, metrics: EpochMetrics) -> None:
        """Record a complete epoch; ``best.pt`` goes first so that the resume state never points past it."""
        progress = self.progress
        progress.epochs_done = metrics.epoch
        progress.metrics.append(metrics.to_json())
        if metrics.val_accuracy > progress.best_accuracy:
            progress.best_accuracy, progress.best_epoch = metrics.val_accuracy, metrics.epoch
            self.save_weights(RUN_FILES.best)
        progress.model = {
            name: value.detach().cpu().clone() for name, value in self.model.state_dict().items()
        }
        progress.optimizer = self.optimizer.state_dict()
        progress.scheduler = self.scheduler.state_dict()
        progress.scaler = self.scaler.state_dict()
        progress.rng = _rng_state(self.device)
        save_state(self.out / RUN_FILES.last, progress)
        write_json(self.out / RUN_FILES.metrics, progress.metrics)

    def save_weights(self, name: str) -> None:
        """The model as a softlabels checkpoint (what ``--teacher-weights``/``--student-weights`` take)."""
        source = self.job.train_data.source
        latest = self.progress.metrics[-1]
        extra = {
            "kind": self.job.kind,
            "epoch": latest["epoch"],
            "val_accuracy": latest["val_accuracy"],
            "dataset": source.spec,
            "split": source.split,
            "class_names": list(source.class_names),
            "config": self.job.description["config"],
        }
        save_checkpoint(
            self.out / name,
            self.model,
            model_spec=self.job.model.spec,
            num_classes=source.num_classes,
            in_channels=source.in_channels,
            extra=extra,
        )

    def summary(self, resumed_after: int, seconds: float) -> TrainSummary:
        progress = self.progress
        return TrainSummary(
            kind=self.job.kind,
            out=str(self.out),
            best_val_accuracy=progress.best_accuracy,
            best_epoch=progress.best_epoch,
            final_val_accuracy=float(progress.metrics[-1]["val_accuracy"]),
            epochs_run=progress.epochs_done - resumed_after,
            resumed_after=resumed_after,
            seconds=seconds,
            metrics=tuple(EpochMetrics(**row) for row in progress.metrics),
        )

    def _train_epoch(self, loader: DataLoader[Any], bar: Any) -> float:
        """One pass over the training data; returns the mean loss per sample."""
        self.model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        count = 0
        for inputs, labels, targets in loader:
            targets = targets.to(self.device, non_blocking=True)
            with autocast(self.device, self.config.precision):
                logits = self.model(inputs.to(self.device, non_blocking=True))
            loss = self.job.loss(logits, _to_device(labels, self.device), targets)
            self.optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(self.scaler.scale(loss))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            # Summed on the device: a .item() per step would wait for the accelerator every batch.
            loss_sum += loss.detach() * len(targets)
            count += len(targets)
            bar.update(len(targets))
        if count == 0:
            raise DataError(
                f"{self.job.train_data.source.spec} [{self.config.split}] gave this process no samples"
            )
        return float(loss_sum.item()) / count

    def _restore(self, state: TrainState) -> None:
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        self.scaler.load_state_dict(state.scaler)
        torch.set_rng_state(state.rng["torch"])
        cuda_states = state.rng.get("cuda")
        if self.device.type == "cuda" and cuda_states and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def evaluate(
    model: nn.Module, loader: DataLoader[tuple[torch.Tensor, int]], device: torch.device, precision: str
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on the held-out split."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    with torch.inference_mode():
        for inputs, targets in loader:
            targets = targets.to(device, non_blocking=True)
            with autocast(device, precision):
                logits = model(inputs.to(device, non_blocking=True)).float()
            loss_sum += F.cross_entropy(logits, targets, reduction="sum")
            correct += (logits.argmax(dim=1) == targets).sum()
            count += len(targets)
    return float(loss_sum.item()) / count, int(correct.item()) / count


def _optimizer(config: LoopConfig, model: nn.Module) -> Optimizer:
    if config.optimizer == "sgd":
        return SGD(
            model.parameters(),
            lr=config.learning_rate,
            momentum=SGD_MOMENTUM,
            nesterov=True,
            weight_decay=config.weight_decay,
        )
    return AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]))
    return generator


def _to_device(labels: Labels, device: torch.device) -> Labels:
    if isinstance(labels, torch.Tensor):
        return labels.to(device, non_blocking=True)
    return {name: value.to(device, non_blocking=True) for name, value in labels.items()}


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _progress_bar(job: _Job, epoch: int) -> Any:
    from tqdm import tqdm

    # disable=None hides the bar when stderr is not a terminal (batch jobs, CI logs).
    return tqdm(
        total=len(job.train_data),
        unit="sample",
        unit_scale=True,
        leave=False,
        dynamic_ncols=True,
        desc=f"{job.kind} epoch {epoch + 1}/{job.config.epochs}",
        disable=None if job.config.progress else True,
    )


def _report(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def _require_at_least(option: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgumentError(f"{option} must be an integer >= {minimum}, got {value!r}")
