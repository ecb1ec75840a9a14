"""The training loop: outputs, losses per store encoding, resume, run-folder safety and option checks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from student_helpers import write_store

import softlabels
import softlabels.training.train as train_module
from softlabels.errors import InvalidArgumentError, RunDirectoryError, StoreMismatchError, UnknownNameError
from softlabels.format.encodings import TopKEncoding
from softlabels.sources import DatasetSource, load_model, read_weights
from softlabels.store import LabelStore
from softlabels.training.config import TeacherConfig, TrainConfig, TrainSummary
from softlabels.training.losses import distillation_loss
from softlabels.training.run_dir import locked_run_dir
from softlabels.training.train import train_student, train_teacher

STORED_T = 2.0


@pytest.fixture(scope="module")
def teacher_logits(digits_train: DatasetSource) -> np.ndarray:
    """Scaled logits of a good, slightly noisy teacher: the true class plus noise."""
    labels = np.array([digits_train.dataset[i][1] for i in range(len(digits_train))])
    noise = np.random.default_rng(0).normal(scale=0.5, size=(len(labels), 10))
    logits: np.ndarray = (3.0 * np.eye(10)[labels] + noise).astype(np.float32)
    return logits


@pytest.fixture(scope="module")
def store(
    tmp_path_factory: pytest.TempPathFactory, digits_train: DatasetSource, teacher_logits: np.ndarray
) -> Path:
    return write_store(tmp_path_factory.mktemp("train") / "labels.zarr", digits_train, logits=teacher_logits)


def student_config(out: Path, labels: Path | None = None, **changes: Any) -> TrainConfig:
    options: dict[str, Any] = {
        "dataset": "digits",
        "student": "mlp",
        "labels": None if labels is None else str(labels),
        "epochs": 3,
        "out": str(out),
        "device": "cpu",
        "progress": False,
        "batch_size": 64,
    }
    return TrainConfig(**{**options, **changes})


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return read_weights(out / "final.pt")[0]


def test_student_run_writes_every_output(tmp_path: Path, store: Path) -> None:
    summary = train_student(student_config(tmp_path / "run", store))
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} == {
        "config.json",
        "metrics.json",
        "last.pt",
        "best.pt",
        "final.pt",
        "summary.json",
        ".lock",
    }
    metrics = json.loads((run / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics] == [1, 2, 3]
    assert set(metrics[0]) == {"epoch", "train_loss", "val_loss", "val_accuracy", "seconds", "lr"}
    assert metrics[0]["lr"] == pytest.approx(0.05) and metrics[2]["lr"] < metrics[1]["lr"] < 0.05  # cosine
    assert summary.best_val_accuracy == max(row["val_accuracy"] for row in metrics) > 0.8
    assert summary.final_val_accuracy == metrics[-1]["val_accuracy"]
    assert summary.epochs_run == 3 and summary.resumed_after == 0 and len(summary.metrics) == 3
    assert json.loads((run / "summary.json").read_text())["best_val_accuracy"] == summary.best_val_accuracy
    assert "Best validation accuracy" in summary.describe()
    record = json.loads((run / "config.json").read_text())
    assert record["kind"] == "student" and record["locations"]["labels"] == str(store)
    # best.pt and final.pt are softlabels checkpoints that load as model weights.
    for name in ("best.pt", "final.pt"):
        model = load_model("mlp", num_classes=10, in_channels=1, weights=run / name)
        assert model.weights_sha256 is not None
    checkpoint = torch.load(run / "best.pt", weights_only=True)
    assert checkpoint["extra"]["epoch"] == summary.best_epoch and checkpoint["extra"]["kind"] == "student"


class LossSpy:
    """Wraps the losses' ``distillation_loss`` and records how the loop calls it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, dict[str, Any]]] = []

    def __call__(
        self, logits: torch.Tensor, labels: Any, targets: torch.Tensor | None, **options: Any
    ) -> Any:
        self.calls.append((labels, options))
        return distillation_loss(logits, labels, targets, **options)


@pytest.fixture
def loss_spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[LossSpy]:
    spy = LossSpy()
    monkeypatch.setattr(train_module, "distillation_loss", spy)
    yield spy


def test_full_rows_reach_the_loss_retempered(
    tmp_path: Path, store: Path, teacher_logits: np.ndarray, loss_spy: LossSpy
) -> None:
    train_student(student_config(tmp_path / "run", store, epochs=1, temperature=4.0, alpha=0.7))
    labels, options = loss_spy.calls[0]
    assert options == {"encoding": "full", "temperature": 4.0, "alpha": 0.7}
    rows = {tuple(row) for row in teacher_logits[:, :3] * STORED_T / 4.0}
    assert all(tuple(row) in rows for row in labels[:, :3].numpy())  # z / T2 = stored * T / T2
    assert sum(len(labels) for labels, _ in loss_spy.calls) == 1437


def test_default_alpha_and_the_store_temperature(tmp_path: Path, store: Path, loss_spy: LossSpy) -> None:
    train_student(student_config(tmp_path / "run", store, epochs=1))
    assert loss_spy.calls[0][1] == {"encoding": "full", "temperature": STORED_T, "alpha": 0.9}


def test_topk_store_trains_with_its_fields(
    tmp_path: Path, digits_train: DatasetSource, teacher_logits: np.ndarray, loss_spy: LossSpy
) -> None:
    topk = write_store(tmp_path / "topk.zarr", digits_train, encoding=TopKEncoding(3), logits=teacher_logits)
    summary = train_student(student_config(tmp_path / "run", topk, epochs=2))
    labels, options = loss_spy.calls[0]
    assert set(labels) == {"values", "indices", "log_normalizer"} and options["encoding"] == "topk"
    assert summary.final_val_accuracy > 0.5
    with pytest.raises(InvalidArgumentError, match="only full stores can be re-tempered"):
        train_student(student_config(tmp_path / "run2", topk, temperature=4.0))


def test_no_kd_uses_hard_labels_with_or_without_the_store(
    tmp_path: Path, store: Path, loss_spy: LossSpy
) -> None:
    with_store = train_student(student_config(tmp_path / "a", store, no_kd=True))
    without_store = train_student(student_config(tmp_path / "b", None, no_kd=True))
    assert not loss_spy.calls
    distilled = train_student(student_config(tmp_path / "c", store))
    assert loss_spy.calls
    assert with_store.final_val_accuracy > 0.8 and without_store.final_val_accuracy > 0.8
    assert [m.train_loss for m in with_store.metrics] != [m.train_loss for m in distilled.metrics]


def interrupt_evaluation_at(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """Make the ``call``-th validation pass raise KeyboardInterrupt, as a Ctrl-C in that epoch would."""
    original = train_module.evaluate
    calls = []

    def evaluate(*args: Any) -> tuple[float, float]:
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(train_module, "evaluate", evaluate)


def test_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(
    tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = train_student(student_config(tmp_path / "reference", store, epochs=4))
    with monkeypatch.context() as patch:
        interrupt_evaluation_at(patch, 3)
        with pytest.raises(KeyboardInterrupt):
            train_student(student_config(tmp_path / "run", store, epochs=4))
    assert [row["epoch"] for row in json.loads((tmp_path / "run" / "metrics.json").read_text())] == [1, 2]
    resumed = train_student(student_config(tmp_path / "run", store, epochs=4))
    assert (
        resumed.resumed_after == 2
        and resumed.epochs_run == 2
        and "resumed after epoch 2" in resumed.describe()
    )
    assert [m.epoch for m in resumed.metrics] == [1, 2, 3, 4]
    assert [m.val_accuracy for m in resumed.metrics] == [m.val_accuracy for m in reference.metrics]
    expected = final_weights(tmp_path / "reference")
    got = final_weights(tmp_path / "run")
    assert all(torch.equal(got[name], expected[name]) for name in expected)


def test_rerunning_a_finished_run_trains_nothing(tmp_path: Path, store: Path) -> None:
    first = train_student(student_config(tmp_path / "run", store, epochs=2))
    again = train_student(student_config(tmp_path / "run", store, epochs=2))
    assert again.epochs_run == 0 and again.resumed_after == 2 and again.metrics == first.metrics


def test_run_folder_of_other_settings_is_refused_unless_overwritten(tmp_path: Path, store: Path) -> None:
    train_student(student_config(tmp_path / "run", store, epochs=1))
    with pytest.raises(RunDirectoryError, match=r"config\.lr: run has 0\.05, now 0\.1.*overwrite"):
        train_student(student_config(tmp_path / "run", store, epochs=1, lr=0.1))
    summary = train_student(student_config(tmp_path / "run", store, epochs=1, lr=0.1, overwrite=True))
    assert summary.epochs_run == 1
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["lr"] == 0.1


def test_foreign_folder_is_refused(tmp_path: Path, store: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirectoryError, match="holds no softlabels run"):
        train_student(student_config(tmp_path / "run", store, epochs=1))
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_two_processes_never_write_one_run(tmp_path: Path, store: Path) -> None:
    with (
        locked_run_dir(tmp_path / "run"),
        pytest.raises(RunDirectoryError, match="another softlabels run"),
    ):
        train_student(student_config(tmp_path / "run", store, epochs=1))
    train_student(student_config(tmp_path / "run", store, epochs=1))  # the lock went with its holder


def test_leftovers_of_a_killed_write_are_removed(tmp_path: Path, store: Path) -> None:
    train_student(student_config(tmp_path / "run", store, epochs=1))
    leftover = tmp_path / "run" / ".last.pt.x1y2.tmp"
    leftover.write_bytes(b"half a checkpoint")
    train_student(student_config(tmp_path / "run", store, epochs=1))
    assert not leftover.exists()


def test_store_of_other_data_is_refused(tmp_path: Path, store: Path) -> None:
    with pytest.raises(StoreMismatchError, match="split"):
        train_student(student_config(tmp_path / "run", store, split="test", val_split="train"))
    assert not (tmp_path / "run").exists()


def test_diverging_loss_stops_before_saving_the_epoch(tmp_path: Path, store: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="lower learning rate"):
        train_student(student_config(tmp_path / "run", store, no_kd=True, lr=1e30))
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize(
    "changes, error, message",
    [
        ({"epochs": 0}, InvalidArgumentError, "epochs must be an integer >= 1"),
        ({"batch_size": 0}, InvalidArgumentError, "batch size must be"),
        ({"alpha": 1.5}, InvalidArgumentError, r"alpha must be a number in \[0, 1\]"),
        ({"alpha": 0.5, "no_kd": True}, InvalidArgumentError, "alpha has no effect when training on hard"),
        ({"temperature": 2.0, "no_kd": True}, InvalidArgumentError, "temperature has no effect"),
        ({"temperature": 0.0}, InvalidArgumentError, "temperature must be a positive number"),
        ({"labels": None}, InvalidArgumentError, r"a label store \(labels\) is required"),
        ({"optimizer": "lbfgs"}, UnknownNameError, "lbfgs"),
        ({"lr": -1.0}, InvalidArgumentError, "learning rate must be a positive number"),
        ({"lr": True}, InvalidArgumentError, "learning rate must be a positive number"),
        ({"seed": -1}, InvalidArgumentError, "seed must be"),
        ({"val_split": "train"}, InvalidArgumentError, "held-out"),
        ({"precision": "fp8"}, InvalidArgumentError, "fp8"),
        ({"device": "gpu"}, InvalidArgumentError, "device 'gpu'"),
        ({"buffer_chunks": 0}, InvalidArgumentError, "buffer chunks must be"),
        ({"memory_budget_mb": -1}, InvalidArgumentError, r"memory budget \(MB\) must be"),
    ],
)
def test_bad_settings_are_refused_in_plain_words(
    tmp_path: Path, changes: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as refused:
        student_config(tmp_path / "run", **{"labels": tmp_path / "labels.zarr", **changes})
    assert "--" not in str(refused.value)


def test_unknown_student_is_refused(tmp_path: Path, store: Path) -> None:
    with pytest.raises(UnknownNameError, match="nosuchnet"):
        train_student(student_config(tmp_path / "run", store, student="nosuchnet"))


def test_teacher_training_writes_loadable_checkpoints(tmp_path: Path) -> None:
    summary = softlabels.train_teacher(
        dataset="digits", teacher="mlp", epochs=2, out=str(tmp_path / "teacher"), device="cpu", progress=False
    )
    assert (
        isinstance(summary, TrainSummary) and summary.kind == "teacher" and summary.final_val_accuracy > 0.8
    )
    checkpoint = torch.load(tmp_path / "teacher" / "final.pt", weights_only=True)
    assert checkpoint["model_spec"] == "mlp" and checkpoint["extra"]["kind"] == "teacher"
    load_model("mlp", num_classes=10, in_channels=1, weights=summary.final_weights)


def test_api_takes_a_config_or_keywords_not_both(tmp_path: Path, store: Path) -> None:
    config = student_config(tmp_path / "run", store, epochs=1)
    assert softlabels.train_student(config).epochs_run == 1
    with pytest.raises(InvalidArgumentError, match="not both"):
        softlabels.train_student(config, epochs=2)
    with pytest.raises(InvalidArgumentError, match="epochs must be"):
        train_teacher(TeacherConfig(dataset="digits", teacher="mlp", epochs=0, out=str(tmp_path / "t")))


# ---------------------------------------------------------------------------------- loader workers


@pytest.mark.parametrize("budget_mb", [256, 0], ids=["in-memory", "streamed"])
def test_weights_do_not_depend_on_the_number_of_workers(tmp_path: Path, store: Path, budget_mb: int) -> None:
    weights = []
    for num_workers in (0, 1, 2):
        out = tmp_path / f"workers-{num_workers}"
        train_student(student_config(out, store, num_workers=num_workers, memory_budget_mb=budget_mb))
        weights.append(final_weights(out))
    for other in weights[1:]:
        assert all(torch.equal(other[name], weights[0][name]) for name in weights[0])


def test_in_memory_labels_are_read_once_per_run_with_workers(
    tmp_path: Path, store: Path, digits_train: DatasetSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "reads.txt"
    original = LabelStore.read_rows

    def recording(self: LabelStore, start: int, stop: int, **options: bool) -> Any:
        with log.open("a") as file:  # a file, so that reads in worker processes are counted too
            file.write(f"{start} {stop}\n")
        return original(self, start, stop, **options)

    monkeypatch.setattr(LabelStore, "read_rows", recording)
    train_student(student_config(tmp_path / "run", store, epochs=3, num_workers=2))
    assert log.read_text().splitlines() == [f"0 {len(digits_train)}"]
