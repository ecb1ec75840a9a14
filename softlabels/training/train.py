"""Training loops: students from stored soft labels, and teachers from hard labels.

Both run the same loop over a :class:`SoftLabelDataset` (a teacher, or a ``--no-kd`` student,
uses it without a store, or with one whose labels it ignores), so a distilled student and its
hard-label baseline load their data identically. Every epoch ends with a validation pass on
the held-out split, the resume state (``last.pt``), ``metrics.json`` and, when validation
accuracy improves, ``best.pt``. Re-running the same configuration into the same ``--out``
continues after the last complete epoch and ends with the weights an uninterrupted run gets.
Under ``torchrun`` the same loop runs on every rank with DistributedDataParallel, and rank 0
alone writes the run folder (see :mod:`softlabels.training.distributed`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import SGD, AdamW, Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR
from torch.utils.data import DataLoader

from softlabels import defaults
from softlabels.errors import DataError, Interrupted, InvalidArgumentError, UnknownNameError
from softlabels.format.identity import Scope, store_identity
from softlabels.format.schema import IGNORED_TARGET, StoreHeader
from softlabels.progress import Progress
from softlabels.progress import progress as show_progress
from softlabels.runtime import autocast, resolve_device, seed_everything
from softlabels.sources import DatasetSource, ModelSource, load_dataset, load_model, save_checkpoint
from softlabels.sources.partitions import partition_source
from softlabels.streaming.dataset import Labels, SoftLabelDataset
from softlabels.streaming.loader import Batch, SoftLabelLoader
from softlabels.streaming.plan import SeedStream, derive_seed
from softlabels.training import distributed
from softlabels.training.config import EpochMetrics, LoopConfig, TeacherConfig, TrainConfig, TrainSummary
from softlabels.training.distributed import Distributed
from softlabels.training.losses import ENCODINGS, distillation_loss, retemper
from softlabels.training.run_dir import (
    RUN_FILES,
    TrainState,
    load_state,
    open_run_dir,
    save_state,
    write_json,
)

__all__ = ["evaluate", "load_job_model", "perplexity", "train_student", "train_teacher"]

_MAX_EXP_ARGUMENT = 700.0  # math.exp overflows a float a little above 709


class _Loss(Protocol):
    def __call__(self, logits: torch.Tensor, labels: Labels, targets: torch.Tensor) -> torch.Tensor: ...


class _HardLabelLoss:
    """Cross-entropy on the targets (per labelled position for a language model); the soft labels are ignored."""

    def __call__(self, logits: torch.Tensor, labels: Labels, targets: torch.Tensor) -> torch.Tensor:
        if logits.dim() == 2:
            return F.cross_entropy(logits.float(), targets)
        flat_logits, flat_targets = _flat_positions(logits, targets)
        # The sum over labelled positions divided by their count (at least 1): a batch whose
        # positions are all ignored adds nothing instead of a NaN.
        loss_sum = F.cross_entropy(
            flat_logits.float(), flat_targets, ignore_index=IGNORED_TARGET, reduction="sum"
        )
        return loss_sum / _labelled(flat_targets).clamp(min=1)


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
    device: torch.device
    model: ModelSource
    train_data: SoftLabelDataset
    val_source: DatasetSource
    loss: _Loss
    description: dict[str, Any]
    cluster: Distributed = distributed.SINGLE_PROCESS


def train_student(config: TrainConfig) -> TrainSummary:
    """Train ``config.student`` from the stored soft labels (or hard labels with ``no_kd``), resumably.

    Raises:
        StoreMismatchError: The store was made from other data.
        IncompleteStoreError: The store is not complete.
        InvalidArgumentError: A setting is unusable with this store (e.g. another temperature
            for a top-k store).
        RunDirectoryError: ``out`` holds a run with other settings or inputs, or other files;
            it is then left as it was (and not created when it did not exist).
    """
    cluster = distributed.from_environment()
    train_data = SoftLabelDataset(
        config.labels,
        config.dataset,
        split=config.split,
        data_root=config.data_root,
        augment=config.augment,
        seq_len=config.seq_len,
        seed=config.seed,
        buffer_chunks=config.buffer_chunks,
        memory_budget_bytes=config.memory_budget_mb << 20,
        rank=cluster.rank,
        world_size=cluster.world_size,
    )
    loss = _student_loss(config, train_data)
    return _run(
        _prepare("student", config, train_data, config.student, config.student_weights, loss, cluster)
    )


def train_teacher(config: TeacherConfig) -> TrainSummary:
    """Train ``config.teacher`` with cross-entropy on the dataset's labels, resumably.

    ``final.pt`` and ``best.pt`` are softlabels checkpoints that ``generate --teacher-weights``
    accepts.
    """
    partition = config.partition_spec
    cluster = distributed.from_environment()
    if partition is None:
        train_data = SoftLabelDataset(
            None,
            config.dataset,
            split=config.split,
            data_root=config.data_root,
            augment=config.augment,
            seq_len=config.seq_len,
            seed=config.seed,
            rank=cluster.rank,
            world_size=cluster.world_size,
        )
        part_record = None
    else:
        split = load_dataset(
            config.dataset,
            config.split,
            data_root=config.data_root,
            augment=config.augment,
            seq_len=config.seq_len,
        )
        if config.augment and not split.augmented:
            raise InvalidArgumentError(
                f"dataset {config.dataset} cannot be augmented (only imagefolder: and torchvision: image files can)"
            )
        part = partition_source(split, partition)
        train_data = SoftLabelDataset(
            None, part.source, seed=config.seed, rank=cluster.rank, world_size=cluster.world_size
        )
        part_record = part.record
    job = _prepare(
        "teacher", config, train_data, config.teacher, config.teacher_weights, _HardLabelLoss(), cluster
    )
    if part_record is not None:
        job.description["inputs"]["train partition"] = part_record
    return _run(job)


def _prepare(
    kind: str,
    config: LoopConfig,
    train_data: SoftLabelDataset,
    model_spec: str,
    weights: str | None,
    loss: _Loss,
    cluster: Distributed = distributed.SINGLE_PROCESS,
) -> _Job:
    """Load the validation data and the model (seeded), and describe the run for ``config.json``.

    The description is what a resume must match: the settings with every default resolved, and
    the inputs by content (fingerprints, sha256, the store's identity); where the inputs live is
    recorded apart (``locations``) and never compared. A distributed run records its number of
    processes too: it decides each step's samples, so a resume must keep it.
    """
    device = distributed.device_for(cluster, resolve_device(config.device))
    if not cluster.is_main:
        config = dataclasses.replace(config, progress=False)  # one progress bar and report: rank 0's
    val_source = _validation_source(config, train_data.source)
    seed_everything(config.seed)
    model = load_job_model(model_spec, train_data.source, weights=weights, role=kind)
    header = train_data.header
    settings = config.settings()
    settings["device"] = device.type  # "auto" as what it chose; the GPU's index does not change results
    if cluster.active:
        settings["world_size"] = cluster.world_size
    if isinstance(loss, _DistillationLoss):
        settings["temperature"] = loss.temperature
        settings["alpha"] = loss.alpha
    inputs = {
        "train data": train_data.source.fingerprint,
        "train preprocessing": train_data.source.preprocessing,
        "validation data": val_source.fingerprint,
        "validation preprocessing": val_source.preprocessing,
        "initial weights sha256": model.weights_sha256,
        "labels": None if header is None else _store_inputs(header),
    }
    description = {"config": settings, "inputs": inputs, "locations": config.locations()}
    return _Job(kind, config, device, model, train_data, val_source, loss, description, cluster)


def _store_inputs(header: StoreHeader) -> dict[str, Any]:
    """What identifies a store's labels: its identity, and which run made them when (a remade store differs)."""
    return {
        **store_identity(header, Scope.RESUME),
        "run id": header.run_id,
        "created": header.provenance.created,
    }


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
            f"temperature {temperature:g} differs from the store's {stored_temperature:g}: "
            f"only full stores can be re-tempered, {encoding} rows are fixed"
        )
    return _DistillationLoss(encoding, stored_temperature, temperature, _alpha(config, train_data))


def _alpha(config: TrainConfig, train_data: SoftLabelDataset) -> float:
    """``alpha``; for private labels (a store with an answered mask) 1 unless given.

    The ground truth of the public split is not part of the PATE setting (its inputs are
    unlabelled there), so by default such a student learns from the released answers alone.
    """
    if config.alpha is None and train_data.answered is not None:
        return 1.0
    return config.distillation_weight


def _validation_source(config: LoopConfig, train: DatasetSource) -> DatasetSource:
    source = load_dataset(
        config.dataset, config.val_split, data_root=config.data_root, seq_len=config.seq_len
    )
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
        input_shape=source.input_shape,
        input_dtype=source.input_dtype,
        weights=weights,
        random_weights=weights is None,
        role=role,
    )


def _run(job: _Job) -> TrainSummary:
    started = time.perf_counter()
    cluster = job.cluster
    # Rank 0 alone holds (checks, locks and writes) the run folder; the others get its resume state.
    run_dir = (
        open_run_dir(Path(job.config.out), job.kind, job.description, overwrite=job.config.overwrite)
        if cluster.is_main
        else contextlib.nullcontext()
    )
    with distributed.process_group(cluster, job.device), run_dir:
        trainer = _Trainer(job, job.device)
        resumed_after = trainer.progress.epochs_done
        try:
            for epoch in range(resumed_after, job.config.epochs):
                trainer.finish_epoch(trainer.train_and_validate(epoch))
        except KeyboardInterrupt:
            what = f"{trainer.progress.epochs_done} of {job.config.epochs} epochs in {trainer.out}"
            raise Interrupted(f"interrupted: kept {what}; re-run the same command to resume", what) from None
        finally:
            trainer.train_loader.close()
        # A finished run keeps its final.pt untouched: stores made from it record its sha256.
        if resumed_after < job.config.epochs or not (trainer.out / RUN_FILES.final).exists():
            trainer.save_weights(RUN_FILES.final)
        summary = trainer.summary(resumed_after, time.perf_counter() - started)
        if cluster.is_main:
            write_json(trainer.out / RUN_FILES.summary, summary.to_json())
    return summary


class _Trainer:
    """The model, optimizer, schedule and progress of one run, resumed from ``last.pt`` when there is one."""

    def __init__(self, job: _Job, device: torch.device) -> None:
        self.job = job
        self.config = job.config
        self.out = Path(self.config.out)
        self.device = device
        self.model = job.model.module.to(self.device)
        self.optimizer = _optimizer(self.config, self.model)
        self.scheduler = CosineAnnealingLR(self.optimizer, T_max=self.config.epochs)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.config.precision == "fp16")
        self.cluster = job.cluster
        state = distributed.share_from_main(
            self.cluster, load_state(self.out / RUN_FILES.last) if self.cluster.is_main else None
        )
        if state is not None:
            self._restore(state)
            if self.cluster.is_main:  # the resume state is the source of truth
                write_json(self.out / RUN_FILES.metrics, state.metrics)
        self.progress = state or TrainState(0, {}, {}, {}, {}, [], -1.0, 0, {})
        # Trains through DistributedDataParallel under torchrun; evaluated and saved bare.
        self.training_model = distributed.wrap(self.model, self.cluster, self.device)
        self.val_loader: DataLoader[tuple[torch.Tensor, int]] = DataLoader(
            job.val_source.dataset,
            batch_size=self.config.batch_size,
            shuffle=False,
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=_validation_generator(self.config.seed),
        )
        # Built once: its workers persist across epochs and load raw inputs only, and the labels
        # stay in this process (read once per run when they fit the memory budget).
        self.train_loader = SoftLabelLoader(
            job.train_data,
            self.config.batch_size,
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
        )

    def train_and_validate(self, epoch: int) -> EpochMetrics:
        """Run epoch ``epoch`` (from 0) and the validation pass after it."""
        started = time.perf_counter()
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.job.train_data.set_epoch(epoch)
        with _progress_bar(self.job, epoch) as bar:
            train_loss = self._train_epoch(self.train_loader, bar)
        if not math.isfinite(train_loss):
            raise InvalidArgumentError(
                f"the training loss became {train_loss} in epoch {epoch + 1}; try a lower learning rate"
            )
        val_loss, val_accuracy = evaluate(self.model, self.val_loader, self.device, self.config.precision)
        val_perplexity = perplexity(val_loss) if self.job.val_source.positions is not None else None
        self.scheduler.step()
        seconds = time.perf_counter() - started
        if self.config.progress:
            measured = (
                f"val accuracy {val_accuracy:.2%}"
                if val_perplexity is None
                else f"val perplexity {val_perplexity:.2f}, next-token accuracy {val_accuracy:.2%}"
            )
            _report(
                f"{self.job.kind} epoch {epoch + 1}/{self.config.epochs}: train loss {train_loss:.4f}, "
                f"val loss {val_loss:.4f}, {measured}, lr {lr:.3g}, {seconds:.1f} s"
            )
        return EpochMetrics(epoch + 1, train_loss, val_loss, val_accuracy, seconds, lr, val_perplexity)

    def finish_epoch(self, metrics: EpochMetrics) -> None:
        """Record a complete epoch; ``best.pt`` goes first so that the resume state never points past it.

        Under torchrun rank 0 writes and the other ranks wait for it, so no rank starts an epoch
        that a kill could leave without its predecessor's resume state.
        """
        progress = self.progress
        progress.epochs_done = metrics.epoch
        progress.metrics.append(metrics.to_json())
        if metrics.val_accuracy > progress.best_accuracy:
            progress.best_accuracy, progress.best_epoch = metrics.val_accuracy, metrics.epoch
            self.save_weights(RUN_FILES.best)
        if self.cluster.is_main:
            progress.model = {
                name: value.detach().cpu().clone() for name, value in self.model.state_dict().items()
            }
            progress.optimizer = self.optimizer.state_dict()
            progress.scheduler = self.scheduler.state_dict()
            progress.scaler = self.scaler.state_dict()
            progress.rng = _rng_state(self.device)
            save_state(self.out / RUN_FILES.last, progress)
            write_json(self.out / RUN_FILES.metrics, progress.metrics)
        distributed.barrier(self.cluster)

    def save_weights(self, name: str) -> None:
        """The model as a softlabels checkpoint (what ``--teacher-weights``/``--student-weights`` take); rank 0 only."""
        if not self.cluster.is_main:
            return
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
        partition = self.job.description["inputs"].get("train partition")
        if partition is not None:
            extra["partition"] = partition
        save_checkpoint(
            self.out / name,
            self.model,
            model_spec=self.job.model.spec,
            num_classes=source.num_classes,
            in_channels=source.in_channels if source.is_image else None,
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

    def _train_epoch(self, loader: Iterable[Batch], bar: Any) -> float:
        """One pass over the training data; returns the mean loss per sample (per labelled token for a language model)."""
        self.model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        weight = torch.zeros((), dtype=torch.int64, device=self.device)
        count = 0
        possibly_uneven = self.job.train_data.answered is not None  # the loader drops unanswered rows
        with distributed.uneven_batches(self.training_model, self.cluster, possible=possibly_uneven):
            for inputs, labels, targets in loader:
                targets = targets.to(self.device, non_blocking=True)
                with autocast(self.device, self.config.precision):
                    logits = self.training_model(inputs.to(self.device, non_blocking=True))
                loss = self.job.loss(logits, _to_device(labels, self.device), targets)
                self.optimizer.zero_grad(set_to_none=True)
                torch.autograd.backward(self.scaler.scale(loss))
                self.scaler.step(self.optimizer)
                self.scaler.update()
                # Summed on the device: a .item() per step would wait for the accelerator every batch.
                # Each batch's mean weighs by what it averages over: samples, or labelled positions.
                labelled = _labelled(targets)
                loss_sum += loss.detach() * labelled
                weight += labelled
                count += len(targets)
                bar.update(len(targets))
        # Every rank reports (and checks) the loss of the whole epoch, not of its share.
        loss_sum, weight, total = distributed.sum_over_ranks(
            self.cluster, loss_sum, weight, torch.tensor(count, device=self.device)
        )
        if int(total.item()) == 0:
            raise DataError(
                f"{self.job.train_data.source.spec} [{self.config.split}] gave this process no samples"
            )
        return float(loss_sum.item()) / max(int(weight.item()), 1)

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
    model: nn.Module, loader: DataLoader[tuple[torch.Tensor, Any]], device: torch.device, precision: str
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on the held-out split.

    For a language model (logits ``[B, L, V]``, targets ``[B, L]``) both are per labelled
    position: the mean token cross-entropy (its exp is the perplexity) and the next-token
    accuracy; ignored positions (``-100``) count for neither.

    Raises:
        DataError: The split has no labelled position.
    """
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    with torch.inference_mode():
        for inputs, batch_targets in loader:
            with autocast(device, precision):
                output = model(inputs.to(device, non_blocking=True)).float()
            logits, targets = _flat_positions(output, batch_targets.to(device, non_blocking=True))
            loss_sum += F.cross_entropy(logits, targets, ignore_index=IGNORED_TARGET, reduction="sum")
            correct += (logits.argmax(dim=1) == targets).sum()
            count += _labelled(targets)
    labelled = int(count.item())
    if labelled == 0:
        raise DataError("the validation split has no labelled sample or position to evaluate on")
    return float(loss_sum.item()) / labelled, int(correct.item()) / labelled


def perplexity(mean_token_loss: float) -> float:
    """``exp`` of a mean token cross-entropy (inf when it overflows)."""
    return math.exp(mean_token_loss) if mean_token_loss < _MAX_EXP_ARGUMENT else math.inf


def _flat_positions(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[B, L, V]`` and targets ``[B, L]`` as ``[B * L, V]`` and ``[B * L]``; ``[B, C]`` and ``[B]`` as they are.

    Raises:
        DataError: The model's output does not match the targets' shape.
    """
    if logits.shape[:-1] != targets.shape or logits.dim() not in (2, 3):
        raise DataError(
            f"the model returned logits of shape {list(logits.shape)} for targets of shape "
            f"{list(targets.shape)}; expected [batch, classes] for one label per sample, or "
            "[batch, length, classes] for one per position"
        )
    return logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)


def _labelled(targets: torch.Tensor) -> torch.Tensor:
    """How many targets are labels (not :data:`~softlabels.format.schema.IGNORED_TARGET`), on their device."""
    return (targets != IGNORED_TARGET).sum()


def _optimizer(config: LoopConfig, model: nn.Module) -> Optimizer:
    if config.optimizer == "sgd":
        return SGD(
            model.parameters(),
            lr=config.learning_rate,
            momentum=defaults.SGD_MOMENTUM,
            nesterov=True,
            weight_decay=config.weight_decay,
        )
    return AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)


def _validation_generator(seed: int) -> torch.Generator:
    """The validation DataLoader's own generator, so that it never draws on the global random state."""
    generator = torch.Generator()
    generator.manual_seed(derive_seed(seed, 0, SeedStream.VALIDATION_LOADER))
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


def _progress_bar(job: _Job, epoch: int) -> Progress:
    # A bar on a terminal, a plain line every 30 s in a log file.
    return show_progress(
        len(job.train_data),
        desc=f"{job.kind} epoch {epoch + 1}/{job.config.epochs}",
        leave=False,
        enabled=job.config.progress,
    )


def _report(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)
