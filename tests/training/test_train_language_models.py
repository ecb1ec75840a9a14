"""Training causal language models: perplexity, ignored positions, KD from token stores and the hard-label baseline."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from synthetic_stores import synthetic_header, write_rows
from torch import nn
from torch.utils.data import DataLoader

import softlabels.training.train as train_module
from softlabels.errors import DataError, InvalidArgumentError
from softlabels.format.encodings import Encoding, SampledEncoding, TopKEncoding
from softlabels.format.identity import dataset_info
from softlabels.format.schema import IGNORED_TARGET
from softlabels.sources import load_dataset
from softlabels.store import FullEncoding
from softlabels.training.config import TeacherConfig, TrainConfig
from softlabels.training.train import evaluate, train_student, train_teacher

SEQ_LEN = 8
WORDS = "the cat sat on a mat and dog ran in park big red house".split()


def write_corpus(root: Path, train_lines: int = 60, test_lines: int = 20) -> Path:
    """``train.txt`` and ``test.txt`` of short random sentences over a few words."""
    generator = random.Random(0)
    root.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", train_lines), ("test", test_lines)):
        lines = (" ".join(generator.choices(WORDS, k=generator.randint(3, 9))) for _ in range(count))
        (root / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def loop_options(corpus: Path, out: Path, **changes: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "dataset": f"text:{corpus}",
        "seq_len": SEQ_LEN,
        "val_split": "test",
        "epochs": 2,
        "out": str(out),
        "device": "cpu",
        "progress": False,
        "batch_size": 8,
        "optimizer": "adamw",
    }
    return {**options, **changes}


def test_teacher_on_text_reports_perplexity_and_next_token_accuracy(corpus: Path, tmp_path: Path) -> None:
    summary = train_teacher(
        TeacherConfig(teacher="lm-transformer-small", **loop_options(corpus, tmp_path / "t"))
    )
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert [row["val_perplexity"] for row in metrics] == pytest.approx(
        [math.exp(row["val_loss"]) for row in metrics]
    )
    assert summary.final_val_perplexity == pytest.approx(metrics[-1]["val_perplexity"])
    assert summary.best_val_perplexity == pytest.approx(min(row["val_perplexity"] for row in metrics))
    # Far below a uniform guess over the vocabulary (the few words, <eos> and <unk>).
    assert summary.final_val_perplexity < len(WORDS) + 2
    assert "perplexity" in summary.describe() and "next-token accuracy" in summary.describe()
    assert json.loads((tmp_path / "t" / "summary.json").read_text())["final_val_perplexity"] > 1
    checkpoint = torch.load(tmp_path / "t" / "final.pt", weights_only=True)
    assert checkpoint["in_channels"] is None and checkpoint["num_classes"] == len(
        checkpoint["extra"]["class_names"]
    )


def test_image_runs_record_no_perplexity(tmp_path: Path) -> None:
    summary = train_teacher(
        TeacherConfig(dataset="digits", teacher="mlp", epochs=1, out=str(tmp_path / "t"), progress=False)
    )
    assert summary.final_val_perplexity is None and "perplexity" not in summary.describe()
    assert "val_perplexity" not in json.loads((tmp_path / "t" / "metrics.json").read_text())[0]


class FixedLogits(nn.Module):
    """Logits ``[B, L, V]`` looked up by token id: what a trained model would say, fixed for a test."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[tokens]


def test_evaluate_averages_over_labelled_positions_only() -> None:
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(5, 5, generator=generator)
    inputs = torch.randint(0, 5, (6, 4), generator=generator)
    targets = torch.randint(0, 5, (6, 4), generator=generator)
    targets[0] = IGNORED_TARGET
    targets[3, 1:] = IGNORED_TARGET
    loader = DataLoader(list(zip(inputs, targets, strict=True)), batch_size=4)
    loss, accuracy = evaluate(FixedLogits(table), loader, torch.device("cpu"), "fp32")
    logits, labels = table[inputs][targets != IGNORED_TARGET], targets[targets != IGNORED_TARGET]
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)), rel=1e-6)
    assert accuracy == pytest.approx(float((logits.argmax(1) == labels).float().mean()))


def test_evaluate_refuses_a_split_without_a_labelled_position() -> None:
    inputs = torch.zeros((2, 3), dtype=torch.int64)
    loader = DataLoader(list(zip(inputs, torch.full((2, 3), IGNORED_TARGET), strict=True)), batch_size=2)
    with pytest.raises(DataError, match="no labelled sample or position"):
        evaluate(FixedLogits(torch.zeros(2, 2)), loader, torch.device("cpu"), "fp32")


def test_evaluate_names_logits_that_do_not_fit_the_targets() -> None:
    loader = DataLoader([(torch.zeros(3, dtype=torch.int64), 1)], batch_size=1)
    with pytest.raises(DataError, match=r"logits of shape \[1, 3, 2\] for targets of shape \[1\]"):
        evaluate(FixedLogits(torch.zeros(2, 2)), loader, torch.device("cpu"), "fp32")


def test_hard_label_loss_skips_ignored_positions_and_an_ignored_batch_adds_nothing() -> None:
    logits = torch.randn(3, 4, 6, requires_grad=True)
    targets = torch.randint(0, 6, (3, 4))
    targets[1, :2] = IGNORED_TARGET
    loss = train_module._HardLabelLoss()(logits, torch.empty(0), targets)
    kept = targets != IGNORED_TARGET
    assert float(loss.detach()) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits[kept], targets[kept]))
    )
    ignored = train_module._HardLabelLoss()(logits, torch.empty(0), torch.full((3, 4), IGNORED_TARGET))
    assert float(ignored) == 0.0
    ignored.backward()
    assert logits.grad is not None and not logits.grad.any()


def token_store(corpus: Path, path: Path, encoding: Encoding) -> Path:
    """A store of the corpus' training windows whose teacher prefers each position's true next word."""
    source = load_dataset(f"text:{corpus}", "train", seq_len=SEQ_LEN)
    targets = np.stack([source.dataset[i][1].numpy() for i in range(len(source))])
    noise = np.random.default_rng(0).normal(scale=0.5, size=(*targets.shape, source.num_classes))
    values = (3.0 * np.eye(source.num_classes)[targets] + noise).astype(np.float32)
    header = synthetic_header(
        encoding,
        len(source),
        source.num_classes,
        chunk_rows=16,
        temperature=1.0,
        dataset=dataset_info(source),
        positions=SEQ_LEN,
    )
    write_rows(path, header, encoding, values, targets.astype(np.int64))
    return path


@pytest.mark.parametrize(
    "encoding", [FullEncoding(), TopKEncoding(4), SampledEncoding(8, seed=3)], ids=lambda e: e.name
)
def test_student_distils_from_a_token_store_through_the_token_losses(
    corpus: Path, tmp_path: Path, encoding: Encoding, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = token_store(corpus, tmp_path / "labels.zarr", encoding)
    shapes: list[set[tuple[int, ...]]] = []
    original = train_module.distillation_loss

    def spy(logits: torch.Tensor, labels: Any, targets: torch.Tensor, **options: Any) -> torch.Tensor:
        fields = {"logits": labels} if isinstance(labels, torch.Tensor) else labels
        # Student logits, every label field and the targets share [batch, positions].
        shapes.append({tuple(tensor.shape[:2]) for tensor in (logits, targets, *fields.values())})
        return original(logits, labels, targets, **options)

    monkeypatch.setattr(train_module, "distillation_loss", spy)
    summary = train_student(
        TrainConfig(student="lm-transformer-small", labels=str(store), **loop_options(corpus, tmp_path / "s"))
    )
    assert shapes and all(len(shape) == 1 and next(iter(shape))[1] == SEQ_LEN for shape in shapes)
    assert summary.final_val_perplexity is not None and math.isfinite(summary.final_val_perplexity)


def test_hard_label_baseline_trains_a_language_model_without_a_store(corpus: Path, tmp_path: Path) -> None:
    summary = train_student(
        TrainConfig(student="lm-lstm", no_kd=True, **loop_options(corpus, tmp_path / "b", epochs=1))
    )
    assert summary.final_val_perplexity is not None and summary.final_val_perplexity < len(WORDS) + 2


def test_sequence_length_is_checked_and_recorded_only_when_given(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="sequence length must be an integer >= 1, got 0"):
        TrainConfig(student="lm-lstm", no_kd=True, **loop_options(corpus, tmp_path, seq_len=0))
    assert (
        TrainConfig(student="lm-lstm", no_kd=True, **loop_options(corpus, tmp_path)).settings()["seq_len"]
        == SEQ_LEN
    )
    assert "seq_len" not in TeacherConfig(dataset="digits", teacher="mlp", epochs=1, out="x").settings()
