"""Resolution of ``module:callable`` and ``path/to/file.py:callable`` plug-in references.

A ``file.py`` plug-in is imported under a module name that encodes its absolute path
(``softlabels_plugin_<stem>_<base32 of the path>``), and a finder on ``sys.meta_path`` turns
such names back into the file. Objects defined in the file therefore pickle by reference and
unpickle in any process that imports softlabels, including spawned DataLoader workers.
"""

from __future__ import annotations

import base64
import importlib
import importlib.abc
import importlib.util
import re
import sys
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

from softlabels.errors import PluginError

__all__ = ["first_line", "is_plugin_ref", "load_callable", "module_name_for_file"]

_MODULE_PREFIX = "softlabels_plugin_"


def first_line(exc: BaseException) -> str:
    """Describe ``exc`` as ``TypeName: first line of its message`` for one-line error messages."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def is_plugin_ref(ref: str) -> bool:
    """Tell whether ``ref`` has the ``target:attribute`` form of a plug-in reference."""
    target, separator, attribute = ref.rpartition(":")
    return bool(separator and target and attribute)


def load_callable(ref: str, *, what: str) -> Callable[..., Any]:
    """Import the callable a plug-in reference names.

    Args:
        ref: ``package.module:name`` (imported from ``sys.path``) or ``path/to/file.py:name``
            (a path relative to the current directory). ``name`` may be dotted
            (``module:Class.factory``).
        what: What the plug-in provides (``"dataset"``, ``"model"``), used in error messages.

    Returns:
        The callable object.

    Raises:
        PluginError: The reference is malformed, the module cannot be imported, or the attribute
            is missing or not callable.
    """
    # rpartition keeps Windows drive letters ("C:\\x\\f.py:fn") inside the target.
    target, separator, attribute = ref.rpartition(":")
    if not (separator and target and attribute):
        raise PluginError(f"{what} plug-in '{ref}' must look like 'module:callable' or 'file.py:callable'")
    if _is_file_target(target):
        path = Path(target).resolve()
        if not path.is_file():
            raise PluginError(f"{what} plug-in '{ref}': file '{target}' does not exist")
        module_name = module_name_for_file(path)
    else:
        module_name = target
    module = _import(module_name, ref, what)
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"{what} plug-in '{ref}': '{target}' has no attribute '{attribute}'") from None
    if not callable(obj):
        raise PluginError(f"{what} plug-in '{ref}': '{attribute}' is a {type(obj).__name__}, not a callable")
    return obj  # type: ignore[no-any-return]


def module_name_for_file(path: Path) -> str:
    """The module name under which the plug-in file at absolute ``path`` is imported.

    The name is stable (same file, same name, in every process) and reversible (see
    :class:`PluginFileFinder`).
    """
    encoded = base64.b32encode(str(path).encode("utf-8")).decode("ascii").rstrip("=").lower()
    stem = re.sub(r"\W", "_", path.stem)
    return f"{_MODULE_PREFIX}{stem}_{encoded}"


class PluginFileFinder(importlib.abc.MetaPathFinder):
    """Finds the file behind a module name made by :func:`module_name_for_file`."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        """Return a spec loading the encoded file, or None for any other module name."""
        if not fullname.startswith(_MODULE_PREFIX):
            return None
        encoded = fullname.rpartition("_")[2].upper()
        try:
            file_path = base64.b32decode(encoded + "=" * (-len(encoded) % 8)).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
        return importlib.util.spec_from_file_location(fullname, file_path)


def _is_file_target(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def _import(module_name: str, ref: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # any failure inside foreign code is the plug-in's problem
        raise PluginError(f"{what} plug-in '{ref}': importing it failed ({first_line(exc)})") from exc


# Installed on import: unpickling any object of this package (e.g. a plug-in dataset wrapper in a
# spawned worker) imports this module before the plug-in's own classes are looked up.
if not any(isinstance(finder, PluginFileFinder) for finder in sys.meta_path):
    sys.meta_path.append(PluginFileFinder())
