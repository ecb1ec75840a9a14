"""``merge_stores``: the merged rows against a numpy reference, provenance, resume and refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from synthetic_stores import synthetic_dataset, synthetic_header, write_rows

import softlabels.processing.merge as merge_module
from softlabels.errors import (
    IncompleteStoreError,
    InvalidArgumentError,
    InvalidSettingError,
    StoreMismatchError,
    StoreWriteError,
)
from softlabels.format.encodings import Encoding, FullEncoding, SampledEncoding, TopKEncoding
from softlabels.format.schema import TeacherInfo
from softlabels.processing.merge import MIN_PROBABILITY, merge_stores
from softlabels.store import open_store
from softlabels.store.info import describe_store, format_description

ROWS, CLASSES, CHUNK = 150, 6, 32
FLOAT32 = FullEncoding("float32")


def softmax(rows: np.ndarray) -> np.ndarray:
    wide = rows.astype(np.float64)
    weights = np.exp(wide - wide.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    targets = rng.integers(0, CLASSES, ROWS)
    logits = {name: rng.normal(0.0, 3.0, (ROWS, CLASSES)) for name in ("a", "b", "c")}
    for values in logits.values():
        values[np.arange(ROWS), targets] += 3.0
    return {"targets": targets, **logits}


def make_store(
    path: Path,
    encoding: Encoding,
    teacher_logits: np.ndarray,
    targets: np.ndarray,
    *,
    temperature: float,
    teacher: str = "cnn",
    fingerprint: str = "f" * 64,
    shards: list[int] | None = None,
) -> Path:
    """A store of ``teacher_logits / temperature`` (what ``generate`` stores) from a named teacher."""
    header = synthetic_header(
        encoding,
        ROWS,
        CLASSES,
        chunk_rows=CHUNK,
        temperature=temperature,
        dataset=synthetic_dataset(ROWS, CLASSES, fingerprint),
        teacher=TeacherInfo(teacher, 100, teacher[0] * 64, f"/{teacher}.pt", teacher[0] * 64),
    )
    write_rows(path, header, encoding, (teacher_logits / temperature).astype(np.float32), targets, shards)
    return path


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory, data: dict[str, np.ndarray]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("merge")
    targets = data["targets"]
    return {
        "full_t2": make_store(root / "a.zarr", FLOAT32, data["a"], targets, temperature=2.0, teacher="mlp"),
        "full_t4": make_store(root / "b.zarr", FLOAT32, data["b"], targets, temperature=4.0, teacher="cnn"),
        "topk_t4": make_store(
            root / "c.zarr",
            TopKEncoding(3, "float32"),
            data["c"],
            targets,
            temperature=4.0,
            teacher="resnet18",
        ),
        "sampled_t4": make_store(
            root / "s.zarr",
            SampledEncoding(2, seed=3),
            data["c"],
            targets,
            temperature=4.0,
            teacher="resnet18",
        ),
    }


def merged_rows(path: Path) -> np.ndarray:
    rows: np.ndarray = open_store(path).read_all().fields["logits"]
    return rows


def test_probs_mode_matches_a_numpy_reference(
    members: dict[str, Path], data: dict[str, np.ndarray], tmp_path: Path
) -> None:
    out = tmp_path / "ens.zarr"
    summary = merge_stores(
        [members["full_t2"], members["full_t4"], members["topk_t4"]],
        out,
        weights=[1, 2, 1],
        temperature=4.0,
        dtype="float32",
    )
    # By hand: every member's distribution at T=4, the top-k one with its residual spread uniformly.
    topk = softmax(data["c"] / 4.0)
    kept = np.argsort(-topk, axis=1)[:, :3]
    reconstructed = np.zeros_like(topk)
    for row in range(ROWS):
        mass = topk[row, kept[row]]
        reconstructed[row] = (1.0 - mass.sum()) / (CLASSES - 3)
        reconstructed[row, kept[row]] = mass
    mixture = 0.25 * softmax(data["a"] / 4.0) + 0.5 * softmax(data["b"] / 4.0) + 0.25 * reconstructed
    stored = merged_rows(out)
    np.testing.assert_allclose(softmax(stored), mixture, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stored, np.log(mixture), rtol=1e-5, atol=1e-5)
    assert summary.weights == (0.25, 0.5, 0.25) and summary.temperature == 4.0
    assert open_store(out).temperature == 4.0
    np.testing.assert_array_equal(open_store(out).read_all().targets, data["targets"])


def test_logits_mode_averages_retempered_logits(
    members: dict[str, Path], data: dict[str, np.ndarray], tmp_path: Path
) -> None:
    out = tmp_path / "ens.zarr"
    merge_stores(
        [members["full_t2"], members["full_t4"]], out, mode="logits", temperature=3.0, dtype="float32"
    )
    expected = 0.5 * data["a"] / 3.0 + 0.5 * data["b"] / 3.0
    np.testing.assert_allclose(merged_rows(out), expected, rtol=1e-5, atol=1e-5)


def test_classes_no_member_gives_mass_get_the_floor(members: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ens.zarr"
    merge_stores([members["sampled_t4"], members["sampled_t4"]], out, dtype="float32")
    sampled = open_store(members["sampled_t4"])
    empirical = sampled.encoding.reconstruct(sampled.read_all().fields, CLASSES)
    assert (empirical == 0).any()
    expected = np.log(np.maximum(empirical, MIN_PROBABILITY))
    np.testing.assert_allclose(merged_rows(out), expected, rtol=1e-6)


def test_provenance_lists_the_members_and_the_weights(members: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ens.zarr"
    merge_stores(
        [members["full_t4"], members["topk_t4"]], out, weights=[3, 1], command="softlabels merge ..."
    )
    provenance = open_store(out).provenance
    assert provenance.teacher.spec == "ensemble(cnn, resnet18)"
    assert provenance.teacher.num_parameters == 200 and provenance.temperature == 4.0
    (record,) = provenance.derived_from
    assert provenance.origin() == "merge" and record["mode"] == "probs" and record["weights"] == [0.75, 0.25]
    listed = record["members"]
    assert [member["location"] for member in listed] == [
        str(members["full_t4"].resolve()),
        str(members["topk_t4"].resolve()),
    ]
    assert listed[1]["teacher"]["spec"] == "resnet18" and listed[1]["teacher"]["weights_sha256"] == "r" * 64
    assert listed[1]["encoding"]["name"] == "topk" and listed[1]["temperature"] == 4.0
    assert listed[0]["run_id"] == open_store(members["full_t4"]).header.run_id
    assert provenance.dataset == open_store(members["full_t4"]).provenance.dataset
    assert record["command"] == provenance.command == "softlabels merge ..."


def test_interrupted_merge_resumes_with_pending_shards_only(
    members: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = [members["full_t2"], members["full_t4"]]
    options: dict[str, Any] = {"temperature": 4.0, "scheduler": "synchronous", "chunk_rows": CHUNK}
    reference = tmp_path / "whole.zarr"
    merge_stores(sources, reference, **options)
    out = tmp_path / "ens.zarr"
    original = merge_module.merge_shard
    calls: list[int] = []

    def failing(target: str, header: Any, shard: int) -> int:
        if shard == 2:
            raise OSError("disk went away")
        calls.append(shard)
        return original(target, header, shard)

    monkeypatch.setattr(merge_module, "merge_shard", failing)
    with pytest.raises(StoreWriteError, match="disk went away"):
        merge_stores(sources, out, **options)
    with pytest.raises(IncompleteStoreError):
        open_store(out)
    done = set(calls)

    def recording(target: str, header: Any, shard: int) -> int:
        calls.append(shard)
        return original(target, header, shard)

    calls.clear()
    monkeypatch.setattr(merge_module, "merge_shard", recording)
    summary = merge_stores(sources, out, **options)
    assert sorted(calls) == sorted(set(range(summary.shards_total)) - done)
    np.testing.assert_array_equal(merged_rows(out), merged_rows(reference))


def test_resume_with_other_weights_or_members_is_refused(members: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ens.zarr"
    pair = [members["full_t4"], members["topk_t4"]]
    merge_stores(pair, out, weights=[1, 1])
    first = open_store(out).header.run_id
    merge_stores(pair, out, weights=[2, 2])  # the same normalised weights: nothing to redo
    assert open_store(out).header.run_id == first
    with pytest.raises(StoreMismatchError, match="other settings.*'weights': \\[0.75, 0.25\\]"):
        merge_stores(pair, out, weights=[3, 1])
    with pytest.raises(StoreMismatchError, match="other settings"):
        merge_stores([members["full_t4"], members["sampled_t4"]], out)
    with pytest.raises(StoreMismatchError, match="other settings.*mode"):
        merge_stores([members["full_t4"], members["full_t2"]], out, mode="logits", temperature=4.0)
    merge_stores(pair, out, weights=[3, 1], overwrite=True)
    assert open_store(out).provenance.derived_from[0]["weights"] == [0.75, 0.25]


def test_members_of_other_data_are_refused_naming_what_differs(
    members: dict[str, Path], data: dict[str, np.ndarray], tmp_path: Path
) -> None:
    other = make_store(
        tmp_path / "other.zarr", FLOAT32, data["a"], data["targets"], temperature=4.0, fingerprint="e" * 64
    )
    with pytest.raises(StoreMismatchError, match="must label the same data.*dataset fingerprint"):
        merge_stores([members["full_t4"], other], tmp_path / "ens.zarr")
    assert not (tmp_path / "ens.zarr").exists()


@pytest.mark.parametrize(
    "names, options, error, message",
    [
        (["full_t4"], {}, InvalidArgumentError, "at least two member stores, got 1"),
        (
            ["full_t4", "topk_t4"],
            {"weights": [1.0]},
            InvalidSettingError,
            "2 member stores need 2 weights, got 1",
        ),
        (
            ["full_t4", "topk_t4"],
            {"weights": [1.0, -1.0]},
            InvalidSettingError,
            "finite numbers > 0, got -1.0",
        ),
        (["full_t4", "topk_t4"], {"weights": [1.0, float("nan")]}, InvalidSettingError, "got nan"),
        (
            ["full_t4", "topk_t4"],
            {"mode": "median"},
            InvalidSettingError,
            "mode 'median' is not one of probs",
        ),
        (["full_t2", "full_t4"], {}, InvalidSettingError, "different temperatures .*a.zarr T=2"),
        (["full_t4", "topk_t4"], {"mode": "logits"}, InvalidSettingError, "holds topk labels"),
        (["full_t2", "topk_t4"], {"temperature": 2.0}, InvalidSettingError, "cannot be re-tempered to T=2"),
        (["full_t2", "full_t4"], {"temperature": 0.0}, InvalidSettingError, "temperature must be a finite"),
        (["full_t2", "full_t4"], {"scheduler": "gpu"}, InvalidArgumentError, "scheduler 'gpu'"),
    ],
)
def test_bad_settings_are_refused_before_any_write(
    members: dict[str, Path],
    tmp_path: Path,
    names: list[str],
    options: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        merge_stores([members[name] for name in names], tmp_path / "ens.zarr", **options)
    assert not (tmp_path / "ens.zarr").exists()


def test_the_output_must_not_be_a_member(members: dict[str, Path]) -> None:
    with pytest.raises(InvalidArgumentError, match="is the member store"):
        merge_stores([members["full_t4"], members["topk_t4"]], members["topk_t4"])


def test_incomplete_members_are_refused(
    data: dict[str, np.ndarray], members: dict[str, Path], tmp_path: Path
) -> None:
    partial = make_store(
        tmp_path / "p.zarr", FLOAT32, data["b"], data["targets"], temperature=4.0, shards=[0]
    )
    with pytest.raises(IncompleteStoreError, match="incomplete"):
        merge_stores([members["full_t4"], partial], tmp_path / "ens.zarr")


def test_processes_scheduler_gives_the_same_store(members: dict[str, Path], tmp_path: Path) -> None:
    pair = [members["full_t4"], members["topk_t4"]]
    merge_stores(pair, tmp_path / "threads.zarr", chunk_rows=CHUNK)
    merge_stores(pair, tmp_path / "processes.zarr", chunk_rows=CHUNK, scheduler="processes", workers=2)
    np.testing.assert_array_equal(
        merged_rows(tmp_path / "threads.zarr"), merged_rows(tmp_path / "processes.zarr")
    )


def test_members_with_other_targets_are_refused(
    members: dict[str, Path], data: dict[str, np.ndarray], tmp_path: Path
) -> None:
    targets = data["targets"].copy()
    targets[40] = (targets[40] + 1) % CLASSES
    other = make_store(tmp_path / "other.zarr", FLOAT32, data["b"], targets, temperature=4.0)
    with pytest.raises(StoreMismatchError, match="hold different targets at rows \\[40\\]"):
        merge_stores([members["full_t4"], other], tmp_path / "ens.zarr", chunk_rows=CHUNK)


def test_info_lists_the_members(members: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ens.zarr"
    merge_stores([members["full_t4"], members["topk_t4"]], out, weights=[3, 1])
    text = format_description(describe_store(str(out)))
    derived = next(line for line in text.splitlines() if line.startswith("derived"))
    assert derived.startswith(f"derived     merge (probs mode) of {members['full_t4'].resolve()} (full ")
    assert f"{members['topk_t4'].resolve()} (topk " in derived and "T=4.0, weight 0.25" in derived
