"""The one exception hierarchy of softlabels.

Every error a user can cause derives from :class:`SoftLabelsError` *and* from the builtin
exception that best describes it, so callers may catch either. The CLI turns any
``SoftLabelsError`` into a one-line message and a non-zero exit.
"""

from __future__ import annotations


class SoftLabelsError(Exception):
    """Base class of every error raised on purpose by softlabels."""


class InvalidArgumentError(SoftLabelsError, ValueError):
    """An argument, option or configuration value is out of its allowed range or form."""


class InvalidSettingError(InvalidArgumentError):
    """A named setting is missing, misplaced or out of range.

    ``setting`` names it (``format``, ``dtype``, ``k``, ``samples``, ``seed``) in the library's words,
    so that a command line can point at its own option.
    """

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


class Interrupted(SoftLabelsError, KeyboardInterrupt):
    """The user stopped a job (Ctrl-C); the message says what was kept and how to go on.

    It is still a :class:`KeyboardInterrupt`, so code that stops on Ctrl-C keeps stopping.
    ``kept`` says what survives in a few words (``2 of 4 shards in out.zarr``), for callers
    that run several jobs and report them together.
    """

    def __init__(self, message: str, kept: str = "") -> None:
        super().__init__(message)
        self.kept = kept


class UnknownNameError(SoftLabelsError, KeyError):
    """A dataset, model, format or other registry name is not known."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class PluginError(SoftLabelsError, ImportError):
    """A ``module:callable`` or ``file.py:callable`` plug-in cannot be loaded or misbehaves."""


class DataError(SoftLabelsError, ValueError):
    """Input data cannot be read or is not what the job expects."""


class WeightsError(SoftLabelsError, ValueError):
    """Model weights are missing, unreadable or do not fit the model."""


class StoreError(SoftLabelsError):
    """Base class of label-store problems."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """No label store exists at the given location."""


class StoreFormatError(StoreError, ValueError):
    """The location holds something that is not a readable softlabels store (or a newer version)."""


class StoreMismatchError(StoreError, ValueError):
    """An existing store was made from other data, another teacher or other settings."""


class StoreConflictError(StoreError, RuntimeError):
    """Another run replaced the store this run was writing (or wrote into it): this run stops."""


class IncompleteStoreError(StoreError, RuntimeError):
    """The store has shards that were never written."""


class StoreCorruptError(StoreError, ValueError):
    """Stored bytes cannot be decoded (a chunk fails its checksum or cannot be read); names the chunk key."""


class StoreWriteError(StoreError, OSError):
    """The destination cannot be written; names the path and the operating system's reason."""


class ClusterError(SoftLabelsError, RuntimeError):
    """A dask.distributed cluster cannot be reached, offers no worker fit for the job, or keeps losing workers."""


class TeacherOutputError(SoftLabelsError, ValueError):
    """The teacher produced outputs that cannot be stored (NaN/Inf, wrong width)."""


class RunDirectoryError(SoftLabelsError, OSError):
    """A training run folder is locked, foreign, made with another configuration, or damaged."""


class PipelineError(SoftLabelsError, ValueError):
    """A pipeline file is missing, malformed or invalid, or names inputs that do not exist.

    ``suggestions`` are ``key=value`` settings that would fix it (``dataset.root=/path/to/data``),
    so that a command line can show them as its own overrides.
    """

    def __init__(self, message: str, suggestions: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.suggestions = suggestions
