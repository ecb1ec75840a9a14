"""The built-in text source ``text:ROOT``: word-level language-model windows over ``ROOT/<split>.txt``.

Each non-empty line contributes its whitespace-separated words and then :data:`EOS`. The
vocabulary is built from the training split alone, most frequent word first (ties by word, so
it never depends on the order of a dict), and every other word becomes :data:`UNK`. A split
becomes non-overlapping windows of ``seq_len`` tokens: window ``i`` has input ids
``tokens[i*L : i*L+L]`` and targets ``tokens[i*L+1 : i*L+L+1]`` (the next token of each
position); the tokens left over at the end, fewer than a window, are dropped.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from softlabels.errors import DataError, InvalidArgumentError
from softlabels.sources.fingerprints import FingerprintBuilder

__all__ = [
    "EOS",
    "TEXT_PREPROCESSING",
    "TRAIN_SPLIT",
    "UNK",
    "TextCorpus",
    "TextWindows",
    "open_text_split",
    "split_file",
    "tokenize",
]

EOS = "<eos>"
UNK = "<unk>"
TRAIN_SPLIT = "train"
TEXT_PREPROCESSING = "text-words-eos/v1"
# Files tried for a split name, in order; any other split name S reads S.txt.
_SPLIT_FILES = {
    "train": ("train.txt", "valid.txt"),  # valid.txt trains where train.txt is absent
    "validation": ("valid.txt", "validation.txt"),
    "valid": ("valid.txt", "validation.txt"),
    "test": ("test.txt",),
}


class TextWindows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Non-overlapping windows of a token-id sequence: ``(int64 ids [L], int64 next ids [L])``.

    Args:
        ids: The split's token ids in order.
        seq_len: Tokens per window.
    """

    def __init__(self, ids: npt.NDArray[np.int64], seq_len: int) -> None:
        self.ids = ids
        self.seq_len = seq_len

    def __len__(self) -> int:
        return (len(self.ids) - 1) // self.seq_len

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} outside [0, {len(self)})")
        start = index * self.seq_len
        window = self.ids[start : start + self.seq_len + 1]
        return torch.from_numpy(window[:-1].copy()), torch.from_numpy(window[1:].copy())

    def inputs(self) -> npt.NDArray[np.int64]:
        """All windows' input ids, ``[N, L]``."""
        return self.ids[: len(self) * self.seq_len].reshape(len(self), self.seq_len)

    def targets(self) -> npt.NDArray[np.int64]:
        """All windows' target ids, ``[N, L]``."""
        return self.ids[1 : len(self) * self.seq_len + 1].reshape(len(self), self.seq_len)


@dataclass(frozen=True)
class TextCorpus:
    """One split of ``text:ROOT`` as windows, with the vocabulary and fingerprint.

    Attributes:
        dataset: The windows.
        vocabulary: One word per token id (the source's class names).
        fingerprint: sha256 hex of split, vocabulary, window length and every id.
        file: The file the split was read from.
    """

    dataset: TextWindows
    vocabulary: tuple[str, ...]
    fingerprint: str
    file: Path


def tokenize(path: Path) -> list[str]:
    """The words of every non-empty line of ``path``, each line followed by :data:`EOS`.

    Raises:
        DataError: The file cannot be read as UTF-8 text.
    """
    tokens: list[str] = []
    try:
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                words = line.split()
                if words:
                    tokens += words
                    tokens.append(EOS)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise DataError(f"cannot read text file '{path}': {reason}") from exc
    return tokens


def split_file(root: Path, split: str) -> Path:
    """The file ``text:ROOT`` reads for ``split``.

    ``train`` reads ``train.txt``, or ``valid.txt`` when there is no ``train.txt``;
    ``validation``/``valid`` read ``valid.txt`` (or ``validation.txt``); ``test`` reads
    ``test.txt``; any other name ``S`` reads ``S.txt``.

    Raises:
        DataError: ROOT is not a folder, the file is absent, or ``validation`` is asked for
            while ``valid.txt`` serves as the training split.
    """
    if not root.is_dir():
        raise DataError(f"text dataset folder '{root}' does not exist")
    names = _SPLIT_FILES.get(split, (f"{split}.txt",))
    found = next((root / name for name in names if (root / name).is_file()), None)
    if found is None:
        present = sorted(path.name for path in root.glob("*.txt"))
        raise DataError(
            f"text dataset '{root}' has no {' or '.join(names)} for split '{split}' "
            f"(it holds {', '.join(present) or 'no .txt files'})"
        )
    if split != TRAIN_SPLIT and found == _train_file(root):
        raise DataError(
            f"text dataset '{root}' has no train.txt, so {found.name} is its training split; "
            "hold out another split (e.g. test)"
        )
    return found


def open_text_split(root: str | Path, split: str, seq_len: int) -> TextCorpus:
    """Read one split of ``text:ROOT`` as windows of ``seq_len`` tokens.

    Raises:
        InvalidArgumentError: ``seq_len`` is not a positive integer.
        DataError: Files are missing or unreadable, or the split is shorter than one window.
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise InvalidArgumentError(f"sequence length must be a positive integer, got {seq_len!r}")
    folder = Path(root)
    path = split_file(folder, split)
    train = split_file(folder, TRAIN_SPLIT)
    vocabulary = _vocabulary(train.resolve(), _modified(train))
    ids = _ids(tokenize(path), vocabulary)
    dataset = TextWindows(ids, seq_len)
    if len(dataset) == 0:
        raise DataError(
            f"text split '{split}' ({path}) has {len(ids)} tokens, fewer than one window of {seq_len} + 1"
        )
    builder = FingerprintBuilder("text", split, len(dataset), vocabulary)
    builder.add_array(dataset.inputs())
    builder.add_labels(dataset.targets())
    return TextCorpus(dataset, vocabulary, builder.hexdigest(), path)


def _train_file(root: Path) -> Path | None:
    return next((root / name for name in _SPLIT_FILES[TRAIN_SPLIT] if (root / name).is_file()), None)


def _modified(path: Path) -> int:
    return path.stat().st_mtime_ns


@functools.lru_cache(maxsize=4)
def _vocabulary(path: Path, modified_ns: int) -> tuple[str, ...]:
    """Words of the training file by falling count, then by word; :data:`UNK` last unless present.

    Cached per file and modification time: the train and validation splits share one vocabulary.
    """
    del modified_ns  # part of the cache key only
    counts = Counter(tokenize(path))
    words = sorted(counts, key=lambda word: (-counts[word], word))
    return tuple(words) if UNK in counts else (*words, UNK)


def _ids(tokens: list[str], vocabulary: tuple[str, ...]) -> npt.NDArray[np.int64]:
    index = {word: position for position, word in enumerate(vocabulary)}
    unknown = index[UNK]
    return np.fromiter((index.get(token, unknown) for token in tokens), dtype=np.int64, count=len(tokens))
