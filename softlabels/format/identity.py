"""The one definition of "what must match" between a store and whatever uses it.

Every check compares identities built here, at one of three scopes, each a superset of the one
before:

``DATA``
    The rows belong to this data, sample for sample: split, row and class counts, class names,
    the dataset fingerprint and the preprocessing version. A student streaming the store checks
    this against its dataset.
``LABELS``
    The same data labelled by the same teacher at the same temperature, with the same label axes
    (views per sample, labelled positions per sample): what a fidelity reference
    (``inspect --reference``) or a conversion source must share with a store.
``RESUME``
    Everything that decides the stored bytes: a resumed writer must match all of it. Besides the
    teacher's precision, the format and the chunking, that is how the values were computed
    (``Provenance.compute``: the device type, since TF32 and cuDNN change the values on CUDA, and
    the batch size, since batched kernels may round differently), the origin (a teacher's run or a
    conversion) and, for a derived store, which exact source run it was derived from. DataLoader
    workers are not part of it: they only load the data, and a test proves the stored bytes equal.

Identities are plain ordered dicts keyed by readable names, so a refusal lists every difference
(:func:`mismatches`; differing class names, which for text are the vocabulary, are summed up by
their sizes and first difference rather than listed). The dataset spec (``digits``, a path) is deliberately absent: the same data
unpacked elsewhere is the same data, and the fingerprint proves it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from softlabels.files import differences
from softlabels.format.schema import DatasetInfo, StoreHeader


class Scope(enum.IntEnum):
    """How much of an identity a check compares (each scope includes the ones below it)."""

    DATA = 1
    LABELS = 2
    RESUME = 3


class DescribedData(Protocol):
    """What a dataset source tells about itself (``softlabels.sources.DatasetSource`` has all of it)."""

    @property
    def spec(self) -> str: ...
    @property
    def split(self) -> str: ...
    @property
    def num_classes(self) -> int: ...
    @property
    def class_names(self) -> Sequence[str]: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def preprocessing(self) -> str | None: ...
    def __len__(self) -> int: ...


def dataset_info(source: DescribedData) -> DatasetInfo:
    """What a store made from ``source`` records about its data, and what a reader compares it with."""
    return DatasetInfo(
        source.spec,
        source.split,
        len(source),
        source.num_classes,
        tuple(source.class_names),
        source.fingerprint,
        source.preprocessing,
    )


CLASS_NAMES = "class names"


def data_identity(dataset: DatasetInfo) -> dict[str, Any]:
    """What ties stored rows to data, for a store's :class:`DatasetInfo` or one built from a dataset."""
    return {
        "split": dataset.split,
        "number of samples": dataset.num_rows,
        "number of classes": dataset.num_classes,
        CLASS_NAMES: list(dataset.class_names),
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
                "views per sample": header.layout.views,
                "view recipe": header.layout.view_recipe,
                "view seed": header.layout.view_seed,
                "labelled positions per sample": header.layout.positions,
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
                "derived from": [_derivation_identity(step) for step in header.provenance.derived_from],
                **{
                    f"computed with {name.replace('_', ' ')}": value
                    for name, value in header.provenance.compute.items()
                },
            }
        )
    return identity


# What a derivation record must repeat for a resumed derivation: the same operation, from the same
# source run (regenerating the source in between makes a new run id), into the same encoding. A merge
# records one run id per member, and how the members were combined (mode, weights). An import
# names the file its labels came from by its sha256.
DERIVATION_KEYS = (
    "operation",
    "source_run_id",
    "source_sha256",
    "source_created",
    "source_encoding",
    "encoding",
    "mode",
    "weights",
)


def _derivation_identity(step: Mapping[str, Any]) -> dict[str, Any]:
    return {key: step.get(key) for key in DERIVATION_KEYS}


def mismatches(
    have: Mapping[str, Any], want: Mapping[str, Any], *, have_name: str, want_name: str
) -> list[str]:
    """One readable line per key whose values differ (empty when the identities match).

    Class names (a text dataset's vocabulary: thousands of words) get one line that names their
    sizes and the first difference (:func:`vocabulary_difference`) instead of both lists.
    """
    found = differences(have, want, have_name=have_name, want_name=want_name)
    names_differ = have.get(CLASS_NAMES) != want.get(CLASS_NAMES)
    if not names_differ or not all(isinstance(side.get(CLASS_NAMES), Sequence) for side in (have, want)):
        return found
    summary = vocabulary_difference(
        have[CLASS_NAMES], want[CLASS_NAMES], have_name=have_name, want_name=want_name
    )
    prefix = f"{CLASS_NAMES}: "
    return [summary if line.startswith(prefix) else line for line in found]


def vocabulary_difference(have: Sequence[str], want: Sequence[str], *, have_name: str, want_name: str) -> str:
    """``class names (vocabulary) differ: store has 18,000, this run has 17,990; first difference at index 5: ...``.

    Names the two sizes and the first index where the names differ, with both names there
    (``(none)`` past the end of the shorter list). Call it only for lists that differ.
    """
    first = next(
        (index for index, (left, right) in enumerate(zip(have, want, strict=False)) if left != right),
        min(len(have), len(want)),
    )

    def name_at(names: Sequence[str]) -> str:
        return repr(names[first]) if first < len(names) else "(none)"

    return (
        f"{CLASS_NAMES} (vocabulary) differ: {have_name} has {len(have):,}, {want_name} has {len(want):,}; "
        f"first difference at index {first:,}: {have_name} has {name_at(have)}, {want_name} has {name_at(want)}"
    )
