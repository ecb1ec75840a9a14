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


class IncompleteStoreError(StoreError, RuntimeError):
    """The store has shards that were never written."""


class StoreWriteError(StoreError, OSError):
    """The destination cannot be written."""


class TeacherOutputError(SoftLabelsError, ValueError):
    """The teacher produced outputs that cannot be stored (NaN/Inf, wrong width)."""


class RunDirectoryError(SoftLabelsError, OSError):
    """A training run folder is locked, foreign, made with another configuration, or damaged."""


class PipelineError(SoftLabelsError, ValueError):
    """A pipeline file is missing, malformed or invalid."""
