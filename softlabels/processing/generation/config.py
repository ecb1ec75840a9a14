"""The settings of one generation job, validated before any work starts.

This module imports only :mod:`softlabels.defaults`, :mod:`softlabels.errors` and
:mod:`softlabels.format`, so a command line is checked before torch is imported.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from softlabels import defaults
from softlabels.errors import InvalidArgumentError
from softlabels.format.encoding_spec import EncodingSpec


@dataclass(frozen=True)
class GenerateConfig:
    """Everything ``softlabels generate`` takes; the field names mirror the CLI options.

    ``encoding`` says how rows are stored (format, value dtype, k, samples, seed). The batch size
    and the device type decide the stored values too (batched kernels, TF32 and cuDNN round
    differently), so a resumed run must keep them; ``num_workers`` only loads data and may change.
    """

    dataset: str
    teacher: str
    temperature: float
    out: str
    split: str = defaults.TRAIN_SPLIT
    data_root: str | None = None
    teacher_weights: str | None = None
    random_weights: bool = False
    batch_size: int = defaults.GENERATE_BATCH_SIZE
    num_workers: int = defaults.NUM_WORKERS
    device: str = defaults.DEVICE
    precision: str = defaults.PRECISION
    encoding: EncodingSpec = field(default_factory=EncodingSpec)
    chunk_rows: int | None = None
    chunks_per_shard: int = defaults.CHUNKS_PER_SHARD
    overwrite: bool = False
    progress: bool = True
    command: str | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise InvalidArgumentError(f"temperature must be a positive number, got {self.temperature}")
        _require_positive("batch size", self.batch_size)
        _require_positive("chunks per shard", self.chunks_per_shard)
        if self.num_workers < 0:
            raise InvalidArgumentError(f"number of workers must be >= 0, got {self.num_workers}")
        if self.chunk_rows is not None:
            _require_positive("chunk rows", self.chunk_rows)
        defaults.check_device(self.device)
        defaults.check_precision(self.precision)
        if not isinstance(self.encoding, EncodingSpec):
            raise InvalidArgumentError(
                f"encoding must be an EncodingSpec (e.g. EncodingSpec.create('topk', k=5)), got {self.encoding!r}"
            )

    def to_json(self) -> dict[str, Any]:
        """The configuration as recorded in the store's provenance (without run-only switches)."""
        skip = {"overwrite", "progress", "command"}
        return {name: value for name, value in dataclasses.asdict(self).items() if name not in skip}


def _require_positive(setting: str, value: int) -> None:
    if value < 1:
        raise InvalidArgumentError(f"{setting} must be >= 1, got {value}")
