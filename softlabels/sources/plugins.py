"""Resolution of ``module:callable`` and ``path/to/file.py:callable`` plug-in references."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from softlabels.errors import PluginError

__all__ = ["first_line", "is_plugin_ref", "load_callable", "module_name_for_file"]


def first_line(exc: BaseException) -> str:
    """Describe ``exc`` as ``TypeName: first line of its message`` for one-line error messages."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def is_plugin_ref(ref: str) -> bool:
    """Tell whether ``ref`` has the ``target:attribute`` form of a plug-in reference."""
    target, sep, attribute = ref.rpartition(":")
    return bool(sep and target and attribute)


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
    target, sep, attribute = ref.rpartition(":")
    if not (sep and target and attribute):
        raise PluginError(f"{what} plug-in '{ref}' must look like 'module:callable' or 'file.py:callable'")
    module = _import_file(target, ref, what) if _is_file_target(target) else _import_module(target, ref, what)
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"{what} plug-in '{ref}': '{target}' has no attribute '{attribute}'") from None
    if not callable(obj):
        raise PluginError(f"{what} plug-in '{ref}': '{attribute}' is a {type(obj).__name__}, not a callable")
    return obj  # type: ignore[no-any-return]


def _is_file_target(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def _import_module(name: str, ref: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # any failure inside foreign code is the plug-in's problem
        raise PluginError(f"{what} plug-in '{ref}': cannot import '{name}' ({first_line(exc)})") from exc


def _import_file(target: str, ref: str, what: str) -> ModuleType:
    path = Path(target).resolve()
    if not path.is_file():
        raise PluginError(f"{what} plug-in '{ref}': file '{target}' does not exist")
    name = module_name_for_file(path)
    # Reusing the registered module keeps classes identical across calls, so objects pickled for
    # DataLoader workers unpickle to the same types.
    existing = sys.modules.get(name)
    if existing is not None:
        return existing
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"{what} plug-in '{ref}': '{target}' cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise PluginError(f"{what} plug-in '{ref}': importing '{target}' failed ({first_line(exc)})") from exc
    return module


def module_name_for_file(path: Path) -> str:
    """Derive a stable, unique module name for the plug-in file at absolute ``path``.

    The same file always gets the same name (so pickles made in one process resolve in another that
    loaded the same file), and two files with the same stem never collide.
    """
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    stem = re.sub(r"\W", "_", path.stem)
    return f"softlabels_plugin_{stem}_{digest}"
