"""Private labels from an ensemble of teachers: PATE's Gaussian NoisyMax (GNMax) with RDP accounting.

The teachers of a PATE ensemble are trained on disjoint parts of a private split
(``train-teacher --partition I/N``); each has labelled the same public split with ``generate``
(the member stores). For each of the first ``queries`` public samples (Papernot et al., "Scalable
Private Learning with PATE", ICLR 2018):

* the votes (each member row's most probable class) form a histogram ``n`` over the classes;
* **GNMax** answers ``argmax(n + N(0, sigma^2 I))``;
* **confident GNMax** first checks ``max(n) + N(0, sigma1^2) >= threshold`` and refuses the query
  when the check fails (the check itself is paid for, answered or not).

**Accounting** (data-independent, with Google's ``dp-accounting`` RDP accountant). Changing one
private example changes one teacher's part, so at most one vote moves: the histogram changes by
L2 norm sqrt(2) and its maximum by at most 1. GNMax of noise ``sigma`` is then
``(alpha, alpha / sigma^2)``-RDP (the paper's Proposition 8), which is the RDP of the library's
``GaussianDpEvent(noise_multiplier = sigma / sqrt(2))`` (``alpha / (2 m^2)``); the threshold check
is ``(alpha, alpha / (2 sigma1^2))``-RDP, a ``GaussianDpEvent(sigma1)``. The accountant composes
one GNMax event per *answered* query and one check per *asked* query and converts to ``(epsilon,
delta)``. Releasing the noisy histogram ``n + N(0, sigma^2 I)`` instead of its argmax would cost
exactly the same under this bound (the argmax is post-processing of it); only argmax labels are
released here.

**The store.** It covers every row of the public split (so its data identity is the split's); it
is a ``sampled`` store with one draw per row (the noisy label, count 1), at temperature 1, with an
answered mask: rows refused, and rows beyond ``queries``, hold no label (count 0) and are marked
unanswered. The provenance records the mechanism, the noise, the answered and refused counts, delta
and the epsilon spent, and the members' identities. Only answers enter the store, after the
accountant has charged every query asked. A run is never resumed: a second draw of noise is a
second release whose cost adds up, so an existing output is replaced only with ``overwrite``.

**The noise seed.** Without a seed, the noise comes from the operating system and is not recorded:
knowing it, one could subtract the noise and the guarantee would be void. A given seed (for
experiments and tests) is recorded in the provenance, and the store then says it is not private.
"""

from __future__ import annotations

import math
import platform
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import zarr
from dp_accounting.rdp import RdpAccountant

from softlabels import __version__
from softlabels.errors import InvalidArgumentError, StoreMismatchError
from softlabels.format.encodings import SampledEncoding
from softlabels.format.identity import Scope, mismatches, store_identity
from softlabels.format.schema import Layout, Provenance, StoreHeader, TeacherInfo, default_chunk_rows
from softlabels.store import LabelStore, StoreWriter, open_store

__all__ = [
    "MECHANISM",
    "GNMaxAnswers",
    "GNMaxSettings",
    "PateSummary",
    "PrivacySpent",
    "gnmax",
    "pate_labels",
    "privacy_spent",
    "vote_histograms",
]

MECHANISM = "gnmax"
OPERATION = "pate-gnmax"
_SEED_LIMIT = 1 << 64


@dataclass(frozen=True)
class GNMaxSettings:
    """How the ensemble answers: noise ``sigma``, the confident check, how many queries, delta, the seed.

    Args:
        sigma: Standard deviation of the Gaussian noise added to every vote count (> 0).
        queries: Answer the first ``queries`` samples of the public split (>= 1).
        delta: The delta of the reported ``(epsilon, delta)`` (in (0, 1)).
        threshold: Confident GNMax: answer only when ``max(votes) + N(0, sigma1^2) >= threshold``.
        sigma1: Noise of the threshold check (> 0; given exactly when ``threshold`` is).
        seed: Seed of the noise, in ``[0, 2**64)``, recorded in the store (which is then not
            private); None draws the noise from the operating system and records no seed.

    Raises:
        InvalidArgumentError: naming the setting at fault.
    """

    sigma: float
    queries: int
    delta: float
    threshold: float | None = None
    sigma1: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        _require_positive("noise sigma", self.sigma)
        if isinstance(self.queries, bool) or not isinstance(self.queries, int) or self.queries < 1:
            raise InvalidArgumentError(f"queries must be an integer >= 1, got {self.queries!r}")
        if not _is_real(self.delta) or not 0 < self.delta < 1:
            raise InvalidArgumentError(f"delta must be a number in (0, 1), got {self.delta!r}")
        if (self.threshold is None) != (self.sigma1 is None):
            raise InvalidArgumentError(
                "confident GNMax needs both a threshold and its noise sigma1 (or neither)"
            )
        if self.threshold is not None and not _is_real(self.threshold):
            raise InvalidArgumentError(f"threshold must be a finite number, got {self.threshold!r}")
        if self.sigma1 is not None:
            _require_positive("threshold noise sigma1", self.sigma1)
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < _SEED_LIMIT
        ):
            raise InvalidArgumentError(f"noise seed must be an integer in [0, 2**64), got {self.seed!r}")

    @property
    def confident(self) -> bool:
        """Whether queries pass the noisy threshold check first (confident GNMax)."""
        return self.threshold is not None

    @property
    def mechanism(self) -> str:
        return "confident-gnmax" if self.confident else MECHANISM

    def to_json(self) -> dict[str, Any]:
        return {
            "mechanism": self.mechanism,
            "sigma": self.sigma,
            "threshold": self.threshold,
            "sigma1": self.sigma1,
            "queries": self.queries,
            "delta": self.delta,
            "noise_seed": self.seed,
        }


@dataclass(frozen=True)
class PrivacySpent:
    """The ``(epsilon, delta)`` of a release, and what the accountant composed to get it."""

    epsilon: float
    delta: float
    rdp_order: float
    answered: int
    checked: int


def privacy_spent(
    *, sigma: float, answered: int, delta: float, sigma1: float | None = None, checked: int = 0
) -> PrivacySpent:
    """The data-independent ``(epsilon, delta)`` of ``answered`` GNMax answers and ``checked`` threshold checks.

    Each answer is a ``GaussianDpEvent(sigma / sqrt(2))`` (RDP ``alpha / sigma^2``), each check a
    ``GaussianDpEvent(sigma1)`` (RDP ``alpha / (2 sigma1^2)``), composed by ``dp_accounting``'s
    :class:`~dp_accounting.rdp.RdpAccountant` and converted at ``delta``.
    """
    if checked and sigma1 is None:
        raise InvalidArgumentError("threshold checks need their noise sigma1")
    accountant = RdpAccountant()
    if answered:
        accountant.compose(dp_accounting.GaussianDpEvent(sigma / math.sqrt(2.0)), answered)
    if checked and sigma1 is not None:
        accountant.compose(dp_accounting.GaussianDpEvent(sigma1), checked)
    epsilon, order = accountant.get_epsilon_and_optimal_order(delta)
    return PrivacySpent(float(epsilon), delta, float(order), answered, checked)


def vote_histograms(votes: np.ndarray, num_classes: int) -> np.ndarray:
    """Per query, how many teachers voted for each class: ``[Q, C]`` int64 from votes ``[teachers, Q]``."""
    teachers, queries = votes.shape
    flat = (np.arange(queries)[None, :] * num_classes + votes).ravel()
    counts: np.ndarray = np.bincount(flat, minlength=queries * num_classes).reshape(queries, num_classes)
    return counts.astype(np.int64)


@dataclass(frozen=True)
class GNMaxAnswers:
    """The released labels (``-1`` where refused) and which queries were answered."""

    labels: np.ndarray
    answered: np.ndarray

    @property
    def num_answered(self) -> int:
        return int(self.answered.sum())


def gnmax(
    histograms: np.ndarray,
    sigma: float,
    rng: np.random.Generator,
    *,
    threshold: float | None = None,
    sigma1: float | None = None,
) -> GNMaxAnswers:
    """Answer each query (a row of ``histograms``) with GNMax, after the confident check when ``threshold``.

    Only the labels of answered queries leave this function; the noisy counts of a refused query
    are never looked at.
    """
    queries = len(histograms)
    counts = histograms.astype(np.float64)
    if threshold is None:
        answered = np.ones(queries, dtype=bool)
    else:
        if sigma1 is None:
            raise InvalidArgumentError("the threshold check needs its noise sigma1")
        answered = counts.max(axis=1) + rng.normal(0.0, sigma1, size=queries) >= threshold
    noisy = counts + rng.normal(0.0, sigma, size=counts.shape)
    labels = np.where(answered, noisy.argmax(axis=1), -1).astype(np.int64)
    return GNMaxAnswers(labels, answered)


@dataclass(frozen=True)
class PateSummary:
    """What :func:`pate_labels` released and what it cost."""

    out: str
    num_rows: int
    queries: int
    answered: int
    refused: int
    privacy: PrivacySpent
    noise_seed: int | None
    seconds: float

    def describe(self) -> str:
        seeded = (
            f"; noise seed {self.noise_seed} is recorded: for experiments only, not private"
            if self.noise_seed is not None
            else ""
        )
        return (
            f"Wrote {self.out}: {self.answered} of {self.queries} queries answered ({self.refused} refused, "
            f"{self.num_rows - self.queries} rows not asked), epsilon {self.privacy.epsilon:.3f} at delta "
            f"{self.privacy.delta:g} (RDP order {self.privacy.rdp_order:g}){seeded}, {self.seconds:.1f} s."
        )


def pate_labels(
    members: Sequence[str],
    out: str,
    settings: GNMaxSettings,
    *,
    overwrite: bool = False,
    command: str | None = None,
) -> PateSummary:
    """Write a store of GNMax labels for the first ``settings.queries`` samples of the members' split.

    Args:
        members: Complete stores of the same public split, one per teacher; each teacher must have
            been trained on its own disjoint part of the private data (``train-teacher --partition``),
            which is what the accounting assumes.
        out: The new store (a local folder).
        settings: The mechanism, its noise, the number of queries and delta.
        overwrite: Replace a store already at ``out`` (a new release: its cost adds to the old one's
            for anyone who kept both).
        command: The command line recorded in the provenance.

    Raises:
        InvalidArgumentError: fewer than two members, a member given twice, more queries than rows,
            or a member that holds private answers itself.
        StoreMismatchError: the members label different data (the message names what differs), or
            ``out`` exists and ``overwrite`` is off.
    """
    started = time.perf_counter()
    stores = _open_members(members)
    first = stores[0]
    if settings.queries > first.num_rows:
        raise InvalidArgumentError(
            f"queries ({settings.queries}) exceed the {first.num_rows} samples of the members' split"
        )
    if Path(out).exists() and any(Path(out).iterdir()) and not overwrite:
        raise StoreMismatchError(
            f"{out} already exists; private answers are never resumed or repeated silently (every draw of "
            "noise is a release that spends privacy): set overwrite to replace it"
        )
    seed = settings.seed if settings.seed is not None else secrets.randbits(64)
    votes = np.stack([_votes(store, settings.queries) for store in stores])
    answers = gnmax(
        vote_histograms(votes, first.num_classes),
        settings.sigma,
        np.random.default_rng(seed),
        threshold=settings.threshold,
        sigma1=settings.sigma1,
    )
    privacy = privacy_spent(
        sigma=settings.sigma,
        answered=answers.num_answered,
        delta=settings.delta,
        sigma1=settings.sigma1,
        checked=settings.queries if settings.confident else 0,
    )
    encoding = SampledEncoding(samples=1)
    header = _header(stores, settings, answers, privacy, encoding, command)
    _write(out, header, encoding, answers, first, overwrite=overwrite)
    return PateSummary(
        out=str(out),
        num_rows=first.num_rows,
        queries=settings.queries,
        answered=answers.num_answered,
        refused=settings.queries - answers.num_answered,
        privacy=privacy,
        noise_seed=settings.seed,
        seconds=time.perf_counter() - started,
    )


def _open_members(members: Sequence[str]) -> list[LabelStore]:
    if len(members) < 2:
        raise InvalidArgumentError(f"PATE needs at least 2 teachers' stores, got {len(members)}")
    stores = [open_store(member) for member in members]
    first = stores[0]
    seen: dict[str, str] = {}
    for store in stores:
        if store.layout.views is not None:
            raise InvalidArgumentError(
                f"{store.location} holds {store.layout.views} augmented views per sample; PATE counts "
                "one teacher vote per sample (give stores without views)"
            )
        if store.layout.positions is not None:
            raise InvalidArgumentError(
                f"{store.location} holds {store.layout.positions} labelled positions per sample; PATE counts "
                "one teacher vote per sample (give stores of one label per sample)"
            )
        if store.layout.answered_mask:
            raise InvalidArgumentError(
                f"{store.location} holds private answers, not a teacher's labels; give the teachers' stores"
            )
        found = mismatches(
            store_identity(store.header, Scope.DATA),
            store_identity(first.header, Scope.DATA),
            have_name=store.location,
            want_name=first.location,
        )
        if found:
            raise StoreMismatchError(
                f"{store.location} labels other data than {first.location} ({'; '.join(found)})"
            )
        # The same teacher twice would move two votes per private example: twice the sensitivity.
        for key in (store.header.run_id, store.provenance.teacher.parameters_sha256):
            if key is not None and key in seen:
                raise InvalidArgumentError(
                    f"{store.location} and {seen[key]} hold the same teacher's labels; each teacher votes once"
                )
            if key is not None:
                seen[key] = store.location
    return stores


def _votes(store: LabelStore, queries: int) -> np.ndarray:
    """The member's vote (most probable class) on each of the first ``queries`` rows."""
    rows = store.read_rows(0, queries)
    votes: np.ndarray = store.encoding.reconstruct(rows.fields, store.num_classes).argmax(axis=1)
    return votes


def _header(
    stores: list[LabelStore],
    settings: GNMaxSettings,
    answers: GNMaxAnswers,
    privacy: PrivacySpent,
    encoding: SampledEncoding,
    command: str | None,
) -> StoreHeader:
    first = stores[0]
    chunk_rows = default_chunk_rows(encoding.bytes_per_row(first.num_classes))
    layout = Layout(
        encoding=encoding.name,
        encoding_params=encoding.params(),
        num_rows=first.num_rows,
        num_classes=first.num_classes,
        chunk_rows=chunk_rows,
        shard_rows=chunk_rows,
        answered_mask=True,
    )
    created = datetime.now(UTC).isoformat(timespec="seconds")
    record = {
        "operation": OPERATION,
        **settings.to_json(),
        "answered": answers.num_answered,
        "refused": settings.queries - answers.num_answered,
        "not_asked": first.num_rows - settings.queries,
        "epsilon": privacy.epsilon,
        "rdp_order": privacy.rdp_order,
        "accounting": (
            "dp-accounting RdpAccountant, data-independent: per answer GaussianDpEvent(sigma/sqrt(2)) "
            "(RDP alpha/sigma^2), per asked query with a threshold GaussianDpEvent(sigma1) "
            "(RDP alpha/(2 sigma1^2))"
        ),
        "private": settings.seed is None,
        "members": [_member_record(store) for store in stores],
        "created": created,
        "softlabels": __version__,
    }
    teachers = [store.provenance.teacher for store in stores]
    provenance = Provenance(
        teacher=TeacherInfo(
            spec=f"pate-gnmax ensemble of {len(stores)} teachers",
            num_parameters=sum(teacher.num_parameters for teacher in teachers),
            weights_sha256=None,
            weights_path=None,
        ),
        dataset=first.provenance.dataset,
        temperature=1.0,
        precision=first.provenance.precision,
        command=command or f"softlabels.pate_labels({[store.location for store in stores]!r})",
        config=settings.to_json(),
        created=created,
        versions={
            "softlabels": __version__,
            "numpy": np.__version__,
            "zarr": zarr.__version__,
            "dp-accounting": _dp_accounting_version(),
            "python": platform.python_version(),
        },
        derived_from=(record,),
    )
    return StoreHeader(layout=layout, provenance=provenance)


def _member_record(store: LabelStore) -> dict[str, Any]:
    teacher = store.provenance.teacher
    return {
        "location": str(Path(store.location).resolve()),
        "run_id": store.header.run_id,
        "created": store.provenance.created,
        "teacher": teacher.spec,
        "teacher_weights_sha256": teacher.weights_sha256,
        "teacher_parameters_sha256": teacher.parameters_sha256,
        "encoding": {"name": store.layout.encoding, "params": store.layout.encoding_params},
    }


def _write(
    out: str,
    header: StoreHeader,
    encoding: SampledEncoding,
    answers: GNMaxAnswers,
    first: LabelStore,
    *,
    overwrite: bool,
) -> None:
    """Every row of the split: answered queries hold their label with count 1, all others count 0."""
    layout = header.layout
    answered = np.zeros(layout.num_rows, dtype=bool)
    answered[: len(answers.answered)] = answers.answered
    labels = np.zeros(layout.num_rows, dtype=np.int64)
    labels[: len(answers.labels)] = np.where(answers.answered, answers.labels, 0)
    dtypes = {spec.name: spec.dtype for spec in encoding.fields(layout.num_classes)}
    writer = StoreWriter.open(out, header, encoding, overwrite=overwrite)
    for shard in range(layout.num_shards):
        start, stop = layout.shard_bounds(shard)
        targets = first.read_rows(start, stop).targets
        writer.write_shard(
            shard,
            {
                "indices": labels[start:stop, None].astype(dtypes["indices"]),
                "counts": answered[start:stop, None].astype(dtypes["counts"]),
            },
            targets,
            answered[start:stop],
        )
    writer.mark_complete()


def _dp_accounting_version() -> str:
    from importlib.metadata import version

    return version("dp-accounting")


def _is_real(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _require_positive(setting: str, value: Any) -> None:
    if not _is_real(value) or value <= 0:
        raise InvalidArgumentError(f"{setting} must be a positive number, got {value!r}")
