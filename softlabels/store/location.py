"""Where a store lives: a local folder, an ``s3://`` prefix, or an ``http(s)://`` URL (read-only).

Remote stores go through zarr's :class:`~zarr.storage.FsspecStore` (s3fs for ``s3://``, aiohttp
for ``http(s)://``). fsspec was chosen over obstore because it keeps working in forked DataLoader
workers once each worker opens its own handle (as :class:`~softlabels.streaming.labels.StoreLabels`
does); obstore's runtime, started in the parent, hangs the forked workers' first read (measured:
every worker timed out).

Credentials and the endpoint come from the standard AWS variables and profiles
(``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL``, ...), read by botocore; nothing here
takes them as arguments, so they never reach a store's provenance. A location that carries
credentials itself (``s3://KEY:SECRET@bucket/...``) is refused for the same reason.

Object storage has no rename and no lock: :class:`RemoteFolder` offers the few operations the
writer builds its guarantees from instead (a conditional create of the group's metadata, reads of
single keys, removal with the group's metadata first).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from softlabels.errors import InvalidArgumentError, StoreWriteError

WRITABLE_SCHEMES = ("s3",)
READ_ONLY_SCHEMES = ("http", "https")
CLIENT_PACKAGES = {"s3": "s3fs", "http": "aiohttp", "https": "aiohttp"}
"""What fsspec needs installed for each scheme (the ``s3`` extra brings both)."""
GROUP_METADATA = "zarr.json"
UNFINISHED_MARKER = ".softlabels-unfinished"
"""An object a writer puts under a remote store's prefix while creating or removing the store: a
prefix without the group's metadata but with this marker holds the leftovers of an interrupted
creation or removal (never a store, never foreign data), so the next writer may clear it."""


def is_remote(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is a URL (``s3://``, ``https://``...) rather than a local path."""
    return "://" in os.fspath(location)


def check_location(location: str | os.PathLike[str]) -> str:
    """``location`` as a string, after refusing URL schemes not supported and URLs holding credentials.

    Raises:
        InvalidArgumentError: another scheme (``gs://``...), or credentials inside the URL.
    """
    where = os.fspath(location)
    if not is_remote(where):
        return where
    parts = urlsplit(where)
    if parts.scheme not in (*WRITABLE_SCHEMES, *READ_ONLY_SCHEMES):
        supported = ", ".join(f"{scheme}://" for scheme in (*WRITABLE_SCHEMES, *READ_ONLY_SCHEMES))
        raise InvalidArgumentError(
            f"cannot use {where}: '{parts.scheme}://' locations are not supported (a local folder, {supported})"
        )
    if "@" in parts.netloc:
        raise InvalidArgumentError(
            f"the location {parts.scheme}://...@{parts.netloc.rsplit('@', 1)[1]}{parts.path} holds credentials; "
            "give them through the AWS variables or profiles instead, so they are never recorded"
        )
    client = CLIENT_PACKAGES[parts.scheme]
    if importlib.util.find_spec(client) is None:
        raise InvalidArgumentError(
            f"cannot use {where}: {parts.scheme}:// locations need the {client} package "
            "(pip install 'softlabels[s3]')"
        )
    return where


def check_writable(location: str | os.PathLike[str]) -> str:
    """``location``, after refusing read-only (``http(s)://``) and unsupported locations.

    Raises:
        StoreWriteError: an ``http(s)://`` location.
        InvalidArgumentError: see :func:`check_location`.
    """
    where = check_location(location)
    if urlsplit(where).scheme in READ_ONLY_SCHEMES:
        raise StoreWriteError(
            f"cannot write a store at {where}: stores served over HTTP(S) are read-only "
            "(write to a local folder or an s3:// location and publish it from there)"
        )
    return where


def zarr_store(location: str, *, read_only: bool) -> Any:
    """What ``zarr.open_group`` takes for ``location``: the local path, or an FsspecStore for a URL."""
    where = check_location(location)
    if not is_remote(where):
        return where
    from zarr.storage import FsspecStore

    return FsspecStore.from_url(where, read_only=read_only)


def remote_bytes(location: str) -> int | None:
    """Total size of the objects under a remote location; None over HTTP(S), which cannot list."""
    if urlsplit(location).scheme in READ_ONLY_SCHEMES:
        return None
    return RemoteFolder(location).total_bytes()


class RemoteFolder:
    """The objects under one remote location, through fsspec's synchronous interface.

    Keys are relative to the location (``zarr.json``, ``logits/c/0/0``).
    """

    def __init__(self, location: str) -> None:
        import fsspec

        self.location = check_location(location).rstrip("/")
        self._fs, self._root = fsspec.core.url_to_fs(self.location)

    def _key(self, key: str) -> str:
        return f"{self._root}/{key}" if key else self._root

    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is none."""
        try:
            data: bytes = self._fs.cat_file(self._key(key))
        except FileNotFoundError:
            return None
        return data

    def write(self, key: str, data: bytes) -> None:
        self._fs.pipe_file(self._key(key), data)

    def create(self, key: str, data: bytes) -> bool:
        """Write the object only if there is none yet (a conditional write); False when one was there."""
        try:
            self._fs.pipe_file(self._key(key), data, mode="create")
        except FileExistsError:
            return False
        return True

    def remove(self, key: str) -> None:
        try:
            self._fs.rm_file(self._key(key))
        except FileNotFoundError:
            return

    def keys(self) -> list[str]:
        """Every key under the location (uncached: other writers change it)."""
        self._fs.invalidate_cache()
        found: list[str] = self._fs.find(self._root)
        prefix = f"{self._root}/"
        return [path[len(prefix) :] for path in found if path.startswith(prefix)]

    def holds_anything(self) -> bool:
        return bool(self.keys())

    def total_bytes(self) -> int:
        self._fs.invalidate_cache()
        return int(self._fs.du(self._root, total=True))

    def remove_all(self) -> None:
        """Remove every object, the group's metadata first: from the first deletion on, it is no store."""
        self.write(UNFINISHED_MARKER, b"")
        self.remove(GROUP_METADATA)
        doomed = [self._key(key) for key in self.keys() if key != UNFINISHED_MARKER]
        if doomed:
            self._fs.rm(doomed)  # batched deletes (1,000 keys a request on S3)

    def upload_folder(self, folder: Path) -> None:
        """Copy a local folder's files here, the group's metadata not among them (callers write it last)."""
        for path in sorted(folder.rglob("*")):
            key = path.relative_to(folder).as_posix()
            if path.is_file() and key != GROUP_METADATA:
                self.write(key, path.read_bytes())

    def subfolders(self, key: str) -> list[str]:
        """The keys of the folders directly below ``key`` (one listing request, no recursion)."""
        self._fs.invalidate_cache()
        try:
            entries: list[dict[str, Any]] = self._fs.ls(self._key(key), detail=True)
        except FileNotFoundError:  # object storage has no empty folders: nothing is below
            return []
        prefix = f"{self._root}/"
        return sorted(
            entry["name"].rstrip("/")[len(prefix) :]
            for entry in entries
            if entry.get("type") == "directory" and entry["name"].startswith(prefix)
        )
