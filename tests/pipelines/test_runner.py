"""``run_pipeline``: unusable models and paths are refused before any stage runs; archives are unpacked once."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from softlabels.errors import InvalidArgumentError, PipelineError
from softlabels.pipelines import load_pipeline, run_pipeline


def refused(tmp_path: Path, *overrides: str) -> str:
    """The error of running the default pipeline with ``overrides``; nothing may have been written."""
    out = tmp_path / "out"
    spec = load_pipeline(overrides=overrides, output=str(out))
    with pytest.raises(PipelineError) as caught:
        run_pipeline(spec, progress=False)
    assert not out.exists()
    return str(caught.value)


def test_unknown_models_are_refused_up_front(tmp_path: Path) -> None:
    message = refused(tmp_path, "students.kd.model=cnn-smal")
    assert message.startswith("built-in digits.toml: students.kd.model: expected a built-in model (mlp, ")
    assert message.endswith('got "cnn-smal"')
    assert "teacher.model" in refused(tmp_path, "teacher.model=resnet19")


@pytest.mark.parametrize("model", ["resnet18", "torchvision:resnet18", "some.module:factory"])
def test_torchvision_names_and_plugins_pass_the_model_check(tmp_path: Path, model: str) -> None:
    # The plan passes; the run then fails on the missing (nonexistent) dataset root instead.
    message = refused(
        tmp_path, f"teacher.model={model}", "dataset.spec=imagefolder", f"dataset.root={tmp_path}/x"
    )
    assert "dataset.root: no such folder" in message


def test_missing_teacher_weights_are_not_silently_replaced_by_training(tmp_path: Path) -> None:
    message = refused(tmp_path, f"teacher.weights={tmp_path / 'typo.pt'}")
    assert message.startswith("built-in digits.toml: teacher.weights: no such file ")
    assert "leave teacher.weights out to train the teacher" in message


def test_a_missing_archive_is_refused_unless_root_holds_an_unpacked_copy(tmp_path: Path) -> None:
    settings = (
        "dataset.spec=imagefolder",
        f"dataset.root={tmp_path / 'images'}",
        f"dataset.archive={tmp_path / 'none.tar.gz'}",
    )
    assert "dataset.archive: no such file" in refused(tmp_path, *settings)


def write_image_archive(path: Path, per_class: dict[str, int]) -> None:
    """A .tar.gz of ``train/`` and ``test/`` image folders: dark 'a' and bright 'b' 8x8 PNGs."""
    rng = np.random.default_rng(0)
    staging = path.parent / "staging"
    for split, count in per_class.items():
        for label, level in (("a", 40), ("b", 200)):
            folder = staging / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = np.clip(level + rng.normal(0, 20, (8, 8, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
    with tarfile.open(path, "w:gz") as archive:
        for split in per_class:
            archive.add(staging / split, arcname=split)


def test_an_archive_is_unpacked_into_root_once_and_paths_are_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_image_archive(tmp_path / "images.tar.gz", {"train": 12, "test": 4})
    pipeline = tmp_path / "images.toml"
    pipeline.write_text(IMAGE_PIPELINE)
    monkeypatch.chdir(tmp_path)
    report = run_pipeline(load_pipeline(pipeline), progress=False)
    assert report.data is not None and report.data.status == "unpacked"
    assert (tmp_path / "unpacked" / "train" / "a").is_dir() and report.output == "data/images"
    assert report.dataset == "imagefolder:unpacked" and report.store.num_rows == 24
    assert report.store.path == "data/images/labels.zarr" and (tmp_path / report.store.path).is_dir()
    again = run_pipeline(load_pipeline(pipeline), progress=False)
    assert again.data is not None and again.data.status == "reused"


IMAGE_PIPELINE = """
[dataset]
spec = "imagefolder"
root = "unpacked"
archive = "images.tar.gz"

[teacher]
model = "mlp"
epochs = 1

[generate]
temperature = 2

[students.kd]
model = "mlp"
epochs = 1

[students.plain]
model = "mlp"
epochs = 1
kd = false

[run]
device = "cpu"
"""


def test_the_public_api_takes_a_file_or_a_spec(tmp_path: Path) -> None:
    import softlabels

    with pytest.raises(PipelineError, match="students.kd.model"):
        softlabels.run_pipeline(
            overrides=["students.kd.model=nope"], out=str(tmp_path / "out"), progress=False
        )
    with pytest.raises(InvalidArgumentError, match="apply to pipeline files"):
        softlabels.run_pipeline(softlabels.load_pipeline(), out=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_generate_views_reach_the_generate_stage_drawn_under_the_run_seed() -> None:
    from softlabels.pipelines.runner import _plan

    spec = load_pipeline(
        None, overrides=["generate.views=4", "generate.augment=crop=0.5:1,flip", "run.seed=5"]
    )
    config = _plan(spec, progress=False, overwrite=False, command=None).generate
    assert (config.views, config.augment, config.view_seed) == (4, "crop=0.5:1,flip", 5)
