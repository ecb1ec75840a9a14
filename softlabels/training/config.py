"""What a training run takes and what it produces, importable without torch.

The CLI builds (and so validates) these configs before it imports torch, so a bad setting is
reported at once. Defaults come from :mod:`softlabels.defaults`; messages name settings in plain
words (``epochs``, ``learning rate``), never as command-line flags.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softlabels import defaults
from softlabels.defaults import check_device, check_precision
from softlabels.errors import InvalidArgumentError, UnknownNameError
from softlabels.partitions import Partition, parse_partition
from softlabels.training.run_dir import RUN_FILES

__all__ = ["EpochMetrics", "LoopConfig", "TeacherConfig", "TrainConfig", "TrainSummary"]

# Where a run writes, how it reports, and where its inputs live: none of them decides what the run
# computes (the inputs are identified by their contents), so a moved run folder or data folder, or
# a path spelled another way, still resumes.
_NOT_SETTINGS = frozenset(
    {
        "out",
        "overwrite",
        "progress",
        "command",
        "dataset",
        "data_root",
        "labels",
        "student_weights",
        "teacher_weights",
    }
)


@dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """Settings shared by student and teacher training.

    ``lr`` None takes the optimizer's default (:data:`softlabels.defaults.LEARNING_RATES`).
    ``seq_len`` is the window length of a text dataset (``text:ROOT``), which needs one; other
    datasets take none.
    """

    dataset: str
    out: str
    epochs: int
    split: str = defaults.TRAIN_SPLIT
    val_split: str = defaults.VAL_SPLIT
    data_root: str | None = None
    batch_size: int = defaults.TRAIN_BATCH_SIZE
    optimizer: str = defaults.OPTIMIZER
    lr: float | None = None
    weight_decay: float = defaults.WEIGHT_DECAY
    num_workers: int = defaults.NUM_WORKERS
    device: str = defaults.DEVICE
    precision: str = defaults.PRECISION
    seed: int = defaults.SEED
    augment: bool = False
    seq_len: int | None = None
    overwrite: bool = False
    progress: bool = True
    command: str | None = None

    def __post_init__(self) -> None:
        _require_at_least("epochs", self.epochs, 1)
        if self.seq_len is not None:
            _require_at_least("sequence length", self.seq_len, 1)
        _require_at_least("batch size", self.batch_size, 1)
        _require_at_least("number of workers", self.num_workers, 0)
        _require_at_least("seed", self.seed, 0)
        if self.optimizer not in defaults.OPTIMIZERS:
            raise UnknownNameError(
                f"unknown optimizer '{self.optimizer}'; known: {', '.join(defaults.OPTIMIZERS)}"
            )
        if self.lr is not None and not _is_number(self.lr, above=0.0):
            raise InvalidArgumentError(f"learning rate must be a positive number, got {self.lr!r}")
        if not _is_number(self.weight_decay, at_least=0.0):
            raise InvalidArgumentError(f"weight decay must be a number >= 0, got {self.weight_decay!r}")
        if self.split == self.val_split:
            raise InvalidArgumentError(
                f"the validation split must be a held-out split, not the training split '{self.split}'"
            )
        check_device(self.device)
        check_precision(self.precision)

    @property
    def learning_rate(self) -> float:
        """``lr``, or the optimizer's default (0.05 for SGD, 1e-3 for AdamW)."""
        return self.lr if self.lr is not None else defaults.LEARNING_RATES[self.optimizer]

    def settings(self) -> dict[str, Any]:
        """The settings that decide the run's results, defaults resolved, as ``config.json`` records them.

        Paths are left out (their contents are identified separately) and so is where and how the
        run reports; ``lr`` is the learning rate actually used.
        """
        resolved = {
            item.name: getattr(self, item.name)
            for item in dataclasses.fields(self)
            if item.name not in _NOT_SETTINGS
        }
        resolved["lr"] = self.learning_rate
        if self.seq_len is None:
            # Left out rather than recorded as None, so runs made before sequence models still resume.
            del resolved["seq_len"]
        return resolved

    def locations(self) -> dict[str, Any]:
        """The paths and specs the run reads from, recorded for people but never compared on resume."""
        return {
            item.name: getattr(self, item.name)
            for item in dataclasses.fields(self)
            if item.name in _NOT_SETTINGS - {"out", "overwrite", "progress", "command"}
        }


@dataclass(frozen=True, kw_only=True)
class TrainConfig(LoopConfig):
    """Everything ``softlabels train-student`` takes.

    ``labels`` may be omitted only with ``no_kd``: the hard-label baseline then streams the raw
    data in the order a default store of it would have, so the comparison stays fair. ``alpha``
    defaults to :data:`softlabels.defaults.ALPHA` and ``temperature`` to the store's own.
    """

    student: str
    labels: str | None = None
    student_weights: str | None = None
    alpha: float | None = None
    temperature: float | None = None
    no_kd: bool = False
    buffer_chunks: int = defaults.BUFFER_CHUNKS
    memory_budget_mb: int = defaults.MEMORY_BUDGET_MB

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.no_kd:
            for setting, value in (("alpha", self.alpha), ("temperature", self.temperature)):
                if value is not None:
                    raise InvalidArgumentError(
                        f"{setting} has no effect when training on hard labels only (no_kd)"
                    )
        elif self.labels is None:
            raise InvalidArgumentError(
                "a label store (labels) is required unless the student trains on hard labels only (no_kd)"
            )
        if self.alpha is not None and not _is_number(self.alpha, at_least=0.0, at_most=1.0):
            raise InvalidArgumentError(f"alpha must be a number in [0, 1], got {self.alpha!r}")
        if self.temperature is not None and not _is_number(self.temperature, above=0.0):
            raise InvalidArgumentError(f"temperature must be a positive number, got {self.temperature!r}")
        _require_at_least("buffer chunks", self.buffer_chunks, 1)
        _require_at_least("memory budget (MB)", self.memory_budget_mb, 0)

    @property
    def distillation_weight(self) -> float:
        """``alpha``, or :data:`softlabels.defaults.ALPHA`."""
        return self.alpha if self.alpha is not None else defaults.ALPHA

    def settings(self) -> dict[str, Any]:
        """As :meth:`LoopConfig.settings`; ``alpha`` is the weight used (None without distillation).

        The temperature is resolved by the trainer, which knows the store's.
        """
        resolved = super().settings()
        resolved["alpha"] = None if self.no_kd else self.distillation_weight
        return resolved


@dataclass(frozen=True, kw_only=True)
class TeacherConfig(LoopConfig):
    """Everything ``softlabels train-teacher`` takes; ``teacher_weights`` starts from trained weights.

    ``partition`` (``"I/N"``) trains on part I of N disjoint parts of the training split (see
    :mod:`softlabels.partitions`): the teachers of a PATE ensemble each take one part.
    """

    teacher: str
    teacher_weights: str | None = None
    partition: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.partition_spec  # noqa: B018 - validates the partition now, before torch is imported

    @property
    def partition_spec(self) -> Partition | None:
        """``partition`` parsed, or None when the whole split is used."""
        return None if self.partition is None else parse_partition(self.partition)


@dataclass(frozen=True)
class EpochMetrics:
    """One row of ``metrics.json``; ``epoch`` counts from 1 and ``lr`` is the rate used in it.

    For a language model (targets per position) the losses are means per labelled token,
    ``val_accuracy`` is the next-token accuracy and ``val_perplexity`` is ``exp(val_loss)``; it is
    None for every other run.
    """

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    seconds: float
    lr: float
    val_perplexity: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The row of ``metrics.json``; ``val_perplexity`` only for language models."""
        row = dataclasses.asdict(self)
        if self.val_perplexity is None:
            del row["val_perplexity"]
        return row


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

    For a language model the accuracies are next-token accuracies, and :attr:`final_val_perplexity`
    and :attr:`best_val_perplexity` give the perplexities (None for every other run).
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
    def final_val_perplexity(self) -> float | None:
        """Validation perplexity after the last epoch; None unless the run trained a language model."""
        return self.metrics[-1].val_perplexity if self.metrics else None

    @property
    def best_val_perplexity(self) -> float | None:
        """Lowest validation perplexity over all epochs; None unless the run trained a language model."""
        values = [row.val_perplexity for row in self.metrics if row.val_perplexity is not None]
        return min(values, default=None)

    @property
    def final_weights(self) -> str:
        return str(Path(self.out) / RUN_FILES.final)

    @property
    def best_weights(self) -> str:
        return str(Path(self.out) / RUN_FILES.best)

    def to_json(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        document["metrics"] = [row.to_json() for row in self.metrics]
        document.update(final_weights=self.final_weights, best_weights=self.best_weights)
        if self.final_val_perplexity is not None:
            document.update(
                final_val_perplexity=self.final_val_perplexity, best_val_perplexity=self.best_val_perplexity
            )
        return document

    def describe(self) -> str:
        resumed = f", resumed after epoch {self.resumed_after}" if self.resumed_after else ""
        epochs = len(self.metrics)
        perplexity = self.final_val_perplexity
        if perplexity is not None:
            return (
                f"Final validation perplexity {perplexity:.2f} (best {self.best_val_perplexity:.2f}), "
                f"next-token accuracy {self.final_val_accuracy:.2%} after {epochs} epoch{'' if epochs == 1 else 's'} "
                f"({self.epochs_run} this run{resumed}, {self.seconds:.1f} s). "
                f"Weights: {self.final_weights}, best accuracy: {self.best_weights}."
            )
        return (
            f"Best validation accuracy {self.best_val_accuracy:.2%} (epoch {self.best_epoch}); final "
            f"{self.final_val_accuracy:.2%} after {epochs} epoch{'' if epochs == 1 else 's'} "
            f"({self.epochs_run} this run"
            f"{resumed}, {self.seconds:.1f} s). Weights: {self.final_weights}, best: {self.best_weights}."
        )


def _require_at_least(setting: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgumentError(f"{setting} must be an integer >= {minimum}, got {value!r}")


def _is_number(
    value: Any, *, above: float | None = None, at_least: float | None = None, at_most: float | None = None
) -> bool:
    """A finite real number (not a bool) within the given bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return (
        (above is None or value > above)
        and (at_least is None or value >= at_least)
        and (at_most is None or value <= at_most)
    )
