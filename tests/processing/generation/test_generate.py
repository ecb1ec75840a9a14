"""``generate``: stored rows equal teacher logits / T, resume, refusals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from slow_generate import PLUGINS, slow_generate_args, start_cli, wait_for_shards

from softlabels.errors import IncompleteStoreError, StoreMismatchError, TeacherOutputError, WeightsError
from softlabels.format.encoding_spec import EncodingSpec
from softlabels.format.schema import ATTRIBUTE_KEY, FORMAT_VERSION, SHARDS_DONE_ARRAY
from softlabels.processing.generation import GenerateConfig, generate
from softlabels.sources import load_dataset, load_model
from softlabels.store import open_store, read_header


def digits_config(out: Path, **overrides: object) -> GenerateConfig:
    settings: dict[str, object] = {
        "dataset": "digits",
        "teacher": "cnn",
        "random_weights": True,
        "temperature": 4.0,
        "out": str(out),
        "chunk_rows": 128,
        "batch_size": 100,
        "progress": False,
    }
    settings.update(overrides)
    return GenerateConfig(**settings)  # type: ignore[arg-type]


def teacher_logits(spec: str = "cnn") -> tuple[np.ndarray, np.ndarray]:
    source = load_dataset("digits", "train")
    torch.manual_seed(0)
    model = load_model(spec, num_classes=10, in_channels=1, input_size=8, random_weights=True).module.eval()
    inputs = torch.stack([source.dataset[i][0] for i in range(len(source))])
    targets = np.array([source.dataset[i][1] for i in range(len(source))])
    with torch.inference_mode():
        return model(inputs).numpy(), targets


@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("float16", 2e-3)])
def test_stored_rows_are_teacher_logits_over_t(tmp_path: Path, dtype: str, tolerance: float) -> None:
    torch.manual_seed(0)
    summary = generate(digits_config(tmp_path / "s.zarr", encoding=EncodingSpec.create("full", dtype=dtype)))
    expected, targets = teacher_logits()
    store = open_store(tmp_path / "s.zarr")
    stored = store.read_all()
    np.testing.assert_allclose(
        stored.fields["logits"].astype(np.float32), expected / 4.0, rtol=tolerance, atol=tolerance
    )
    np.testing.assert_array_equal(stored.targets, targets)
    assert (
        summary.num_rows == len(targets) == store.num_rows
        and summary.shards_written == store.layout.num_shards
    )
    provenance = store.provenance
    assert provenance.temperature == 4.0 and provenance.dataset.split == "train"
    assert provenance.teacher.num_parameters == sum(
        p.numel()
        for p in load_model(
            "cnn", num_classes=10, in_channels=1, input_size=8, random_weights=True
        ).module.parameters()
    )
    assert set(provenance.versions) >= {"softlabels", "torch", "zarr"}


def test_plain_zarr_reads_a_generated_store(tmp_path: Path) -> None:
    generate(digits_config(tmp_path / "s.zarr", encoding=EncodingSpec.create("full", dtype="float32")))
    expected, targets = teacher_logits()
    # A separate interpreter that imports zarr and numpy only, as another team's reader would.
    script = (
        "import sys, json, numpy as np, zarr\n"
        "g = zarr.open_group(sys.argv[1], mode='r')\n"
        "meta = g.attrs['softlabels']\n"
        "np.save(sys.argv[2], g['logits'][:] * meta['provenance']['temperature'])\n"
        "np.save(sys.argv[3], g['targets'][:])\n"
        "print(json.dumps([meta['format'], meta['version'], meta['complete'], 'softlabels' in sys.modules]))\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(tmp_path / "s.zarr"),
            str(tmp_path / "l.npy"),
            str(tmp_path / "t.npy"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout) == ["softlabels.labels", FORMAT_VERSION, True, False]
    np.testing.assert_allclose(np.load(tmp_path / "l.npy"), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.load(tmp_path / "t.npy"), targets)


def test_rerun_of_complete_store_does_nothing(tmp_path: Path) -> None:
    generate(digits_config(tmp_path / "s.zarr"))
    again = generate(digits_config(tmp_path / "s.zarr"))
    assert again.shards_written == 0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"temperature": 2.0}, "temperature"),
        ({"split": "test"}, "split"),
        ({"teacher": "cnn-small"}, "teacher"),
        ({"encoding": EncodingSpec.create("full", dtype="float32")}, "format parameters"),
    ],
)
def test_mismatched_rerun_is_refused(tmp_path: Path, change: dict[str, object], message: str) -> None:
    generate(digits_config(tmp_path / "s.zarr"))
    with pytest.raises(StoreMismatchError, match=message):
        generate(digits_config(tmp_path / "s.zarr", **change))
    generate(digits_config(tmp_path / "s.zarr", overwrite=True, **change))
    assert open_store(tmp_path / "s.zarr").complete


def test_teacher_without_weights_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"\(random_weights\)"):
        generate(digits_config(tmp_path / "s.zarr", random_weights=False))
    assert not (tmp_path / "s.zarr").exists()


def test_nan_outputs_name_the_samples(tmp_path: Path) -> None:
    with pytest.raises(TeacherOutputError, match=r"NaN or Inf for samples \[\d+"):
        generate(digits_config(tmp_path / "s.zarr", teacher=f"{PLUGINS}:nan_teacher"))
    with pytest.raises(IncompleteStoreError, match="incomplete"):
        open_store(tmp_path / "s.zarr")


def test_wrong_output_width(tmp_path: Path) -> None:
    with pytest.raises(TeacherOutputError, match=r"shape \(100, 3\).*10 classes"):
        generate(digits_config(tmp_path / "s.zarr", teacher=f"{PLUGINS}:three_class_teacher"))


def test_resume_after_kill_equals_uninterrupted_run(tmp_path: Path) -> None:
    killed = start_cli(*slow_generate_args(tmp_path / "a.zarr"), env={"SOFTLABELS_TEST_DELAY": "0.05"})
    wait_for_shards(tmp_path / "a.zarr", 3, killed, timeout=60)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    partial = open_store(tmp_path / "a.zarr", allow_incomplete=True)
    assert 3 <= partial.shards_done().sum() < partial.layout.num_shards, "the kill must land mid-run"

    for out in ("a.zarr", "b.zarr"):
        finished = start_cli(*slow_generate_args(tmp_path / out))
        _, err = finished.communicate(timeout=120)
        assert finished.returncode == 0, err
    resumed, fresh = open_store(tmp_path / "a.zarr").read_all(), open_store(tmp_path / "b.zarr").read_all()
    np.testing.assert_array_equal(resumed.fields["logits"], fresh.fields["logits"])
    np.testing.assert_array_equal(resumed.targets, fresh.targets)


def test_random_weights_teacher_is_the_same_on_every_run(tmp_path: Path) -> None:
    # A resumed --random-weights run must compute its missing shards with the very same teacher.
    for name in ("a.zarr", "b.zarr"):
        generate(digits_config(tmp_path / name, teacher="cnn-small"))
    first, second = open_store(tmp_path / "a.zarr"), open_store(tmp_path / "b.zarr")
    np.testing.assert_array_equal(first.read_all().fields["logits"], second.read_all().fields["logits"])
    assert (
        first.provenance.teacher.parameters_sha256 == second.provenance.teacher.parameters_sha256 is not None
    )


def make_pending(path: Path, shards: list[int]) -> None:
    """Turn ``shards`` of a finished store back into unwritten ones (zeroed rows, no record, not complete)."""
    group = zarr.open_group(str(path), mode="r+")
    header = read_header(str(path))
    for shard in shards:
        start, stop = header.layout.shard_bounds(shard)
        group["logits"][start:stop] = 0
        group[SHARDS_DONE_ARRAY][shard] = 0
    group.attrs[ATTRIBUTE_KEY] = replace(header, complete=False).to_json()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"batch_size": 50}, "computed with batch size: store has 100, this run has 50"),
        ({"precision": "bf16"}, "precision: store has 'fp32', this run has 'bf16'"),
    ],
)
def test_resume_with_settings_that_change_the_values_is_refused(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    generate(digits_config(tmp_path / "s.zarr"))
    make_pending(tmp_path / "s.zarr", [3])
    with pytest.raises(StoreMismatchError, match=message):
        generate(digits_config(tmp_path / "s.zarr", **change))


def test_resume_on_another_device_type_is_refused(tmp_path: Path) -> None:
    # TF32 and cuDNN change the values on CUDA: a store begun there cannot be finished on the CPU.
    generate(digits_config(tmp_path / "s.zarr", device="cpu"))
    assert read_header(str(tmp_path / "s.zarr")).provenance.compute == {"device": "cpu", "batch_size": 100}
    make_pending(tmp_path / "s.zarr", [3])
    header = read_header(str(tmp_path / "s.zarr"))
    begun_on_cuda = replace(header.provenance, compute={**header.provenance.compute, "device": "cuda"})
    zarr.open_group(str(tmp_path / "s.zarr"), mode="r+").attrs[ATTRIBUTE_KEY] = replace(
        header, provenance=begun_on_cuda
    ).to_json()
    with pytest.raises(
        StoreMismatchError, match="computed with device: store has 'cuda', this run has 'cpu'"
    ):
        generate(digits_config(tmp_path / "s.zarr", device="cpu"))


def test_dataloader_workers_do_not_change_the_stored_bytes(tmp_path: Path) -> None:
    # num_workers only moves data loading into other processes, so a resume may change it.
    generate(digits_config(tmp_path / "fresh.zarr"))
    generate(digits_config(tmp_path / "resumed.zarr"))
    make_pending(tmp_path / "resumed.zarr", [0, 5, 11])
    resumed = generate(digits_config(tmp_path / "resumed.zarr", num_workers=2))
    assert resumed.shards_written == 3
    fresh, again = open_store(tmp_path / "fresh.zarr"), open_store(tmp_path / "resumed.zarr")
    np.testing.assert_array_equal(again.read_all().fields["logits"], fresh.read_all().fields["logits"])
    np.testing.assert_array_equal(again.read_all().targets, fresh.read_all().targets)


def test_samples_per_second_counts_the_rows_computed(tmp_path: Path) -> None:
    # 1437 rows in shards of 128: the last shard holds 29 rows, not 1437 / 12.
    generate(digits_config(tmp_path / "s.zarr"))
    make_pending(tmp_path / "s.zarr", [11])
    summary = generate(digits_config(tmp_path / "s.zarr"))
    assert summary.shards_written == 1 and summary.rows_written == 29
    assert summary.samples_per_second == pytest.approx(29 / summary.seconds)
    assert "1 of 12 shards this run" in summary.describe()
