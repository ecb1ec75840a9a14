"""What a label store records about itself, as frozen dataclasses.

Everything here is stored as JSON in the Zarr group's attributes under the key
:data:`ATTRIBUTE_KEY`, so any Zarr v3 reader can read it without this package.

As zarr-python does with its own metadata, every field of every class goes through a ``parse_*``
function on construction (each class lists them in ``_PARSERS``), so a damaged or hand-edited
header is refused with a :class:`~softlabels.errors.StoreFormatError` that names the field
(``layout.shard_rows must be a positive integer, got 0``) instead of failing later with a
``ZeroDivisionError``. Fields added after the first stores were written have defaults, so those
stores still open.
"""

from __future__ import annotations

import dataclasses
import math
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from softlabels.errors import StoreFormatError
from softlabels.format.encoding_spec import EncodingSpec

FORMAT_NAME = "softlabels.labels"
FORMAT_VERSION = 2
"""The version writers write: 2 added label axes (``Layout.views``, ``Layout.positions``)."""
READABLE_VERSIONS = (1, 2)
"""Versions readers accept: a version-1 store is a version-2 store without label axes."""
LABEL_AXES_VERSION = 2
ATTRIBUTE_KEY = "softlabels"
TARGETS_ARRAY = "targets"
SHARDS_DONE_ARRAY = "shards_done"
SHARD_RUNS_ARRAY = "shard_runs"  # per shard, the run id (as an unsigned integer) of the run that wrote it
ANSWERED_ARRAY = "answered"  # per row, 1 when the row holds a label (only when layout.answered_mask)
VIEW_PARAMS_ARRAY = (
    "view_params"  # [N, V, 5] float32 crop box and flip of each view (when layout.view_recipe)
)
_RUN_ID = re.compile(r"[0-9a-f]{16}")
TARGET_CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 1 << 26
MIN_CHUNK_ROWS = 64
MAX_CHUNK_ROWS = 16384
IGNORED_TARGET = -100
"""The target of a position that carries no label (padding, or no next token), as in PyTorch's losses."""


def default_chunk_rows(bytes_per_row: int) -> int:
    """A power of two of rows so one chunk holds about 1 MiB uncompressed, within sane bounds.

    ``bytes_per_row`` counts a whole sample (every view and position of it). Chunks hold at least
    :data:`MIN_CHUNK_ROWS` rows unless that would pass :data:`MAX_CHUNK_BYTES` (full logits of a
    long token sequence over a large vocabulary take megabytes per sample); then as many as fit,
    at least one.
    """
    rows = max(1, TARGET_CHUNK_BYTES // max(1, bytes_per_row))
    fitting = max(1, MAX_CHUNK_BYTES // max(1, bytes_per_row))
    fewest = min(MIN_CHUNK_ROWS, 1 << (fitting.bit_length() - 1))
    return max(fewest, min(MAX_CHUNK_ROWS, 1 << (rows.bit_length() - 1)))


def new_run_id() -> str:
    """A fresh run id: 16 hex digits of a random, nonzero 64-bit number (zero marks an unwritten shard)."""
    return f"{secrets.randbits(64) | 1:016x}"


def run_token(run_id: str) -> int:
    """The number a shard's entry in :data:`SHARD_RUNS_ARRAY` holds once run ``run_id`` wrote it."""
    return int(run_id, 16)


Parser = Callable[[Any, str], Any]
_Header = TypeVar("_Header", bound="_HeaderPart")


def parse_str(value: Any, name: str) -> str:
    """``value`` if it is a string."""
    if not isinstance(value, str):
        raise StoreFormatError(f"{name} must be a string, got {_shown(value)}")
    return value


def parse_optional_str(value: Any, name: str) -> str | None:
    """``value`` if it is a string or None (JSON null)."""
    return None if value is None else parse_str(value, name)


def parse_positive_int(value: Any, name: str) -> int:
    """``value`` if it is an integer >= 1 (booleans are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StoreFormatError(f"{name} must be a positive integer, got {_shown(value)}")
    return value


def parse_optional_positive_int(value: Any, name: str) -> int | None:
    """``value`` if it is an integer >= 1, or None (JSON null, or the field left out)."""
    return None if value is None else parse_positive_int(value, name)


def parse_nonnegative_int(value: Any, name: str) -> int:
    """``value`` if it is an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StoreFormatError(f"{name} must be a non-negative integer, got {_shown(value)}")
    return value


def parse_optional_nonnegative_int(value: Any, name: str) -> int | None:
    return None if value is None else parse_nonnegative_int(value, name)


def parse_positive_float(value: Any, name: str) -> float:
    """``value`` as a float if it is a finite number > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise StoreFormatError(f"{name} must be a finite number > 0, got {_shown(value)}")
    return float(value)


def parse_bool(value: Any, name: str) -> bool:
    """``value`` if it is true or false (not a truthy string or number)."""
    if not isinstance(value, bool):
        raise StoreFormatError(f"{name} must be true or false, got {_shown(value)}")
    return value


def parse_run_id(value: Any, name: str) -> str | None:
    """``value`` if it is 16 lowercase hex digits (not all zero), or None in stores made before run ids."""
    if value is None:
        return None
    if not isinstance(value, str) or _RUN_ID.fullmatch(value) is None or run_token(value) == 0:
        raise StoreFormatError(f"{name} must be 16 hex digits, got {_shown(value)}")
    return value


def parse_mapping(value: Any, name: str) -> dict[str, Any]:
    """A copy of ``value`` if it is a JSON object (a mapping with string keys)."""
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise StoreFormatError(f"{name} must be a JSON object, got {_shown(value)}")
    return dict(value)


def parse_str_mapping(value: Any, name: str) -> dict[str, str]:
    """A copy of ``value`` if it is a JSON object whose values are strings."""
    mapping = parse_mapping(value, name)
    for key, item in mapping.items():
        parse_str(item, f"{name}.{key}")
    return mapping


def parse_str_tuple(value: Any, name: str) -> tuple[str, ...]:
    """``value`` as a tuple if it is a list of strings."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise StoreFormatError(f"{name} must be a list of strings, got {_shown(value)}")
    return tuple(parse_str(item, f"{name}[{index}]") for index, item in enumerate(value))


def parse_mapping_tuple(value: Any, name: str) -> tuple[dict[str, Any], ...]:
    """``value`` as a tuple if it is a list of JSON objects."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise StoreFormatError(f"{name} must be a list of JSON objects, got {_shown(value)}")
    return tuple(parse_mapping(item, f"{name}[{index}]") for index, item in enumerate(value))


def _shown(value: Any) -> str:
    """A short rendering of a bad value for messages (a damaged header may hold anything)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


class _HeaderPart:
    """Base of the header's frozen dataclasses: every field goes through its parser (``_PARSERS``) on construction."""

    _PATH: ClassVar[str]
    _PARSERS: ClassVar[dict[str, Parser]]

    def __post_init__(self) -> None:
        for name, parser in self._PARSERS.items():
            object.__setattr__(self, name, parser(getattr(self, name), _join(self._PATH, name)))


@dataclass(frozen=True)
class _Part:
    """The parser of a field that holds another header part (:func:`_build` builds it from its JSON object)."""

    part: type[_HeaderPart]

    def __call__(self, value: Any, name: str) -> Any:
        return _instance_of(self.part, value, name)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _build(cls: type[_Header], document: Any, path: str) -> _Header:
    """An instance of the header part ``cls`` from its JSON object at ``path``, parts within built likewise."""
    data = parse_mapping(document, path or "the header")
    known = {item.name: item for item in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        where = path or "the header"
        raise StoreFormatError(f"{where} has unknown fields {unknown} (written by a newer softlabels?)")
    for name, item in known.items():
        no_default = item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING
        if no_default and name not in data:
            raise StoreFormatError(f"{_join(path, name)} is missing")
    values = dict(data)
    for name, parser in cls._PARSERS.items():
        if isinstance(parser, _Part) and name in data:
            values[name] = _build(parser.part, data[name], _join(path, name))
    return cls(**values)


@dataclass(frozen=True)
class TeacherInfo(_HeaderPart):
    """The model whose outputs the store holds."""

    spec: str
    num_parameters: int
    weights_sha256: str | None
    weights_path: str | None
    parameters_sha256: str | None = None  # of the weights in memory: also covers random and plug-in teachers

    _PATH: ClassVar[str] = "provenance.teacher"
    _PARSERS: ClassVar[dict[str, Parser]] = {
        "spec": parse_str,
        "num_parameters": parse_nonnegative_int,
        "weights_sha256": parse_optional_str,
        "weights_path": parse_optional_str,
        "parameters_sha256": parse_optional_str,
    }


@dataclass(frozen=True)
class DatasetInfo(_HeaderPart):
    """The exact data the rows belong to, in row order."""

    spec: str
    split: str
    num_rows: int
    num_classes: int
    class_names: tuple[str, ...]
    fingerprint: str
    preprocessing: str | None = (
        None  # version of the input transform; None in stores made before it was recorded
    )

    _PATH: ClassVar[str] = "provenance.dataset"
    _PARSERS: ClassVar[dict[str, Parser]] = {
        "spec": parse_str,
        "split": parse_str,
        "num_rows": parse_positive_int,
        "num_classes": parse_positive_int,
        "class_names": parse_str_tuple,
        "fingerprint": parse_str,
        "preprocessing": parse_optional_str,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.class_names) != self.num_classes:
            raise StoreFormatError(
                f"{self._PATH}.class_names holds {len(self.class_names)} names for "
                f"{self._PATH}.num_classes = {self.num_classes}"
            )


@dataclass(frozen=True)
class Layout(_HeaderPart):
    """How rows are encoded and cut into chunks and shards."""

    encoding: str
    encoding_params: dict[str, Any]
    num_rows: int
    num_classes: int
    chunk_rows: int
    shard_rows: int
    # True: the store has an ANSWERED_ARRAY and only the rows it marks hold labels (private
    # labels, where refused and unasked queries carry none). Stores without it hold a label in
    # every row, and their header leaves the field out (see StoreHeader.to_json).
    answered_mask: bool = False
    # Label axes between the sample axis and a label row (format version 2): V augmented views
    # per sample and L labelled positions (tokens) per sample. None: the axis is absent, and the
    # header leaves the field out (see StoreHeader.to_json).
    views: int | None = None
    positions: int | None = None
    # How the views were drawn (format.views.ViewRecipe's text form) and the seed of their stream;
    # set with views by ``generate``, which then stores every view's parameters (VIEW_PARAMS_ARRAY)
    # so a student can replay them. None (and left out of the header) otherwise.
    view_recipe: str | None = None
    view_seed: int | None = None

    _PATH: ClassVar[str] = "layout"
    _PARSERS: ClassVar[dict[str, Parser]] = {
        "encoding": parse_str,
        "encoding_params": parse_mapping,
        "num_rows": parse_positive_int,
        "num_classes": parse_positive_int,
        "chunk_rows": parse_positive_int,
        "shard_rows": parse_positive_int,
        "answered_mask": parse_bool,
        "views": parse_optional_positive_int,
        "positions": parse_optional_positive_int,
        "view_recipe": parse_optional_str,
        "view_seed": parse_optional_nonnegative_int,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.view_recipe is None) != (self.view_seed is None) or (
            self.view_recipe is not None and self.views is None
        ):
            raise StoreFormatError(
                "layout.view_recipe and layout.view_seed go together, and only with layout.views"
            )
        # Shards are whole chunks, so that concurrent shard writers never share a chunk.
        if self.shard_rows % self.chunk_rows:
            raise StoreFormatError(
                f"layout.shard_rows ({self.shard_rows}) must be a multiple of layout.chunk_rows ({self.chunk_rows})"
            )

    @property
    def encoding_spec(self) -> EncodingSpec:
        """The recorded format as one value (``encoding`` and ``encoding_params`` together)."""
        return EncodingSpec.from_layout(self.encoding, self.encoding_params)

    @property
    def label_axes(self) -> tuple[int, ...]:
        """The axes between the sample axis and a label row: ``(V,)`` if views, then ``(L,)`` if positions.

        Every label field array has shape ``[N, *label_axes, *row_shape]``; ``()`` for plain stores.
        """
        return tuple(size for size in (self.views, self.positions) if size is not None)

    @property
    def label_axis_names(self) -> tuple[str, ...]:
        """Zarr dimension names of :attr:`label_axes` (``view``, ``position``)."""
        return tuple(name for name, size in (("view", self.views), ("position", self.positions)) if size)

    @property
    def cells_per_row(self) -> int:
        """Label rows (cells) per sample: the product of :attr:`label_axes` (1 for plain stores)."""
        return math.prod(self.label_axes)

    @property
    def target_axes(self) -> tuple[int, ...]:
        """The axes of one sample's targets: ``(L,)`` for per-position labels, ``()`` otherwise.

        Views do not change targets; ignored positions hold :data:`IGNORED_TARGET`.
        """
        return () if self.positions is None else (self.positions,)

    @property
    def num_shards(self) -> int:
        return -(-self.num_rows // self.shard_rows)

    @property
    def num_chunks(self) -> int:
        return -(-self.num_rows // self.chunk_rows)

    def shard_bounds(self, shard: int) -> tuple[int, int]:
        """Row range ``[start, stop)`` of ``shard``."""
        start = shard * self.shard_rows
        return start, min(start + self.shard_rows, self.num_rows)

    def chunk_bounds(self, chunk: int) -> tuple[int, int]:
        """Row range ``[start, stop)`` of ``chunk``."""
        start = chunk * self.chunk_rows
        return start, min(start + self.chunk_rows, self.num_rows)


@dataclass(frozen=True)
class Provenance(_HeaderPart):
    """Where the stored labels come from: enough to reproduce or to refuse them."""

    teacher: TeacherInfo
    dataset: DatasetInfo
    temperature: float
    precision: str
    command: str
    config: dict[str, Any]
    created: str
    versions: dict[str, str]
    derived_from: tuple[dict[str, Any], ...] = field(default=())
    compute: dict[str, Any] = field(
        default_factory=dict
    )  # settings besides the teacher that decide the values; empty in stores made before it was recorded

    _PATH: ClassVar[str] = "provenance"
    _PARSERS: ClassVar[dict[str, Parser]] = {
        "teacher": _Part(TeacherInfo),
        "dataset": _Part(DatasetInfo),
        "temperature": parse_positive_float,
        "precision": parse_str,
        "command": parse_str,
        "config": parse_mapping,
        "created": parse_str,
        "versions": parse_str_mapping,
        "derived_from": parse_mapping_tuple,
        "compute": parse_mapping,
    }

    def origin(self) -> str:
        """``generate`` for stores a teacher wrote, else the operation of the last derivation (``convert``)."""
        return str(self.derived_from[-1].get("operation", "derived")) if self.derived_from else "generate"


@dataclass(frozen=True)
class StoreHeader(_HeaderPart):
    """The whole attribute document of a store.

    ``run_id`` is made when the store is created (again when it is overwritten). Every shard records
    the run id of the run that wrote it (:data:`SHARD_RUNS_ARRAY`), and a store is complete only
    when all of them equal the header's, so a run that was overwritten, or lost a race, can never
    pass its rows off as its successor's. Stores made before run ids existed have None here and no
    per-shard record; they still open for reading.
    """

    layout: Layout
    provenance: Provenance
    complete: bool = False
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION
    run_id: str | None = None

    _PATH: ClassVar[str] = ""
    _PARSERS: ClassVar[dict[str, Parser]] = {
        "layout": _Part(Layout),
        "provenance": _Part(Provenance),
        "complete": parse_bool,
        "format": parse_str,
        "version": parse_positive_int,
        "run_id": parse_run_id,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        dataset = self.provenance.dataset
        for what, stored, labelled in (
            ("num_rows", self.layout.num_rows, dataset.num_rows),
            ("num_classes", self.layout.num_classes, dataset.num_classes),
        ):
            if stored != labelled:
                raise StoreFormatError(
                    f"layout.{what} ({stored}) differs from provenance.dataset.{what} ({labelled})"
                )
        if self.layout.label_axes and self.version < LABEL_AXES_VERSION:
            raise StoreFormatError(
                f"layout.views and layout.positions need store format version {LABEL_AXES_VERSION}, "
                f"but the header says version {self.version}"
            )

    def to_json(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        if not self.layout.answered_mask:  # stores of unmasked rows keep the header older readers know
            del document["layout"]["answered_mask"]
        for axis in ("views", "positions", "view_recipe", "view_seed"):
            if document["layout"][axis] is None:
                del document["layout"][axis]
        return document

    @classmethod
    def from_json(cls, document: Any, *, where: str) -> StoreHeader:
        """Parse the attribute document, refusing other formats, newer versions and damaged fields.

        Raises:
            StoreFormatError: naming ``where`` and, for a damaged header, the field at fault.
        """
        if not isinstance(document, Mapping) or document.get("format") != FORMAT_NAME:
            raise StoreFormatError(
                f"{where} is a Zarr group but not a softlabels store (no '{ATTRIBUTE_KEY}' "
                f"attribute with format '{FORMAT_NAME}')"
            )
        version = document.get("version")
        if isinstance(version, bool) or version not in READABLE_VERSIONS:
            readable = " and ".join(str(known) for known in READABLE_VERSIONS)
            raise StoreFormatError(
                f"{where} has store format version {_shown(version)}; this softlabels reads versions "
                f"{readable} (upgrade softlabels to read newer stores)"
            )
        try:
            return _build(cls, document, cls._PATH)
        except StoreFormatError as exc:
            raise StoreFormatError(f"{where} has a damaged softlabels header: {exc}") from exc


def _instance_of(cls: type[_HeaderPart], value: Any, name: str) -> _HeaderPart:
    if not isinstance(value, cls):
        raise StoreFormatError(f"{name} must be a {cls.__name__}, got {_shown(value)}")
    return value
