"""A catalogue of the label stores under a folder (``softlabels ls``): what a team finds in a shared place.

Folders are searched recursively; a store (a Zarr group whose attributes hold a softlabels header)
is listed and not searched further, and so is any other Zarr node (never a store's parent). Hidden
folders are skipped: writers stage new stores and removals there (``.NAME.creating-*``), so
nothing half-made is ever listed. A store whose header or shard records cannot be read is
listed with the reason, so one damaged store never hides the others.

An ``s3://`` prefix is searched the same way, one listing request per folder level (a store's
chunks are never listed); a store being created there has no group metadata yet and is not
listed. HTTP(S) servers offer no listing, so ``http(s)://`` locations cannot be catalogued.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from softlabels.errors import InvalidArgumentError, SoftLabelsError, StoreNotFoundError
from softlabels.format.schema import ATTRIBUTE_KEY, FORMAT_NAME
from softlabels.store.location import READ_ONLY_SCHEMES, RemoteFolder, check_location, is_remote
from softlabels.store.reader import LabelStore, open_store

FINGERPRINT_SHOWN = 12
"""Hex digits of the dataset fingerprint a listing shows (enough to tell data apart at a glance)."""
ZARR_METADATA = "zarr.json"


@dataclass(frozen=True)
class CatalogueEntry:
    """One store of a listing; a damaged one has only ``name``, ``location`` and ``problem``."""

    name: str
    location: str
    teacher: str | None = None
    dataset: str | None = None
    split: str | None = None
    fingerprint: str | None = None
    temperature: float | None = None
    format: str | None = None
    rows: int | None = None
    classes: int | None = None
    bytes: int | None = None
    complete: bool | None = None
    created: str | None = None
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def list_stores(location: str | os.PathLike[str]) -> list[CatalogueEntry]:
    """Every label store under the local folder or ``s3://`` prefix ``location`` (or ``location`` itself), sorted by name.

    Raises:
        InvalidArgumentError: ``location`` is an ``http(s)://`` URL (HTTP offers no listing) or of
            an unsupported scheme.
        StoreNotFoundError: no folder is at ``location`` (an empty or missing ``s3://`` prefix lists nothing).
    """
    where = check_location(location)
    if is_remote(where):
        return _remote_stores(where)
    root = Path(where)
    if not root.is_dir():
        raise StoreNotFoundError(f"no folder at {where}")
    if _is_zarr_node(root):
        found = [_entry(root, root.name or where)]
    else:
        found = [_entry(folder, folder.relative_to(root).as_posix()) for folder in _zarr_nodes(root)]
    return sorted((entry for entry in found if entry is not None), key=lambda entry: entry.name)


def _zarr_nodes(root: Path) -> list[Path]:
    """Visible folders below ``root`` that are Zarr nodes, not searching inside them."""
    nodes = []
    for folder, subfolders, _ in os.walk(root):
        here = Path(folder)
        kept = []
        for name in sorted(subfolders):
            if name.startswith("."):  # staging and removal folders of writers, and other hidden ones
                continue
            if _is_zarr_node(here / name):
                nodes.append(here / name)
            else:
                kept.append(name)
        subfolders[:] = kept
    return nodes


def _remote_stores(location: str) -> list[CatalogueEntry]:
    if urlsplit(location).scheme in READ_ONLY_SCHEMES:
        raise InvalidArgumentError(
            f"cannot list {location}: HTTP(S) servers offer no listing (list the s3:// or local location it is published from)"
        )
    root = RemoteFolder(location)
    if root.read(ZARR_METADATA) is not None:
        found = [_remote_entry(root.location, root.read(ZARR_METADATA), root.location.rsplit("/", 1)[-1])]
    else:
        found = [
            _remote_entry(f"{root.location}/{key}", root.read(f"{key}/{ZARR_METADATA}"), key)
            for key in _remote_zarr_nodes(root)
        ]
    return sorted((entry for entry in found if entry is not None), key=lambda entry: entry.name)


def _remote_zarr_nodes(root: RemoteFolder) -> list[str]:
    """Keys of the visible folders below ``root`` that hold a ``zarr.json``, not searching inside them."""
    nodes, pending = [], [""]
    while pending:
        for key in root.subfolders(pending.pop()):
            if key.rsplit("/", 1)[-1].startswith("."):
                continue
            if root.read(f"{key}/{ZARR_METADATA}") is not None:
                nodes.append(key)
            else:
                pending.append(key)
    return nodes


def _remote_entry(location: str, metadata: bytes | None, name: str) -> CatalogueEntry | None:
    if not _metadata_claims_a_store(metadata):
        return None
    return _opened_entry(location, name)


def _is_zarr_node(folder: Path) -> bool:
    return (folder / ZARR_METADATA).is_file()


def _entry(folder: Path, name: str) -> CatalogueEntry | None:
    """The folder's entry; None when it is a readable Zarr node that is not a softlabels store."""
    location = str(folder)
    if not _claims_to_be_a_store(folder):
        return None
    return _opened_entry(location, name)


def _opened_entry(location: str, name: str) -> CatalogueEntry:
    try:
        store = open_store(location, allow_incomplete=True)
        return _described(store, name)
    except SoftLabelsError as exc:
        return CatalogueEntry(name, location, problem=_without_location(str(exc), location))


def _claims_to_be_a_store(folder: Path) -> bool:
    """Whether the group's attributes hold a softlabels header, or its metadata is too damaged to tell."""
    try:
        raw = (folder / ZARR_METADATA).read_bytes()
    except OSError:
        return True  # unreadable: list it as damaged rather than hide it
    return _metadata_claims_a_store(raw)


def _metadata_claims_a_store(raw: bytes | None) -> bool:
    """Whether a ``zarr.json``'s attributes hold a softlabels header, or it is too damaged to tell."""
    try:
        metadata = json.loads(raw or b"")
    except ValueError:
        return True
    attributes = metadata.get("attributes") if isinstance(metadata, dict) else None
    header = attributes.get(ATTRIBUTE_KEY) if isinstance(attributes, dict) else None
    return isinstance(header, dict) and header.get("format") == FORMAT_NAME


def _described(store: LabelStore, name: str) -> CatalogueEntry:
    provenance = store.provenance
    return CatalogueEntry(
        name=name,
        location=store.location,
        teacher=provenance.teacher.spec,
        dataset=provenance.dataset.spec,
        split=provenance.dataset.split,
        fingerprint=provenance.dataset.fingerprint[:FINGERPRINT_SHOWN],
        temperature=store.temperature,
        format=store.layout.encoding_spec.describe(),
        rows=store.num_rows,
        classes=store.num_classes,
        bytes=store.bytes_on_disk(),
        complete=store.complete,
        created=provenance.created,
    )


def _without_location(message: str, location: str) -> str:
    """A store error's message without the location it starts with (the listing shows the name)."""
    for prefix in (f"{location}: ", f"{location} "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


COLUMNS = (
    "name",
    "teacher",
    "data",
    "fingerprint",
    "T",
    "format",
    "rows",
    "classes",
    "size",
    "complete",
    "created",
)


def format_catalogue(entries: list[CatalogueEntry], location: str) -> str:
    """A table with one row per store (a damaged store: its name and why it cannot be read)."""
    if not entries:
        return f"no label stores under {location}"
    rows = [COLUMNS, *(_cells(entry) for entry in entries if entry.problem is None)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.extend(f"{entry.name}  DAMAGED: {entry.problem}" for entry in entries if entry.problem is not None)
    return "\n".join(lines)


def _cells(entry: CatalogueEntry) -> tuple[str, ...]:
    return (
        entry.name,
        str(entry.teacher),
        f"{entry.dataset} [{entry.split}]",
        str(entry.fingerprint),
        f"{entry.temperature:g}" if entry.temperature is not None else "",
        str(entry.format),
        str(entry.rows),
        str(entry.classes),
        _size(entry.bytes),
        "yes" if entry.complete else "NO",
        str(entry.created),
    )


def _size(size: int | None) -> str:
    if size is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
