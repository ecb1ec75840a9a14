"""The built-in ``text:ROOT`` source: tokens, vocabulary, windows, splits and fingerprints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from softlabels.errors import DataError, InvalidArgumentError
from softlabels.sources import load_dataset

TRAIN_TEXT = "the cat sat\n\n the dog sat down \nthe end\n"
# tokens: the cat sat <eos> the dog sat down <eos> the end <eos>  (12)
# counts: the 3, <eos> 3, sat 2, cat 1, dog 1, down 1, end 1
VOCABULARY = ("<eos>", "the", "sat", "cat", "dog", "down", "end", "<unk>")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    (tmp_path / "train.txt").write_text(TRAIN_TEXT)
    (tmp_path / "valid.txt").write_text("the bird sat\n")
    (tmp_path / "test.txt").write_text("a cat\nthe end\n")
    return tmp_path


def ids(words: str) -> list[int]:
    return [VOCABULARY.index(word) for word in words.split()]


def test_vocabulary_by_frequency_then_word_with_unk(corpus: Path) -> None:
    source = load_dataset(f"text:{corpus}", "train", seq_len=3)
    assert source.class_names == VOCABULARY and source.num_classes == len(VOCABULARY)
    assert source.input_shape == (3,) and source.input_dtype == torch.int64
    assert source.positions == 3 and source.per_position and not source.is_image
    assert source.preprocessing == "text-words-eos/v1"


def test_non_overlapping_windows_of_next_tokens(corpus: Path) -> None:
    source = load_dataset(f"text:{corpus}", "train", seq_len=5)
    # 12 tokens give (12 - 1) // 5 = 2 windows; the last token only ever serves as a target.
    assert len(source) == 2
    first, second = source.dataset[0], source.dataset[1]
    assert first[0].tolist() == ids("the cat sat <eos> the") and first[1].tolist() == ids(
        "cat sat <eos> the dog"
    )
    assert second[0].tolist() == ids("dog sat down <eos> the")
    assert second[1].tolist() == ids("sat down <eos> the end")
    assert first[0].dtype == first[1].dtype == torch.int64
    with pytest.raises(IndexError):
        source.dataset[2]


def test_held_out_words_become_unk(corpus: Path) -> None:
    source = load_dataset(f"text:{corpus}", "test", seq_len=4)
    assert source.class_names == VOCABULARY  # the training split's vocabulary, never the test split's
    tokens, targets = source.dataset[0]
    assert tokens.tolist() == ids("<unk> cat <eos> the") and targets.tolist() == ids("cat <eos> the end")


def test_validation_reads_valid_txt(corpus: Path) -> None:
    source = load_dataset(f"text:{corpus}", "validation", seq_len=2)
    assert source.dataset[0][0].tolist() == ids("the <unk>")


def test_without_train_txt_valid_txt_is_the_training_split(corpus: Path) -> None:
    (corpus / "train.txt").unlink()
    train = load_dataset(f"text:{corpus}", "train", seq_len=2)
    assert train.class_names == ("<eos>", "bird", "sat", "the", "<unk>")
    assert load_dataset(f"text:{corpus}", "test", seq_len=2).class_names == train.class_names
    with pytest.raises(DataError, match="no train.txt, so valid.txt is its training split"):
        load_dataset(f"text:{corpus}", "validation", seq_len=2)


def test_fingerprint_follows_every_token_and_the_window_length(corpus: Path) -> None:
    spec = f"text:{corpus}"
    before = load_dataset(spec, "test", seq_len=2).fingerprint
    assert load_dataset(spec, "test", seq_len=2).fingerprint == before
    assert load_dataset(spec, "test", seq_len=3).fingerprint != before
    (corpus / "test.txt").write_text("a dog\nthe end\n")
    assert load_dataset(spec, "test", seq_len=2).fingerprint != before


def test_fingerprint_follows_the_vocabulary(corpus: Path) -> None:
    spec = f"text:{corpus}"
    before = load_dataset(spec, "valid", seq_len=2)
    (corpus / "train.txt").write_text(TRAIN_TEXT + "bird bird bird bird\n")
    after = load_dataset(spec, "valid", seq_len=2)
    assert after.class_names != before.class_names and after.fingerprint != before.fingerprint


def test_fingerprint_does_not_depend_on_the_folder(
    corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("copy")
    for path in corpus.iterdir():
        (elsewhere / path.name).write_bytes(path.read_bytes())
    assert (
        load_dataset(f"text:{elsewhere}", "test", seq_len=2).fingerprint
        == load_dataset(f"text:{corpus}", "test", seq_len=2).fingerprint
    )


@pytest.mark.parametrize(
    ("spec", "split", "seq_len", "error", "message"),
    [
        ("text:{root}", "train", None, InvalidArgumentError, "needs a sequence length"),
        ("text:{root}", "train", 0, InvalidArgumentError, "sequence length must be a positive integer"),
        ("digits", "train", 8, InvalidArgumentError, r"applies to text datasets \(text:ROOT\) only"),
        (
            "text:{root}",
            "dev",
            2,
            DataError,
            r"no dev.txt for split 'dev' \(it holds test.txt, train.txt, valid.txt\)",
        ),
        ("text:{root}/absent", "train", 2, DataError, "does not exist"),
        ("text:{root}", "validation", 8, DataError, "fewer than one window of 8"),
    ],
)
def test_text_errors(
    corpus: Path, spec: str, split: str, seq_len: int | None, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as raised:
        load_dataset(spec.format(root=corpus), split, seq_len=seq_len)
    assert "\n" not in str(raised.value)


def test_unreadable_text_is_a_data_error(corpus: Path) -> None:
    (corpus / "test.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError, match="not UTF-8 text"):
        load_dataset(f"text:{corpus}", "test", seq_len=2)


def test_wikitext2(wikitext2_root: Path) -> None:
    train = load_dataset(f"text:{wikitext2_root}", "train", seq_len=64)
    test = load_dataset(f"text:{wikitext2_root}", "test", seq_len=64)
    # valid.txt: 213,886 words and 2,461 non-empty lines, so 216,347 tokens of 13,777 types (<eos> among them).
    assert len(train) == (216_347 - 1) // 64
    assert train.num_classes == 13_777 and train.class_names[:3] == ("the", "<unk>", ",")
    assert "<eos>" in train.class_names
    assert test.class_names == train.class_names and len(test) == (244_102 - 1) // 64
    tokens, targets = train.dataset[0]
    assert torch.equal(tokens[1:], targets[:-1])
