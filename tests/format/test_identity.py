"""The one definition of "what must match": data, labels (references, conversion sources), resume."""

from __future__ import annotations

from dataclasses import replace

from synthetic_stores import synthetic_header

from softlabels.format.encodings import FullEncoding
from softlabels.format.identity import Scope, mismatches, store_identity
from softlabels.format.schema import StoreHeader, TeacherInfo


def header(**provenance: object) -> StoreHeader:
    made = synthetic_header(FullEncoding(), 100, 4)
    return replace(made, provenance=replace(made.provenance, **provenance))


def differing(left: StoreHeader, right: StoreHeader, scope: Scope) -> list[str]:
    return mismatches(
        store_identity(left, scope), store_identity(right, scope), have_name="store", want_name="this run"
    )


def test_scopes_are_nested() -> None:
    made = header(compute={"device": "cpu", "batch_size": 256})
    data, labels, resume = (store_identity(made, scope) for scope in (Scope.DATA, Scope.LABELS, Scope.RESUME))
    assert data.keys() < labels.keys() < resume.keys()
    assert {"dataset fingerprint", "number of samples", "split"} <= data.keys()
    assert {"teacher parameters sha256", "temperature"} <= labels.keys() - data.keys()


def test_two_plug_in_teachers_with_other_parameters_are_different_labels() -> None:
    # Plug-in and random teachers have no weights file: only the parameters' digest tells them apart.
    one = header(teacher=TeacherInfo("my.py:net", 10, None, None, "a" * 64))
    other = header(teacher=TeacherInfo("my.py:net", 10, None, None, "b" * 64))
    assert differing(one, other, Scope.DATA) == []
    assert differing(one, other, Scope.LABELS) == [
        f"teacher parameters sha256: store has {'a' * 64!r}, this run has {'b' * 64!r}"
    ]


def test_resume_covers_how_the_values_were_computed() -> None:
    gpu = header(compute={"device": "cuda", "batch_size": 256})
    cpu = header(compute={"device": "cpu", "batch_size": 128})
    assert differing(gpu, cpu, Scope.LABELS) == []
    assert differing(gpu, cpu, Scope.RESUME) == [
        "computed with device: store has 'cuda', this run has 'cpu'",
        "computed with batch size: store has 256, this run has 128",
    ]


def test_resume_ignores_what_does_not_decide_the_values() -> None:
    first = header(command="softlabels generate ...", created="2026-01-01T00:00:00+00:00")
    again = header(command="softlabels generate ... --num-workers 4", created="2026-02-02T00:00:00+00:00")
    assert differing(first, again, Scope.RESUME) == []


def test_resume_covers_the_origin_and_the_exact_source_run() -> None:
    record = {
        "operation": "convert",
        "source": "/a/full.zarr",
        "source_run_id": "00000000000000aa",
        "source_created": "2026-01-01T00:00:00+00:00",
        "source_encoding": {"name": "full", "params": {"dtype": "float32"}},
        "encoding": {"name": "full", "params": {"dtype": "float16"}},
    }
    generated, converted = header(), header(derived_from=(record,))
    assert any(
        line.startswith("origin: store has 'generate'")
        for line in differing(generated, converted, Scope.RESUME)
    )
    moved = header(derived_from=({**record, "source": "/elsewhere/full.zarr"},))
    assert differing(converted, moved, Scope.RESUME) == []  # the same source run, unpacked elsewhere
    regenerated = header(derived_from=({**record, "source_run_id": "00000000000000bb"},))
    (line,) = differing(converted, regenerated, Scope.RESUME)
    assert line.startswith("derived from:") and "00000000000000bb" in line
