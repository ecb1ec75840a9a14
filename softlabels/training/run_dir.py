"""The files of a training run directory, written so that a kill at any moment leaves them usable.

A run directory holds ``config.json`` (what the run is), ``last.pt`` (the resume state after the
last complete epoch), ``metrics.json``, ``best.pt``/``final.pt`` (softlabels checkpoints) and
``summary.json``. Every file is written to a temporary sibling and renamed over its name, so a
reader (or a resumed run) sees either the old or the new file, never half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softlabels.errors import RunDirectoryError
from softlabels.files import write_bytes_atomically

__all__ = [
    "LOCK_NAME",
    "RUN_FILES",
    "RunFiles",
    "TrainState",
    "load_state",
    "locked_run_dir",
    "open_run_dir",
    "save_state",
    "write_atomically",
    "write_json",
]

LOCK_NAME = ".lock"
# Sections of config.json recorded for people, never compared on resume.
_UNCOMPARED = frozenset({"locations"})
RUN_FORMAT = "softlabels.run"
STATE_FORMAT = "softlabels.train-state"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class RunFiles:
    """The file names of a run directory."""

    config: str = "config.json"
    metrics: str = "metrics.json"
    last: str = "last.pt"
    best: str = "best.pt"
    final: str = "final.pt"
    summary: str = "summary.json"

    def names(self) -> tuple[str, ...]:
        return self.config, self.metrics, self.last, self.best, self.final, self.summary


RUN_FILES = RunFiles()


@dataclass
class TrainState:
    """Everything needed to continue a run exactly after its last complete epoch.

    Attributes:
        epochs_done: Complete epochs.
        model: The model's state_dict.
        optimizer: The optimizer's state_dict.
        scheduler: The learning-rate scheduler's state_dict.
        scaler: The fp16 gradient scaler's state_dict (empty when unused).
        metrics: One plain dict per complete epoch.
        best_accuracy: Best validation accuracy so far.
        best_epoch: Its epoch (1-based; 0 before any epoch).
        rng: Torch's CPU (and CUDA) generator states, so random augmentation continues unchanged.
    """

    epochs_done: int
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    metrics: list[dict[str, Any]]
    best_accuracy: float
    best_epoch: int
    rng: dict[str, Any]


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary sibling and a rename.

    Raises:
        RunDirectoryError: The file cannot be written (the run folder is not writable).
    """
    try:
        write_bytes_atomically(path, data)
    except OSError as exc:
        raise RunDirectoryError(f"cannot write {path}: {exc.strerror or exc}") from exc


def write_json(path: Path, document: Any) -> None:
    write_atomically(path, (json.dumps(document, indent=2) + "\n").encode())


@contextlib.contextmanager
def open_run_dir(out: Path, kind: str, description: dict[str, Any], *, overwrite: bool) -> Iterator[None]:
    """Hold ``out`` as this run's folder: checked, locked, and holding its ``config.json``.

    ``out`` is checked before anything is created in it (or as it), so a refused run leaves the
    folder exactly as it was; the checks are repeated under the lock, where a concurrent run
    cannot change the folder between check and write.

    Args:
        out: The run directory; created (with its parents) when missing.
        kind: ``student`` or ``teacher``.
        description: What makes the run what it is; JSON-able. Its ``locations`` section (where
            the inputs live) is recorded but never compared, so moved inputs still resume.
        overwrite: Start over: remove the run files of whatever run ``out`` holds.

    Raises:
        RunDirectoryError: ``out`` is a file, holds another run (or other files) and
            ``overwrite`` is off, is locked by another run, or cannot be written.
    """
    record = {"format": RUN_FORMAT, "version": FORMAT_VERSION, "kind": kind, **_normalised(description)}
    _check_can_hold(out, record, overwrite=overwrite)
    with locked_run_dir(out):
        _check_can_hold(out, record, overwrite=overwrite)
        _remove_stale_temporaries(out)
        if overwrite:
            _remove_run_files(out)
        write_json(out / RUN_FILES.config, record)  # on a resume, the same but for today's locations
        yield


@contextlib.contextmanager
def locked_run_dir(out: Path) -> Iterator[None]:
    """Create ``out`` if needed and hold its lock, so that two processes never write one run.

    The lock is an advisory ``flock`` on ``out/.lock``; the system drops it when the process
    ends, however it ends, so a killed run never leaves ``out`` locked.

    Raises:
        RunDirectoryError: ``out`` is a file or cannot be created, or another process holds it.
    """
    _check_is_folder(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / LOCK_NAME, "a")  # noqa: SIM115  (held open for the whole run)
    except OSError as exc:
        raise RunDirectoryError(f"cannot create the run folder {out}: {exc.strerror or exc}") from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RunDirectoryError(
                f"another softlabels run is writing to {out}; wait for it or choose another run folder"
            ) from exc
        yield


def save_state(path: Path, state: TrainState) -> None:
    """Write the resume state atomically."""
    import torch  # here, not at the top: the torch-free training configs import this module

    buffer = io.BytesIO()
    torch.save({"format": STATE_FORMAT, "version": FORMAT_VERSION, **state.__dict__}, buffer)
    write_atomically(path, buffer.getvalue())


def load_state(path: Path) -> TrainState | None:
    """Read the resume state, or None when the run has not finished an epoch yet.

    Raises:
        RunDirectoryError: The file exists but is not a resume state this version reads.
    """
    import torch

    if not path.exists():
        return None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        raise RunDirectoryError(
            f"cannot read the resume state {path} ({type(exc).__name__}); overwrite starts over"
        ) from exc
    if (
        not isinstance(loaded, dict)
        or loaded.get("format") != STATE_FORMAT
        or loaded.get("version") != FORMAT_VERSION
    ):
        raise RunDirectoryError(
            f"{path} is not a softlabels resume state of version {FORMAT_VERSION}; overwrite starts over"
        )
    del loaded["format"], loaded["version"]
    try:
        return TrainState(**loaded)
    except TypeError as exc:
        raise RunDirectoryError(f"{path} is a damaged resume state ({exc}); overwrite starts over") from exc


def _normalised(document: dict[str, Any]) -> dict[str, Any]:
    """The document as it reads back from JSON (tuples become lists), so comparisons are like for like."""
    normalised: dict[str, Any] = json.loads(json.dumps(document))
    return normalised


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunDirectoryError(f"{path} is unreadable ({exc}); overwrite starts over") from exc
    if not isinstance(record, dict) or record.get("format") != RUN_FORMAT:
        raise RunDirectoryError(f"{path} does not describe a softlabels run; choose another run folder")
    return record


def _check_is_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RunDirectoryError(f"the run folder {out} is a file, not a folder")


def _check_can_hold(out: Path, record: dict[str, Any], *, overwrite: bool) -> None:
    """Refuse ``out`` unless it is missing, empty, overwritten, or a run with this ``record``; reads only."""
    _check_is_folder(out)
    if overwrite or not out.exists():
        return
    config = out / RUN_FILES.config
    if config.exists():
        differences = _differences(_read_record(config), record)
        if differences:
            raise RunDirectoryError(
                f"{out} holds a run with other settings ({'; '.join(differences)}); start over "
                "there with overwrite, or choose another run folder"
            )
    elif any(entry.name != LOCK_NAME for entry in _entries(out)):
        raise RunDirectoryError(
            f"{out} is not empty and holds no softlabels run; choose another run folder "
            "(or overwrite, which writes the run files beside what is there)"
        )


def _entries(out: Path) -> list[Path]:
    try:
        return list(out.iterdir())
    except OSError as exc:
        raise RunDirectoryError(f"cannot list the run folder {out}: {exc.strerror or exc}") from exc


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    """Name each differing value by its dotted path (``config.lr``, ``inputs.labels.format``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            difference
            for key in sorted(set(old) | set(new))
            if not (path == "" and key in _UNCOMPARED)
            for difference in _differences(old.get(key), new.get(key), f"{path}{key}.")
        ]
    if old == new:
        return []
    return [f"{path.rstrip('.')}: run has {old!r}, now {new!r}"]


def _remove_run_files(out: Path) -> None:
    for name in RUN_FILES.names():
        _remove(out / name)


def _remove_stale_temporaries(out: Path) -> None:
    """Drop temporary files of writes that a kill interrupted (we hold the lock: none is live)."""
    for name in RUN_FILES.names():
        for temporary in out.glob(f".{name}.*.tmp"):
            _remove(temporary)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise RunDirectoryError(f"cannot remove {path}: {exc.strerror or exc}") from exc
