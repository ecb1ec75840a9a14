"""The one definition of "what must match" between a store and whatever uses it.

Every check compares identities built here, at one of three scopes, each a superset of the one
before:

``DATA``
    The rows belong to this data, sample for sample: split, row and class counts, class names,
    the dataset fingerprint and the preprocessing version. A student streaming the store checks
    this against its dataset.
``LABELS``
    The same data labelled by the same teacher at the same temperature: what a fidelity
    reference (``inspect --reference``) or a conversion source must share with a store.
``RESUME``
    Everything that decides the stored bytes: a resumed writer must match all of it.

Identities are plain ordered dicts keyed by readable names, so a refusal lists every difference
(:func:`mismatches`). The dataset spec (``digits``, a path) is deliberately absent: the same data
unpacked elsewhere is the same data, and the fingerprint proves it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from softlabels.files import differences
from softlabels.format.schema import DatasetInfo, StoreHeader


class Scope(enum.IntEnum):
    """How much of an identity a check compares (each scope includes the ones below it)."""

    DATA = 1
    LABELS = 2
    RESUME = 3


def data_identity(dataset: DatasetInfo) -> dict[str, Any]:
    """What ties stored rows to data, for a store's :class:`DatasetInfo` or one built from a dataset."""
    return {
        "split": dataset.split,
        "number of samples": dataset.num_rows,
        "number of classes": dataset.num_classes,
        "class names": list(dataset.class_names),
        "dataset fingerprint": dataset.fingerprint,
        "preprocessing": dataset.preprocessing,
    }


def store_identity(header: StoreHeader, scope: Scope) -> dict[str, Any]:
    """The identity of a store at ``scope``."""
    identity = data_identity(header.provenance.dataset)
    if scope >= Scope.LABELS:
        teacher = header.provenance.teacher
        identity.update(
            {
                "teacher": teacher.spec,
                "teacher weights sha256": teacher.weights_sha256,
                "teacher parameters sha256": teacher.parameters_sha256,
                "temperature": header.provenance.temperature,
            }
        )
    if scope >= Scope.RESUME:
        layout = header.layout
        identity.update(
            {
                "precision": header.provenance.precision,
                "format": layout.encoding,
                "format parameters": dict(layout.encoding_params),
                "chunk rows": layout.chunk_rows,
                "shard rows": layout.shard_rows,
                "origin": header.provenance.origin(),
                **{f"computed with {name}": value for name, value in header.provenance.compute.items()},
            }
        )
    return identity


def mismatches(
    have: Mapping[str, Any], want: Mapping[str, Any], *, have_name: str, want_name: str
) -> list[str]:
    """One readable line per key whose values differ (empty when the identities match)."""
    return differences(have, want, have_name=have_name, want_name=want_name)
