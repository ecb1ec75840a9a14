"""Small helpers every writing layer shares: atomic file writes and naming what differs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_bytes_atomically(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` through a fsynced temporary sibling and a rename: a kill never leaves half a file.

    Raises:
        OSError: the folder cannot be created or written (callers turn it into their own error).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(temporary, mode)  # mkstemp creates 0600; these files are meant to be shared
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def differences(
    have: Mapping[str, Any], want: Mapping[str, Any], *, have_name: str, want_name: str
) -> list[str]:
    """``"key: <have_name> has X, <want_name> has Y"`` for each key whose values differ."""
    return [
        f"{key}: {have_name} has {have.get(key)!r}, {want_name} has {want.get(key)!r}"
        for key in dict.fromkeys([*have, *want])
        if have.get(key) != want.get(key)
    ]


def folder_bytes(root: Path) -> int:
    """Total size of the files below ``root``."""
    return sum(entry.stat().st_size for entry in root.rglob("*") if entry.is_file())
