"""Model weights on disk: softlabels checkpoints and plain ``state_dict`` files."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from softlabels.errors import WeightsError
from softlabels.files import write_bytes_atomically
from softlabels.sources.plugins import first_line

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "apply_weights", "read_weights", "save_checkpoint"]

CHECKPOINT_FORMAT = "softlabels.checkpoint"
CHECKPOINT_VERSION = 1
WEIGHTS_FILE_FORMS = "a PyTorch state_dict or a softlabels checkpoint saved with torch.save"

_ZIP_MAGIC = b"PK\x03\x04"
_SNIFF_BYTES = 4096

# Prefixes that wrappers add to every key (torch.compile, DataParallel/DistributedDataParallel).
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")

StateDict = dict[str, torch.Tensor]


def save_checkpoint(
    path: str | os.PathLike[str],
    module: nn.Module,
    *,
    model_spec: str,
    num_classes: int,
    in_channels: int | None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Write ``module``'s weights as a softlabels checkpoint, atomically.

    The file holds ``{"format", "version", "model_spec", "num_classes", "in_channels",
    "state_dict", "extra"}`` and is written to a temporary file in the same folder, then renamed
    over ``path``, so readers never see a partial checkpoint.

    Args:
        path: Destination file; missing parent folders are created.
        module: The model (a ``torch.compile`` wrapper is unwrapped).
        model_spec: The spec that rebuilds the architecture (``cnn``, ``resnet18``, ...).
        num_classes: Output classes of the model.
        in_channels: Input channels of an image model; None for other inputs (token ids, features).
        extra: Plain metadata (str, int, float, bool, None, lists/dicts of those, tensors), e.g.
            training settings and accuracy; it must load under ``torch.load(weights_only=True)``.

    Returns:
        sha256 hex of the written file.

    Raises:
        WeightsError: ``extra`` holds other objects, or the file cannot be written.
    """
    extra_dict = dict(extra or {})
    _check_plain(extra_dict, "extra")
    unwrapped = getattr(module, "_orig_mod", module)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_spec": model_spec,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "state_dict": {key: value.detach().cpu() for key, value in unwrapped.state_dict().items()},
        "extra": extra_dict,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    _write_atomically(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def read_weights(path: str | os.PathLike[str]) -> tuple[StateDict, str]:
    """Load a state_dict from a softlabels checkpoint or a plain ``state_dict`` file.

    Loading uses ``weights_only=True`` onto the CPU, so no code in the file is executed.

    Returns:
        ``(state_dict, sha256 hex of the file)``.

    Raises:
        WeightsError: The file is missing or unreadable, is neither form, or is a newer checkpoint
            version.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise WeightsError(f"cannot read weights '{path}': {exc.strerror or first_line(exc)}") from exc
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or damaged files
        raise WeightsError(
            f"cannot load weights '{path}': a weights file must be {WEIGHTS_FILE_FORMS}; "
            f"found {_describe_unloadable(data, exc)}"
        ) from exc
    return _state_dict_of(loaded, str(path)), hashlib.sha256(data).hexdigest()


def apply_weights(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str, model_spec: str
) -> None:
    """Load ``state_dict`` into ``module`` after checking keys and shapes match exactly.

    Args:
        module: The model to fill.
        state_dict: The weights.
        source: Where the weights came from (a path), for messages.
        model_spec: The model's spec, for messages.

    Raises:
        WeightsError: Keys are missing or surplus, or a tensor's shape differs; the message names
            the first offending key.
    """
    expected = module.state_dict()
    weights = _without_wrapper_prefix(dict(state_dict), expected)
    missing = [key for key in expected if key not in weights]
    if missing:
        raise WeightsError(
            f"weights '{source}' do not fit model '{model_spec}': {len(missing)} key(s) missing, first '{missing[0]}'"
        )
    surplus = [key for key in weights if key not in expected]
    if surplus:
        raise WeightsError(
            f"weights '{source}' do not fit model '{model_spec}': "
            f"{len(surplus)} unexpected key(s), first '{surplus[0]}'"
        )
    for key, tensor in expected.items():
        if weights[key].shape != tensor.shape:
            raise WeightsError(
                f"weights '{source}' do not fit model '{model_spec}': '{key}' has shape "
                f"{list(weights[key].shape)} in the file but {list(tensor.shape)} in the model"
            )
    module.load_state_dict(weights)


def _state_dict_of(loaded: Any, path: str) -> StateDict:
    if isinstance(loaded, dict) and loaded.get("format") == CHECKPOINT_FORMAT:
        version = loaded.get("version")
        if not isinstance(version, int) or version > CHECKPOINT_VERSION:
            raise WeightsError(
                f"checkpoint '{path}' has version {version!r}; this softlabels reads up to {CHECKPOINT_VERSION}"
            )
        loaded = loaded.get("state_dict")
    if not _is_state_dict(loaded):
        raise WeightsError(
            f"'{path}' is neither a state_dict nor a softlabels checkpoint: a weights file must be "
            f"{WEIGHTS_FILE_FORMS}; found {_describe_loaded(loaded)}"
        )
    return dict(loaded)


def _describe_unloadable(data: bytes, error: Exception) -> str:
    """What a file that torch.load refused looks like, in a few words."""
    if not data:
        return "an empty file"
    if data.startswith(_ZIP_MAGIC):  # torch.save's own container, holding something it will not load safely
        return f"a torch.save file that does not load as plain tensors ({first_line(error)})"
    head = data[:_SNIFF_BYTES]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not merely a character cut in two at the end of the sample
            return f"{len(data)} bytes that are not a torch.save file"
    if b"\0" in head:
        return f"{len(data)} bytes that are not a torch.save file"
    return "a text file"


def _describe_loaded(loaded: Any) -> str:
    if isinstance(loaded, dict):
        if not loaded:
            return "an empty dict"
        kinds = sorted({type(value).__name__ for value in loaded.values()} - {"Tensor"})
        return f"a dict whose values include {', '.join(kinds)}" if kinds else "a dict with non-str keys"
    return f"a {type(loaded).__name__}"


def _is_state_dict(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(key, str) and isinstance(tensor, torch.Tensor) for key, tensor in value.items())
    )


def _without_wrapper_prefix(weights: StateDict, expected: Mapping[str, torch.Tensor]) -> StateDict:
    """Strip a prefix that a compile/parallel wrapper put on every key, when the model lacks it."""
    for prefix in _WRAPPER_PREFIXES:
        if all(key.startswith(prefix) for key in weights) and not any(
            key.startswith(prefix) for key in expected
        ):
            return {key[len(prefix) :]: tensor for key, tensor in weights.items()}
    return weights


def _check_plain(value: Any, where: str) -> None:
    # Exact types: numpy scalars subclass float but do not load under weights_only=True.
    if value is None or type(value) in (str, int, float, bool) or isinstance(value, torch.Tensor):
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise WeightsError(f"checkpoint {where} has a non-str key {key!r}")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise WeightsError(
        f"checkpoint {where} is a {type(value).__name__}; only str, numbers, bool, None, "
        "tensors, lists and dicts can be stored"
    )


def _write_atomically(path: Path, data: bytes) -> None:
    try:
        write_bytes_atomically(path, data)
    except OSError as exc:
        raise WeightsError(f"cannot write checkpoint '{path}': {exc.strerror or first_line(exc)}") from exc


def parameters_sha256(module: torch.nn.Module) -> str:
    """sha256 over the module's state (names, dtypes, shapes and values), wherever the weights came from."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy())  # the buffer itself, no copy
    return digest.hexdigest()
