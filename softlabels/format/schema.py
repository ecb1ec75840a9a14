"""What a label store records about itself, as frozen dataclasses.

Everything here is stored as JSON in the Zarr group's attributes under the key
:data:`ATTRIBUTE_KEY`, so any Zarr v3 reader can read it without this package.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from softlabels.errors import StoreFormatError

FORMAT_NAME = "softlabels.labels"
FORMAT_VERSION = 1
ATTRIBUTE_KEY = "softlabels"
TARGETS_ARRAY = "targets"
SHARDS_DONE_ARRAY = "shards_done"
TARGET_CHUNK_BYTES = 1 << 20
MIN_CHUNK_ROWS = 64
MAX_CHUNK_ROWS = 16384


def default_chunk_rows(bytes_per_row: int) -> int:
    """A power of two of rows so one chunk holds about 1 MiB uncompressed, within sane bounds."""
    rows = max(1, TARGET_CHUNK_BYTES // max(1, bytes_per_row))
    return max(MIN_CHUNK_ROWS, min(MAX_CHUNK_ROWS, 1 << (rows.bit_length() - 1)))


@dataclass(frozen=True)
class TeacherInfo:
    """The model whose outputs the store holds."""

    spec: str
    num_parameters: int
    weights_sha256: str | None
    weights_path: str | None
    parameters_sha256: str | None = None  # of the weights in memory: also covers random and plug-in teachers


@dataclass(frozen=True)
class DatasetInfo:
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


@dataclass(frozen=True)
class Layout:
    """How rows are encoded and cut into chunks and shards."""

    encoding: str
    encoding_params: dict[str, Any]
    num_rows: int
    num_classes: int
    chunk_rows: int
    shard_rows: int

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
class Provenance:
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
    )  # settings besides the teacher that decide the values

    def origin(self) -> str:
        """``generate`` for stores a teacher wrote, else the operation of the last derivation (``convert``)."""
        return str(self.derived_from[-1].get("operation", "derived")) if self.derived_from else "generate"


@dataclass(frozen=True)
class StoreHeader:
    """The whole attribute document of a store."""

    layout: Layout
    provenance: Provenance
    complete: bool = False
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, document: Any, *, where: str) -> StoreHeader:
        """Parse the attribute document, refusing other formats and newer versions."""
        if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
            raise StoreFormatError(
                f"{where} is a Zarr group but not a softlabels store (no '{ATTRIBUTE_KEY}' "
                f"attribute with format '{FORMAT_NAME}')"
            )
        version = document.get("version")
        if version != FORMAT_VERSION:
            raise StoreFormatError(
                f"{where} has store format version {version}; this softlabels reads version "
                f"{FORMAT_VERSION} (upgrade softlabels to read newer stores)"
            )
        try:
            provenance = dict(document["provenance"])
            provenance["teacher"] = TeacherInfo(**provenance["teacher"])
            dataset = dict(provenance["dataset"])
            dataset["class_names"] = tuple(dataset["class_names"])
            provenance["dataset"] = DatasetInfo(**dataset)
            provenance["derived_from"] = tuple(provenance.get("derived_from", ()))
            return cls(
                layout=Layout(**document["layout"]),
                provenance=Provenance(**provenance),
                complete=bool(document["complete"]),
                format=document["format"],
                version=version,
            )
        except (KeyError, TypeError) as exc:
            raise StoreFormatError(f"{where} has a damaged softlabels header ({exc})") from exc
