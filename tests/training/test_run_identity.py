"""What a run folder keys a resume on: resolved settings and input identities, never path spellings.

Also: a refused run leaves nothing behind, and the training configs load without torch.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from student_helpers import write_store

from softlabels.errors import InvalidArgumentError, RunDirectoryError, StoreMismatchError, UnknownNameError
from softlabels.format.encodings import TopKEncoding
from softlabels.pipelines import load_pipeline, run_pipeline
from softlabels.sources import DatasetSource
from softlabels.training.config import TrainConfig
from softlabels.training.train import train_student

STORED_T = 2.0  # the temperature student_helpers.write_store records


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, digits_train: DatasetSource) -> Path:
    return write_store(tmp_path_factory.mktemp("identity") / "labels.zarr", digits_train)


def config(out: Path | str, labels: Path | str | None, **changes: Any) -> TrainConfig:
    options: dict[str, Any] = {
        "dataset": "digits",
        "student": "mlp",
        "labels": None if labels is None else str(labels),
        "epochs": 1,
        "out": str(out),
        "device": "cpu",
        "progress": False,
        "batch_size": 64,
    }
    return TrainConfig(**{**options, **changes})


def record(out: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((out / "config.json").read_text())
    return document


def test_config_json_records_resolved_settings_and_paths_apart(tmp_path: Path, store: Path) -> None:
    train_student(config(tmp_path / "run", store))
    written = record(tmp_path / "run")
    settings = written["config"]
    assert settings["alpha"] == 0.9 and settings["lr"] == 0.05 and settings["temperature"] == STORED_T
    assert settings["device"] == "cpu"
    assert not {"labels", "dataset", "data_root", "student_weights", "out"} & set(settings)
    assert written["locations"] == {
        "dataset": "digits",
        "data_root": None,
        "labels": str(store),
        "student_weights": None,
    }
    assert written["inputs"]["labels"]["temperature"] == STORED_T
    assert written["inputs"]["train preprocessing"] == "digits-8x8-[0,1]/v1"


def test_resume_accepts_the_store_path_spelled_another_way(
    tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(store.parent)
    first = train_student(config(tmp_path / "run", store.name, epochs=2))
    again = train_student(config(tmp_path / "run", store.resolve(), epochs=2))
    assert again.epochs_run == 0 and again.metrics == first.metrics
    assert record(tmp_path / "run")["locations"]["labels"] == str(store.resolve())


def test_resume_accepts_defaults_given_explicitly(tmp_path: Path, store: Path) -> None:
    """A pipeline passes alpha=0.9 where the CLI passes nothing: the same run either way."""
    first = train_student(config(tmp_path / "run", store, epochs=2))
    explicit = config(tmp_path / "run", store, epochs=2, alpha=0.9, lr=0.05, temperature=STORED_T)
    again = train_student(explicit)
    assert again.epochs_run == 0 and again.metrics == first.metrics


def test_resume_is_refused_when_the_store_was_remade(tmp_path: Path, digits_train: DatasetSource) -> None:
    labels = write_store(tmp_path / "labels.zarr", digits_train)
    train_student(config(tmp_path / "run", labels))
    shutil.rmtree(labels)
    write_store(labels, digits_train)  # the same settings, but another run made these labels
    with pytest.raises(RunDirectoryError, match=r"inputs\.labels\.run id: run has '\w+', now '\w+'"):
        train_student(config(tmp_path / "run", labels))
    shutil.rmtree(labels)
    write_store(labels, digits_train, encoding=TopKEncoding(3))
    with pytest.raises(
        RunDirectoryError, match=r"inputs\.labels\.format: run has 'full', now 'topk'"
    ) as refused:
        train_student(config(tmp_path / "run", labels))
    assert "--" not in str(refused.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto means cuda here")
def test_resume_accepts_auto_for_the_device_it_resolved_to(tmp_path: Path, store: Path) -> None:
    train_student(config(tmp_path / "run", store, device="cpu", epochs=2))
    assert train_student(config(tmp_path / "run", store, device="auto", epochs=2)).epochs_run == 0


def test_refused_foreign_folder_is_left_as_it_was(tmp_path: Path, store: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirectoryError, match="holds no softlabels run"):
        train_student(config(tmp_path / "run", store))
    assert [entry.name for entry in (tmp_path / "run").iterdir()] == ["notes.txt"]


def test_refused_run_of_other_settings_is_left_as_it_was(tmp_path: Path, store: Path) -> None:
    train_student(config(tmp_path / "run", store))
    before = {entry.name: entry.stat().st_mtime_ns for entry in (tmp_path / "run").iterdir()}
    with pytest.raises(RunDirectoryError, match=r"config\.lr: run has 0\.05, now 0\.1") as refused:
        train_student(config(tmp_path / "run", store, lr=0.1))
    assert "overwrite" in str(refused.value) and "--" not in str(refused.value)
    assert {entry.name: entry.stat().st_mtime_ns for entry in (tmp_path / "run").iterdir()} == before


def test_run_folder_that_is_a_file_is_refused(tmp_path: Path, store: Path) -> None:
    (tmp_path / "run").write_text("not a folder")
    with pytest.raises(RunDirectoryError, match="is a file"):
        train_student(config(tmp_path / "run", store))


@pytest.mark.parametrize(
    "changes, error",
    [
        ({"student": "nosuchnet"}, UnknownNameError),
        ({"temperature": 4.0, "labels": "topk"}, InvalidArgumentError),
        ({"split": "test", "val_split": "train"}, StoreMismatchError),
    ],
)
def test_run_refused_before_training_creates_no_folder(
    tmp_path: Path, digits_train: DatasetSource, store: Path, changes: dict[str, Any], error: type[Exception]
) -> None:
    if changes.get("labels") == "topk":
        changes["labels"] = write_store(tmp_path / "topk.zarr", digits_train, encoding=TopKEncoding(3))
    with pytest.raises(error):
        train_student(config(tmp_path / "new" / "run", changes.pop("labels", store), **changes))
    assert not (tmp_path / "new").exists()


def test_configs_load_and_refuse_bad_settings_without_torch() -> None:
    script = textwrap.dedent(
        """
        import sys
        from softlabels.errors import InvalidArgumentError
        from softlabels.training.config import TrainConfig
        try:
            TrainConfig(dataset="digits", student="mlp", no_kd=True, epochs=0, out="run")
        except InvalidArgumentError as error:
            print(error)
        print("torch" in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == ["epochs must be an integer >= 1, got 0", "False"]


def test_the_cli_equivalent_of_a_pipeline_student_resumes_its_run(tmp_path: Path) -> None:
    """The pipeline passes alpha = 0.9 from its file; the command line leaves alpha at its default."""
    spec = load_pipeline(
        None,
        overrides=[
            "teacher.epochs=1",
            "students.kd.epochs=1",
            "students.baseline.epochs=1",
            "run.device=cpu",
        ],
        output=str(tmp_path / "pipeline"),
    )
    run_pipeline(spec, progress=False)
    student = tmp_path / "pipeline" / "students" / "kd"
    summary = train_student(config(student, tmp_path / "pipeline" / "labels.zarr", batch_size=128))
    assert summary.epochs_run == 0 and summary.resumed_after == 1
