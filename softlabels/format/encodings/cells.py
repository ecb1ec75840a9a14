"""Encodings of samples that hold several label rows (cells): views and token positions.

A store with label axes (``Layout.label_axes``: ``(V,)`` views, ``(L,)`` positions, or both)
holds ``cells = prod(label_axes)`` label rows per sample, and every field array has shape
``[N, *label_axes, *row_shape]``. The row encodings stay 2-D: :class:`CellEncoding` flattens a
``[n, *label_axes, C]`` block of scaled logits to ``[n * cells, C]``, encodes it as cells
``first_row * cells ...`` and reshapes every field back to ``[n, *label_axes, ...]``. So the
sampled format's draws are keyed by the flat cell index ``row * cells + cell`` and do not depend
on how samples are cut into shards; a plain store (no label axes) is unchanged.

Use :func:`cell_encoding` rather than the class: it returns the row encoding itself when there
are no label axes, so plain stores keep exactly the objects they always had.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from softlabels.errors import InvalidArgumentError
from softlabels.format.encodings.base import Encoding, FieldSpec
from softlabels.format.encodings.registry import stored_encoding
from softlabels.format.schema import Layout


class CellEncoding(Encoding):
    """A row encoding applied to every cell of samples with label axes ``label_axes``.

    Its fields, ``encode``, ``decode``, ``reconstruct`` and ``stored_classes`` all work on whole
    samples: ``[n, *label_axes, ...]``; ``bytes_per_row`` counts a whole sample. ``name`` and
    ``params`` are the row encoding's (the axes are recorded in the layout, not the format).

    Args:
        encoding: the row encoding (``full``, ``topk``, ``sampled`` ...).
        label_axes: sizes of the axes between the sample axis and a row, each >= 1.
        axis_names: Zarr dimension names of those axes (``view``, ``position``); ``axisN`` when empty.
    """

    def __init__(
        self, encoding: Encoding, label_axes: tuple[int, ...], axis_names: tuple[str, ...] = ()
    ) -> None:
        if isinstance(encoding, CellEncoding):
            raise InvalidArgumentError("a cell encoding cannot wrap another cell encoding")
        if not label_axes or any(isinstance(size, bool) or size < 1 for size in label_axes):
            raise InvalidArgumentError(f"label axes must be one or more sizes >= 1, got {label_axes}")
        if axis_names and len(axis_names) != len(label_axes):
            raise InvalidArgumentError(f"{len(label_axes)} label axes need as many names, got {axis_names}")
        self.row_encoding = encoding
        self.label_axes = tuple(int(size) for size in label_axes)
        self.axis_names = axis_names or tuple(f"cell{axis}" for axis in range(1, len(label_axes) + 1))
        self.cells = math.prod(self.label_axes)
        self.name = encoding.name

    def params(self) -> dict[str, Any]:
        return self.row_encoding.params()

    def fields(self, num_classes: int) -> tuple[FieldSpec, ...]:
        """The row encoding's fields with the label axes in front of each row shape."""
        return tuple(
            FieldSpec(
                spec.name,
                (*self.label_axes, *spec.row_shape),
                spec.dtype,
                (*self.axis_names, *spec.dimension_names()[1:]),
            )
            for spec in self.row_encoding.fields(num_classes)
        )

    def encode(self, scaled_logits: np.ndarray, first_row: int) -> dict[str, np.ndarray]:
        """Encode a float32 ``[n, *label_axes, C]`` block whose first sample is store row ``first_row``."""
        block = np.asarray(scaled_logits)
        if block.ndim != len(self.label_axes) + 2 or block.shape[1:-1] != self.label_axes:
            raise InvalidArgumentError(
                f"expected a [samples, {', '.join(map(str, self.label_axes))}, classes] block of scaled "
                f"logits, got {block.shape}"
            )
        flat = block.reshape(len(block) * self.cells, block.shape[-1])
        try:
            encoded = self.row_encoding.encode(flat, first_row * self.cells)
        except InvalidArgumentError as exc:  # its "rows" are cells here: say how they are numbered
            raise InvalidArgumentError(
                f"{exc} (rows of label cells, numbered sample * {self.cells} + cell)"
            ) from exc
        return self._unflatten(encoded, len(block))

    def decode(self, fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The row encoding's decoded fields, each ``[n, *label_axes, ...]``."""
        num_rows = self._num_rows(fields)
        return self._unflatten(self.row_encoding.decode(self.flatten(fields)), num_rows)

    def reconstruct(self, fields: Mapping[str, np.ndarray], num_classes: int) -> np.ndarray:
        """Float64 ``[n, *label_axes, C]``: each cell's teacher distribution (see the row encoding)."""
        num_rows = self._num_rows(fields)
        probs = self.row_encoding.reconstruct(self.flatten(fields), num_classes)
        return probs.reshape(num_rows, *self.label_axes, num_classes)

    def stored_classes(self, fields: Mapping[str, np.ndarray], num_classes: int) -> np.ndarray:
        """Boolean ``[n, *label_axes, C]``."""
        num_rows = self._num_rows(fields)
        mask = self.row_encoding.stored_classes(self.flatten(fields), num_classes)
        return mask.reshape(num_rows, *self.label_axes, num_classes)

    def flatten(self, fields: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Fields ``[n, *label_axes, ...]`` as ``[n * cells, ...]`` (views where possible, no copy)."""
        axes = len(self.label_axes)
        flat: dict[str, np.ndarray] = {}
        for name, values in fields.items():
            array = np.asarray(values)
            if array.shape[1 : 1 + axes] != self.label_axes:
                raise InvalidArgumentError(
                    f"field '{name}' has shape {array.shape}; expected [samples, "
                    f"{', '.join(map(str, self.label_axes))}, ...]"
                )
            flat[name] = array.reshape(len(array) * self.cells, *array.shape[1 + axes :])
        return flat

    def _unflatten(self, fields: Mapping[str, np.ndarray], num_rows: int) -> dict[str, np.ndarray]:
        return {
            name: values.reshape(num_rows, *self.label_axes, *values.shape[1:])
            for name, values in fields.items()
        }

    def _num_rows(self, fields: Mapping[str, np.ndarray]) -> int:
        if not fields:
            raise InvalidArgumentError("no fields to read samples from")
        return len(next(iter(fields.values())))


def cell_encoding(
    encoding: Encoding, label_axes: tuple[int, ...], axis_names: tuple[str, ...] = ()
) -> Encoding:
    """The encoding of whole samples with label axes ``label_axes`` (``Layout.label_axes``).

    Returns ``encoding`` itself when there are no label axes (a plain store) or when it already
    is a :class:`CellEncoding` with these axes, else a :class:`CellEncoding` around it.

    Raises:
        InvalidArgumentError: ``encoding`` is a cell encoding with other axes.
    """
    if isinstance(encoding, CellEncoding):
        if encoding.label_axes != tuple(label_axes):
            raise InvalidArgumentError(
                f"the encoding holds label axes {encoding.label_axes}, but the store has {tuple(label_axes)}"
            )
        return encoding
    if not label_axes:
        return encoding
    return CellEncoding(encoding, tuple(label_axes), axis_names)


def row_encoding(encoding: Encoding) -> Encoding:
    """The encoding of one label row: the wrapped row encoding of a :class:`CellEncoding`, else ``encoding``."""
    return encoding.row_encoding if isinstance(encoding, CellEncoding) else encoding


def layout_encoding(layout: Layout) -> Encoding:
    """The encoding of a store's whole samples, as its layout records it (format, parameters, label axes).

    Raises:
        UnknownNameError: the layout names an unknown format.
        InvalidArgumentError: the parameters do not fit the format.
    """
    encoding = stored_encoding(layout.encoding, layout.encoding_params)
    return cell_encoding(encoding, layout.label_axes, layout.label_axis_names)


def flatten_cells(encoding: Encoding, fields: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Fields of whole samples as one row per cell (``[n * cells, ...]``), for ``row_encoding(encoding)``.

    Plain stores' fields come back as they are (one cell per sample).
    """
    return encoding.flatten(fields) if isinstance(encoding, CellEncoding) else dict(fields)


def cell_targets(layout: Layout, targets: np.ndarray) -> np.ndarray:
    """The target of every cell of samples with ``targets`` (``[n, *layout.target_axes]``), as ``[n * cells]``.

    Views share their sample's targets; per-position targets (``[n, L]``) give each position its own,
    :data:`~softlabels.format.schema.IGNORED_TARGET` where the position is ignored.
    """
    targets = np.asarray(targets)
    if targets.shape[1:] != layout.target_axes:
        raise InvalidArgumentError(
            f"targets must have shape [samples, {', '.join(map(str, layout.target_axes))}], got {targets.shape}"
        )
    per_view = targets[:, None] if layout.views is not None else targets
    cells = np.broadcast_to(per_view, (len(targets), *layout.label_axes))
    return cells.reshape(len(targets) * layout.cells_per_row)
