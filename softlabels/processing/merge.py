"""Teacher ensembles: one full store averaging the distributions of several stores (``softlabels merge``).

The members must label the same data (dataset fingerprint, split, rows, class names, preprocessing:
:func:`~softlabels.format.identity.store_identity` at ``Scope.DATA``); they may come from different
teachers, formats and temperatures. Weights are normalised to sum to 1. The merged store's
temperature ``T`` is the members' common temperature, or the one given, and each member is brought
to it as follows:

``probs`` mode (the default)
    Average the members' distributions at ``T``: ``p_mix = sum_i w_i p_i``. A full member's
    stored rows ``z_i = logits_i / T_i`` are re-tempered first (``z_i * T_i / T`` are its logits
    over ``T``), so ``p_i = softmax(logits_i / T)``. A compact member's distribution is the one its
    format stands for (:meth:`Encoding.reconstruct`: top-k with the residual mass spread uniformly
    over the other classes, sampled as the empirical ``counts / S``); a compact row cannot be
    re-tempered, so a compact member must already be at ``T`` (anything else is refused). The
    store holds ``log(p_mix)``, whose softmax is ``p_mix``; a class no member gives any mass to
    (possible with sampled members only) gets ``log(MIN_PROBABILITY)`` instead of ``-inf``.
``logits`` mode
    Average the full members' logits over ``T``: the store holds ``sum_i w_i z_i T_i / T``,
    the geometric (product-of-experts) mean of the members' distributions at ``T``. Compact members
    hold no logits and are refused.

The result is always a ``full`` store (derive a compact one with ``convert``), at the common ``T``:
a student's ``T^2``-scaled KD loss uses it as the temperature the mixture was formed at. Its
teacher is ``ensemble(<member teachers>)``; its provenance records a ``merge`` derivation listing
every member with its identity (location, run id, teacher spec, weights and parameter digests,
temperature, format, origin) and the weights. A merge resumes only with the same members (the same
runs of them), weights, mode, temperature and format; anything else is refused unless overwritten.

Shards run as :mod:`dask` tasks exactly as in ``convert`` (:mod:`softlabels.processing.shards`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from softlabels import __version__
from softlabels.defaults import CHUNKS_PER_SHARD, MERGE_MODE, MERGE_MODES, SCHEDULER, VALUE_DTYPE
from softlabels.errors import (
    InvalidArgumentError,
    InvalidSettingError,
    StoreConflictError,
    StoreMismatchError,
)
from softlabels.format.encoding_spec import EncodingSpec
from softlabels.format.encodings import stored_encoding
from softlabels.format.encodings.base import softmax
from softlabels.processing.shards import absolute_location, check_run_options, write_pending_shards
from softlabels.store import (
    LabelStore,
    Layout,
    Provenance,
    StoreHeader,
    StoreWriter,
    TeacherInfo,
    WriteSummary,
    default_chunk_rows,
    open_store,
    read_header,
)
from softlabels.store.compare import check_same_data

MERGE = "merge"
MIN_PROBABILITY = 1e-12
"""The probability a class gets in a ``probs`` merge when no member gives it any (log 1e-12 = -27.6)."""


@dataclass(frozen=True)
class MemberRows:
    """One member's decoded rows of a block, with what is needed to bring them to the common temperature."""

    encoding: str
    encoding_params: dict[str, Any]
    temperature: float
    num_classes: int
    fields: dict[str, np.ndarray]


@dataclass(frozen=True)
class MergeSummary(WriteSummary):
    """What a merge did."""

    members: tuple[str, ...]
    weights: tuple[float, ...]
    mode: str
    temperature: float

    def describe(self) -> str:
        weights = ", ".join(f"{weight:.4g}" for weight in self.weights)
        return (
            f"Merged {len(self.members)} stores into {self.out} ({self.mode} mode, T={self.temperature:g}, "
            f"weights {weights}): {self.describe_rows()}, {self.seconds:.1f} s."
        )


def merge_stores(
    members: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    weights: Sequence[float] | None = None,
    mode: str = MERGE_MODE,
    temperature: float | None = None,
    dtype: str = VALUE_DTYPE,
    chunk_rows: int | None = None,
    chunks_per_shard: int = CHUNKS_PER_SHARD,
    scheduler: str = SCHEDULER,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    command: str | None = None,
) -> MergeSummary:
    """Average the distributions of complete stores of the same data into one full store.

    Args:
        members: two or more complete stores of the same data (any formats and temperatures).
        out: where the merged store goes (a resumed merge continues a store made with the same
            members, weights, mode, temperature and format).
        weights: one positive weight per member (normalised to sum to 1); equal weights by default.
        mode: ``probs`` (average the distributions) or ``logits`` (average full members' logits).
        temperature: the merged store's temperature; by default the members' common temperature.
        dtype: the merged store's value dtype.
        chunk_rows: rows per Zarr chunk (default: about 1 MiB per chunk).
        chunks_per_shard: chunks per unit of work.
        scheduler: the dask scheduler (``threads``, ``processes`` or ``synchronous``), or a
            dask.distributed cluster: ``local:N`` or a scheduler address (``tcp://HOST:PORT``).
        workers: threads or processes of ``threads``/``processes`` (default: dask's, one per CPU).
        overwrite: replace a store at ``out`` made with other settings.
        progress: show progress on stderr.
        command: the command line recorded in the merge record.

    Raises:
        InvalidArgumentError: fewer than two members, bad weights, an unknown mode, ``out`` is a member.
        InvalidSettingError: no temperature while the members' differ, or one that is not positive;
            a compact member at another temperature; a compact member in ``logits`` mode.
        StoreMismatchError: members of different data, or ``out`` holds a store made with other
            settings and ``overwrite`` is off.
        IncompleteStoreError: a member has unwritten shards.
        StoreConflictError: a member was replaced while merging.
        ClusterError: a cluster scheduler cannot be reached, or keeps losing the workers of a shard.
    """
    started = time.perf_counter()
    check_run_options(scheduler, workers, chunk_rows, chunks_per_shard)
    _check_mode(mode)
    if len(members) < 2:
        raise InvalidArgumentError(f"merge needs at least two member stores, got {len(members)}")
    normalised = normalised_weights(weights, len(members))
    encoding = EncodingSpec.create("full", dtype=dtype)
    stores = [open_store(member) for member in members]
    _refuse_views(stores)
    _refuse_positions(stores)
    check_same_data(stores, "member stores")
    _refuse_member_as_output(stores, out)
    common = merged_temperature(stores, temperature)
    _check_members_fit(stores, mode, common)
    header = _merged_header(stores, normalised, mode, common, encoding, chunk_rows, chunks_per_shard, command)
    writer = StoreWriter.open(out, header, encoding.build(), overwrite=overwrite)
    pending = write_pending_shards(
        writer,
        merge_shard,
        # An absolute location: a cluster's workers may run in another folder or on another host.
        lambda shard: (absolute_location(str(writer.path)), writer.header, shard),
        scheduler=scheduler,
        workers=workers,
        progress=progress,
        desc="merge",
    )
    final = writer.mark_complete()
    return MergeSummary(
        out=str(writer.path),
        num_rows=final.layout.num_rows,
        num_classes=final.layout.num_classes,
        shards_total=final.layout.num_shards,
        shards_written=len(pending),
        bytes_on_disk=writer.bytes_on_disk(),
        seconds=time.perf_counter() - started,
        rows_written=sum(stop - start for start, stop in map(final.layout.shard_bounds, pending)),
        members=tuple(store.location for store in stores),
        weights=normalised,
        mode=mode,
        temperature=common,
    )


def _refuse_views(stores: Sequence[LabelStore]) -> None:
    """Merging mixes one label row per sample; a store of augmented views holds several."""
    for store in stores:
        if store.layout.views is not None:
            raise InvalidArgumentError(
                f"{store.location} holds {store.layout.views} augmented views per sample; merge combines "
                "stores of one label row per sample only"
            )


def _refuse_positions(stores: Sequence[LabelStore]) -> None:
    """Merging mixes one label row per sample; a store of token labels holds one per position."""
    for store in stores:
        if store.layout.positions is not None:
            raise InvalidArgumentError(
                f"{store.location} holds {store.layout.positions} labelled positions per sample; merge combines "
                "stores of one label row per sample only"
            )


def _check_mode(mode: str) -> None:
    if mode not in MERGE_MODES:
        raise InvalidSettingError("mode", f"mode '{mode}' is not one of {', '.join(MERGE_MODES)}")


def normalised_weights(weights: Sequence[float] | None, count: int) -> tuple[float, ...]:
    """One weight per member, each finite and positive, scaled to sum to 1 (equal when not given).

    Raises:
        InvalidSettingError: a wrong number of weights, or one that is not a finite number > 0.
    """
    if weights is None:
        return tuple(1.0 / count for _ in range(count))
    if len(weights) != count:
        raise InvalidSettingError(
            "weights", f"{count} member stores need {count} weights, got {len(weights)}"
        )
    for weight in weights:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise InvalidSettingError("weights", f"weights must be finite numbers > 0, got {weight!r}")
        if weight <= 0:
            raise InvalidSettingError("weights", f"weights must be finite numbers > 0, got {weight!r}")
    total = math.fsum(weights)
    return tuple(float(weight) / total for weight in weights)


def _refuse_member_as_output(stores: Sequence[LabelStore], out: str | os.PathLike[str]) -> None:
    target = Path(out).resolve()
    for store in stores:
        if "://" not in store.location and Path(store.location).resolve() == target:
            raise InvalidArgumentError(
                f"the output {out} is the member store {store.location}; choose another OUT"
            )


def merged_temperature(stores: Sequence[LabelStore], temperature: float | None) -> float:
    """The merged store's temperature: the one given, else the members' common one.

    Raises:
        InvalidSettingError: not a finite number > 0, or none given while the members' differ.
    """
    if temperature is not None:
        if not math.isfinite(temperature) or temperature <= 0:
            raise InvalidSettingError(
                "temperature", f"temperature must be a finite number > 0, got {temperature}"
            )
        return float(temperature)
    found = {store.temperature for store in stores}
    if len(found) > 1:
        listed = ", ".join(f"{store.location} T={store.temperature:g}" for store in stores)
        raise InvalidSettingError(
            "temperature",
            f"the member stores have different temperatures ({listed}); give the merged "
            "store's temperature (full members are re-tempered to it)",
        )
    return stores[0].temperature


def _check_members_fit(stores: Sequence[LabelStore], mode: str, temperature: float) -> None:
    for store in stores:
        name = store.layout.encoding
        if name == "full":
            continue
        if mode == "logits":
            raise InvalidSettingError(
                "mode",
                f"mode logits averages full members' logits, but {store.location} holds {name} labels "
                "(use mode probs, which averages the distributions)",
            )
        if store.temperature != temperature:
            raise InvalidSettingError(
                "temperature",
                f"{store.location} holds {name} labels at T={store.temperature:g}, which cannot "
                f"be re-tempered to T={temperature:g} (only full rows can); merge at T={store.temperature:g}",
            )


def _member_record(store: LabelStore, weight: float) -> dict[str, Any]:
    return {
        "location": absolute_location(store.location),
        "run_id": store.header.run_id,
        "created": store.provenance.created,
        "teacher": asdict(store.provenance.teacher),
        "temperature": store.temperature,
        "encoding": {"name": store.layout.encoding, "params": store.layout.encoding_params},
        "origin": store.provenance.origin(),
        "weight": weight,
    }


def _ensemble_teacher(stores: Sequence[LabelStore], record: dict[str, Any]) -> TeacherInfo:
    """The teacher of a merged store: its members' teachers, with a digest of what was combined and how."""
    teachers = [store.provenance.teacher for store in stores]
    combined = {key: record[key] for key in ("mode", "temperature", "weights")}
    combined["members"] = [
        {key: member[key] for key in ("run_id", "teacher", "temperature", "encoding")}
        for member in record["members"]
    ]
    digest = hashlib.sha256(json.dumps(combined, sort_keys=True).encode()).hexdigest()
    return TeacherInfo(
        spec=f"ensemble({', '.join(teacher.spec for teacher in teachers)})",
        num_parameters=sum(teacher.num_parameters for teacher in teachers),
        weights_sha256=None,
        weights_path=None,
        parameters_sha256=digest,
    )


def _merged_header(
    stores: Sequence[LabelStore],
    weights: tuple[float, ...],
    mode: str,
    temperature: float,
    encoding: EncodingSpec,
    chunk_rows: int | None,
    chunks_per_shard: int,
    command: str | None,
) -> StoreHeader:
    first = stores[0]
    row_encoding = encoding.build()
    rows_per_chunk = chunk_rows or default_chunk_rows(row_encoding.bytes_per_row(first.num_classes))
    layout = Layout(
        encoding=row_encoding.name,
        encoding_params=row_encoding.params(),
        num_rows=first.num_rows,
        num_classes=first.num_classes,
        chunk_rows=rows_per_chunk,
        shard_rows=rows_per_chunk * chunks_per_shard,
    )
    members = [_member_record(store, weight) for store, weight in zip(stores, weights, strict=True)]
    record: dict[str, Any] = {
        "operation": MERGE,
        "mode": mode,
        "temperature": temperature,
        "weights": list(weights),
        "members": members,
        # The identity of a resumed merge: the very runs of the members it started from.
        "source_run_id": [member["run_id"] for member in members],
        "source_created": [member["created"] for member in members],
        "source_encoding": [member["encoding"] for member in members],
        "encoding": {"name": row_encoding.name, "params": row_encoding.params()},
        "chunk_rows": layout.chunk_rows,
        "shard_rows": layout.shard_rows,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "softlabels": __version__,
        "command": command
        or f"softlabels.merge_stores({[store.location for store in stores]!r}, mode={mode!r})",
    }
    precisions = sorted({store.provenance.precision for store in stores})
    provenance = Provenance(
        teacher=_ensemble_teacher(stores, record),
        dataset=first.provenance.dataset,
        temperature=temperature,
        precision=precisions[0] if len(precisions) == 1 else f"mixed ({', '.join(precisions)})",
        command=record["command"],
        config={
            "members": [member["location"] for member in members],
            "weights": list(weights),
            "mode": mode,
            "temperature": temperature,
            "encoding": encoding.describe(),
        },
        created=record["created"],
        versions={"softlabels": __version__, "numpy": np.__version__},
        derived_from=(record,),
    )
    return StoreHeader(layout=layout, provenance=provenance)


def mix_rows(
    members: Sequence[MemberRows], weights: Sequence[float], mode: str, temperature: float
) -> np.ndarray:
    """The merged float32 rows of one block (see the module docstring for what each mode stores)."""
    _check_mode(mode)
    term = _retempered if mode == "logits" else _distribution
    mixed = np.zeros((len(next(iter(members[0].fields.values()))), members[0].num_classes))
    for member, weight in zip(members, weights, strict=True):
        mixed += weight * term(member, temperature)
    if mode == "logits":
        return mixed.astype(np.float32)
    return np.log(np.maximum(mixed, MIN_PROBABILITY)).astype(np.float32)


def _retempered(member: MemberRows, temperature: float) -> np.ndarray:
    """A full member's logits over ``temperature`` (its stored rows are its logits over its own T)."""
    scaled: np.ndarray = member.fields["logits"].astype(np.float64) * (member.temperature / temperature)
    return scaled


def _distribution(member: MemberRows, temperature: float) -> np.ndarray:
    if member.encoding == "full":
        return softmax(_retempered(member, temperature))
    encoding = stored_encoding(member.encoding, member.encoding_params)
    return encoding.reconstruct(member.fields, member.num_classes)


def merge_shard(out: str, header: StoreHeader, shard: int) -> int:
    """Compute one shard of the merged store ``out`` from its members and record it; one dask task.

    Everything it needs is in ``header``'s merge record, so the arguments pickle for process workers.

    Raises:
        StoreConflictError: a member is no longer the run the merge started from.
        StoreMismatchError: members disagree on a row's target (they cannot be the same data).
    """
    layout = header.layout
    record = header.provenance.derived_from[-1]
    start, stop = layout.shard_bounds(shard)
    blocks = []
    for member in record["members"]:
        # Each member was checked complete when the merge started; its run id, read before and after
        # the rows, proves these rows still come from that run.
        _refuse_replaced_member(member["location"], member["run_id"])
        blocks.append(open_store(member["location"], allow_incomplete=True).read_rows(start, stop))
        _refuse_replaced_member(member["location"], member["run_id"])
    _refuse_different_targets(record["members"], blocks, start)
    rows = mix_rows(
        [
            MemberRows(
                member["encoding"]["name"],
                member["encoding"]["params"],
                member["temperature"],
                layout.num_classes,
                block.fields,
            )
            for member, block in zip(record["members"], blocks, strict=True)
        ],
        record["weights"],
        record["mode"],
        record["temperature"],
    )
    encoding = layout.encoding_spec.build()
    StoreWriter(out, header, encoding).write_shard(shard, encoding.encode(rows, start), blocks[0].targets)
    return shard


def _refuse_replaced_member(location: str, run_id: str | None) -> None:
    current = read_header(location).run_id
    if current != run_id:
        raise StoreConflictError(
            f"the member store {location} was replaced while merging (run id {run_id} became {current}); "
            "the merge stopped"
        )


def _refuse_different_targets(members: Sequence[dict[str, Any]], blocks: Sequence[Any], start: int) -> None:
    reference = blocks[0].targets
    for member, block in zip(members[1:], blocks[1:], strict=True):
        differ = np.flatnonzero(block.targets != reference)
        if differ.size:
            raise StoreMismatchError(
                f"the member stores {members[0]['location']} and {member['location']} hold different targets "
                f"at rows {(differ[:5] + start).tolist()}; they do not label the same data"
            )
