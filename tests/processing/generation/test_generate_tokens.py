"""``generate`` on token data: a language-model teacher's ``[B, L, V]`` logits stored per position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from slow_generate import PLUGINS

from softlabels.errors import InvalidArgumentError, TeacherOutputError
from softlabels.format.encoding_spec import EncodingSpec
from softlabels.format.encodings import cell_encoding
from softlabels.format.schema import IGNORED_TARGET
from softlabels.processing.generation import GenerateConfig, generate
from softlabels.processing.generation import runner as generation_runner
from softlabels.processing.generation.background import BackgroundWriter, PendingBatch
from softlabels.processing.generation.select import SCALED
from softlabels.sources import load_dataset, load_model
from softlabels.store import read_header

TEMPERATURE, BATCH = 2.0, 4
DATASET, TEACHER = f"{PLUGINS}:token_windows", f"{PLUGINS}:tiny_lm"

ENCODINGS = {
    "full": EncodingSpec.create("full", dtype="float32"),
    "topk": EncodingSpec.create("topk", k=5, dtype="float16"),
    "sampled": EncodingSpec.create("sampled", samples=7, seed=3),
}


def token_config(out: Path, encoding: EncodingSpec, **overrides: object) -> GenerateConfig:
    settings: dict[str, object] = {
        "dataset": DATASET,
        "teacher": TEACHER,
        "temperature": TEMPERATURE,
        "out": str(out),
        "encoding": encoding,
        "chunk_rows": BATCH,
        "batch_size": BATCH,
        "progress": False,
    }
    settings.update(overrides)
    return GenerateConfig(**settings)  # type: ignore[arg-type]


def teacher_rows() -> tuple[np.ndarray, np.ndarray]:
    """The teacher's scaled logits ``[N, L, V]`` and the targets ``[N, L]``, in generate's batches."""
    source = load_dataset(DATASET, "train")
    model = load_model(
        TEACHER,
        num_classes=source.num_classes,
        input_shape=source.input_shape,
        input_dtype=source.input_dtype,
        random_weights=True,
    ).module.eval()
    samples = [source.dataset[i] for i in range(len(source))]
    tokens = torch.stack([tokens for tokens, _ in samples])
    with torch.inference_mode():
        logits = torch.cat([model(tokens[first : first + BATCH]) for first in range(0, len(tokens), BATCH)])
    targets = torch.stack([targets for _, targets in samples])
    return (logits.float() / TEMPERATURE).numpy(), targets.numpy()


@pytest.mark.parametrize("name", ENCODINGS)
def test_stored_positions_are_the_teachers_logits_encoded_per_cell(tmp_path: Path, name: str) -> None:
    spec = ENCODINGS[name]
    generate(token_config(tmp_path / "s.zarr", spec))
    scaled, targets = teacher_rows()
    num_rows, positions, vocabulary = scaled.shape
    layout = read_header(tmp_path / "s.zarr").layout
    assert (layout.positions, layout.num_classes, layout.num_rows) == (positions, vocabulary, num_rows)
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    np.testing.assert_array_equal(group["targets"][:], targets)
    assert (targets == IGNORED_TARGET).any()
    expected = cell_encoding(spec.build(), (positions,)).encode(scaled, 0)
    for field, values in expected.items():
        np.testing.assert_array_equal(group[field][:], values, err_msg=field)


@pytest.mark.parametrize("name", ["topk", "sampled"])
def test_compact_formats_hand_the_writer_no_logits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    handed: list[PendingBatch] = []
    put = BackgroundWriter.put

    def recording_put(self: BackgroundWriter, batch: PendingBatch) -> None:
        handed.append(batch)
        put(self, batch)

    monkeypatch.setattr(generation_runner.BackgroundWriter, "put", recording_put)
    generate(token_config(tmp_path / "s.zarr", ENCODINGS[name]))
    assert handed
    for batch in handed:
        assert SCALED not in batch.selected
        widths = {tensor.shape[-1] for tensor in batch.selected.values() if tensor.ndim == 3}
        assert widths == {5 if name == "topk" else 7}, widths


def test_a_teacher_that_returns_one_row_per_sample_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        TeacherOutputError, match=r"shape \(4, 23\).*23 classes and 6 positions.*\[batch, 6, 23\]"
    ):
        generate(token_config(tmp_path / "s.zarr", ENCODINGS["topk"], teacher=f"{PLUGINS}:last_position_lm"))


@pytest.mark.parametrize("seq_len", [0, -3, 2.5, True])
def test_a_sequence_length_must_be_a_positive_integer(tmp_path: Path, seq_len: object) -> None:
    with pytest.raises(InvalidArgumentError, match="sequence length"):
        token_config(tmp_path / "s.zarr", ENCODINGS["full"], seq_len=seq_len)


def test_text_windows_of_the_configured_length(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.txt").write_text("the cat sat on the mat\nthe dog sat on the log\n" * 3)
    config = token_config(tmp_path / "s.zarr", ENCODINGS["topk"], dataset=f"text:{corpus}", seq_len=5)
    generate(config)
    header = read_header(tmp_path / "s.zarr")
    vocabulary = load_dataset(f"text:{corpus}", "train", seq_len=5).class_names
    assert header.layout.positions == 5 and header.layout.num_classes == len(vocabulary)
    assert header.provenance.config["seq_len"] == 5
    targets = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["targets"][:]
    assert targets.shape == (header.layout.num_rows, 5)


@pytest.mark.parametrize("name", ENCODINGS)
def test_nan_logits_name_the_samples_in_every_format(tmp_path: Path, name: str) -> None:
    first_tokens = [int(load_dataset(DATASET, "train").dataset[i][0][0]) for i in range(10)]
    expected = [i for i, token in enumerate(first_tokens) if token == first_tokens[2]]
    with pytest.raises(
        TeacherOutputError, match=rf"NaN or Inf for samples \[{', '.join(map(str, expected))}\]"
    ):
        generate(token_config(tmp_path / "s.zarr", ENCODINGS[name], teacher=f"{PLUGINS}:nan_lm"))
