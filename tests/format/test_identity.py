"""The one definition of "what must match": data, labels (references, conversion sources), resume."""

from __future__ import annotations

from dataclasses import replace

from synthetic_stores import synthetic_dataset, synthetic_header

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


def vocabulary_header(words: list[str], positions: int | None = 8) -> StoreHeader:
    dataset = synthetic_dataset(100, len(words))
    dataset = replace(dataset, class_names=tuple(words))
    return synthetic_header(FullEncoding(), 100, len(words), dataset=dataset, positions=positions)


def test_another_vocabulary_is_named_by_its_sizes_and_first_difference() -> None:
    words = [f"w{i}" for i in range(18_000)]
    other = [*words[:5], "a", *words[6:17_990]]
    found = differing(vocabulary_header(words), vocabulary_header(other), Scope.DATA)
    assert found == [
        "number of classes: store has 18000, this run has 17990",
        "class names (vocabulary) differ: store has 18,000, this run has 17,990; first difference at "
        "index 5: store has 'w5', this run has 'a'",
    ]


def test_a_vocabulary_that_only_grew_differs_past_the_end_of_the_shorter() -> None:
    found = differing(vocabulary_header(["a", "b"]), vocabulary_header(["a", "b", "c"]), Scope.DATA)
    assert any(
        line.endswith("first difference at index 2: store has (none), this run has 'c'") for line in found
    )


def test_label_axes_belong_to_the_labels_identity() -> None:
    words = ["a", "b", "c"]
    eight, sixteen = vocabulary_header(words, positions=8), vocabulary_header(words, positions=16)
    assert differing(eight, sixteen, Scope.DATA) == []
    assert differing(eight, sixteen, Scope.LABELS) == [
        "labelled positions per sample: store has 8, this run has 16"
    ]
    plain = vocabulary_header(words, positions=None)
    assert differing(plain, eight, Scope.RESUME) == [
        "labelled positions per sample: store has None, this run has 8"
    ]
