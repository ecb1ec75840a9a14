"""The settings of one generation job, validated before any work starts.

This module imports only :mod:`softlabels.defaults`, :mod:`softlabels.errors` and
:mod:`softlabels.format`, so a command line is checked before torch is imported.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from softlabels import defaults
from softlabels.errors import InvalidArgumentError
from softlabels.format.encoding_spec import EncodingSpec

if TYPE_CHECKING:
    from softlabels.format.views import ViewRecipe


@dataclass(frozen=True)
class GenerateConfig:
    """Everything ``softlabels generate`` takes; the field names mirror the CLI options.

    ``seq_len`` is the number of tokens per sample of a text dataset (``text:ROOT``; None elsewhere).
    ``encoding`` says how rows are stored (format, value dtype, k, samples, seed). The batch size
    and the device type decide the stored values too (batched kernels, TF32 and cuDNN round
    differently), so a resumed run must keep them; ``num_workers`` only loads data and may change, and
    ``scheduler`` (this process, ``local:N`` or a cluster's address) only says where shards are computed.

    ``views`` (V) stores V augmented views per sample, drawn by the recipe ``augment`` (the text
    form of :class:`~softlabels.format.views.ViewRecipe`; :data:`~softlabels.defaults.VIEW_RECIPE`
    when None) from a stream keyed by ``(view_seed, sample, view)``: a seed of its own, so the
    views stay the same whatever the encoding's sampling seed. ``augment`` and ``view_seed`` need ``views``.
    """

    dataset: str
    teacher: str
    temperature: float
    out: str
    split: str = defaults.TRAIN_SPLIT
    data_root: str | None = None
    seq_len: int | None = None
    teacher_weights: str | None = None
    random_weights: bool = False
    batch_size: int = defaults.GENERATE_BATCH_SIZE
    num_workers: int = defaults.NUM_WORKERS
    device: str = defaults.DEVICE
    precision: str = defaults.PRECISION
    encoding: EncodingSpec = field(default_factory=EncodingSpec)
    views: int | None = None
    augment: str | None = None
    view_seed: int = defaults.VIEW_SEED
    chunk_rows: int | None = None
    chunks_per_shard: int = defaults.CHUNKS_PER_SHARD
    scheduler: str = defaults.GENERATE_SCHEDULER
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
        if self.seq_len is not None:
            if isinstance(self.seq_len, bool) or not isinstance(self.seq_len, int):
                raise InvalidArgumentError(f"sequence length must be an integer, got {self.seq_len!r}")
            _require_positive("sequence length", self.seq_len)
        self._check_views()
        defaults.check_device(self.device)
        defaults.check_precision(self.precision)
        defaults.check_scheduler(self.scheduler, (defaults.IN_PROCESS,))
        if not isinstance(self.encoding, EncodingSpec):
            raise InvalidArgumentError(
                f"encoding must be an EncodingSpec (e.g. EncodingSpec.create('topk', k=5)), got {self.encoding!r}"
            )

    @property
    def view_recipe(self) -> ViewRecipe | None:
        """The recipe of the views, or None for a store of one unaugmented row per sample."""
        return None if self.views is None else _parse_recipe(self.augment or defaults.VIEW_RECIPE)

    def _check_views(self) -> None:
        if self.views is None:
            if self.augment is not None:
                raise InvalidArgumentError("an augmentation recipe needs a number of views (views)")
            return
        # Imported here: views draw with numpy, which a configuration without views never loads.
        from softlabels.format.views import MAX_VIEWS

        if (
            isinstance(self.views, bool)
            or not isinstance(self.views, int)
            or not 1 <= self.views <= MAX_VIEWS
        ):
            raise InvalidArgumentError(f"views must be an integer in [1, {MAX_VIEWS}], got {self.views!r}")
        if not 0 <= self.view_seed < 1 << 64:
            raise InvalidArgumentError(
                f"the view seed must be an integer in [0, 2**64), got {self.view_seed}"
            )
        if self.seq_len is not None:
            raise InvalidArgumentError("views augment images; a text dataset (sequence length) has none")
        if defaults.is_cluster(self.scheduler):
            raise InvalidArgumentError("views are generated in this process only, not on a cluster scheduler")
        _parse_recipe(self.augment or defaults.VIEW_RECIPE)  # a bad recipe fails before any work

    def to_json(self) -> dict[str, Any]:
        """The configuration as recorded in the store's provenance (without run-only switches)."""
        skip = {"scheduler", "overwrite", "progress", "command"}
        return {name: value for name, value in dataclasses.asdict(self).items() if name not in skip}


def _parse_recipe(text: str) -> ViewRecipe:
    from softlabels.format.views import ViewRecipe

    return ViewRecipe.parse(text)


def _require_positive(setting: str, value: int) -> None:
    if value < 1:
        raise InvalidArgumentError(f"{setting} must be >= 1, got {value}")
