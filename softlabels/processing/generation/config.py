"""The settings of one generation job, validated before any work starts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from softlabels.errors import InvalidArgumentError
from softlabels.format.encodings import Encoding, build_encoding, format_options
from softlabels.runtime import check_precision


@dataclass(frozen=True)
class GenerateConfig:
    """Everything ``softlabels generate`` takes; the field names mirror the CLI options."""

    dataset: str
    teacher: str
    temperature: float
    out: str
    split: str = "train"
    data_root: str | None = None
    teacher_weights: str | None = None
    random_weights: bool = False
    batch_size: int = 256
    num_workers: int = 0
    device: str = "auto"
    precision: str = "fp32"
    dtype: str = "float16"
    label_format: str = "full"
    format_options: dict[str, Any] = field(default_factory=dict)
    chunk_rows: int | None = None
    chunks_per_shard: int = 1
    overwrite: bool = False
    progress: bool = True
    command: str | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise InvalidArgumentError(f"--temperature must be a positive number, got {self.temperature}")
        _require_positive("--batch-size", self.batch_size)
        _require_positive("--chunks-per-shard", self.chunks_per_shard)
        if self.num_workers < 0:
            raise InvalidArgumentError(f"--num-workers must be >= 0, got {self.num_workers}")
        if self.chunk_rows is not None:
            _require_positive("--chunk-rows", self.chunk_rows)
        check_precision(self.precision)
        # Refuse an unknown format, a bad dtype, k < 1 or S < 1 now, before a teacher is loaded
        # (k > C needs the dataset and is refused when the store's layout is made).
        self.encoding()

    def encoding(self) -> Encoding:
        """The row encoding ``--format``, ``--dtype`` and the format options ask for."""
        return build_encoding(self.label_format, dtype=self.dtype, **self.format_options)

    def to_json(self) -> dict[str, Any]:
        """The configuration as recorded in the store's provenance (without run-only switches)."""
        skip = {"overwrite", "progress", "command"}
        return {name: value for name, value in self.__dict__.items() if name not in skip}


def _require_positive(option: str, value: int) -> None:
    if value < 1:
        raise InvalidArgumentError(f"{option} must be >= 1, got {value}")


def format_options_for(label_format: str, *, k: int | None, samples: int | None, seed: int) -> dict[str, Any]:
    """Map the CLI's format switches onto the chosen encoding's parameters, refusing misplaced ones."""
    return format_options(label_format, k=k, samples=samples, seed=seed, option="--format")
