"""Weights files: softlabels checkpoints and plain state_dicts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from softlabels.errors import WeightsError
from softlabels.sources import build_model, load_model, read_weights, save_checkpoint


def same_weights(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    other = second.state_dict()
    return all(torch.equal(tensor, other[key]) for key, tensor in first.state_dict().items())


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    trained = build_model("cnn-small", num_classes=10, in_channels=1)
    path = tmp_path / "nested" / "teacher.pt"
    digest = save_checkpoint(
        path,
        trained,
        model_spec="cnn-small",
        num_classes=10,
        in_channels=1,
        extra={"accuracy": 0.9, "epochs": [1, 2]},
    )
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [entry.name for entry in path.parent.iterdir()] == ["teacher.pt"]  # no temporary left
    stored = torch.load(path, map_location="cpu", weights_only=True)
    assert stored["format"] == "softlabels.checkpoint" and stored["version"] == 1
    assert (stored["model_spec"], stored["num_classes"], stored["in_channels"]) == ("cnn-small", 10, 1)
    assert stored["extra"] == {"accuracy": 0.9, "epochs": [1, 2]}

    loaded = load_model("cnn-small", num_classes=10, in_channels=1, weights=str(path))
    assert loaded.weights_sha256 == digest and loaded.weights_path == str(path)
    assert same_weights(trained, loaded.module)


def test_plain_state_dict(tmp_path: Path) -> None:
    trained = build_model("mlp", num_classes=3, in_channels=1)
    path = tmp_path / "mlp.pt"
    torch.save(trained.state_dict(), path)
    state_dict, digest = read_weights(path)
    assert set(state_dict) == set(trained.state_dict())
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert same_weights(trained, load_model("mlp", num_classes=3, in_channels=1, weights=str(path)).module)


def test_compiled_or_parallel_prefix_is_tolerated(tmp_path: Path) -> None:
    trained = build_model("mlp", num_classes=3, in_channels=1)
    path = tmp_path / "wrapped.pt"
    torch.save({f"module.{key}": tensor for key, tensor in trained.state_dict().items()}, path)
    assert same_weights(trained, load_model("mlp", num_classes=3, in_channels=1, weights=str(path)).module)


def test_mismatched_weights_name_the_first_key_and_shapes(tmp_path: Path) -> None:
    path = tmp_path / "ten.pt"
    save_checkpoint(
        path,
        build_model("cnn", num_classes=10, in_channels=1),
        model_spec="cnn",
        num_classes=10,
        in_channels=1,
    )
    with pytest.raises(
        WeightsError, match=r"'classifier.weight' has shape \[10, 128\] in the file but \[5, 128\]"
    ):
        load_model("cnn", num_classes=5, in_channels=1, weights=str(path))
    with pytest.raises(WeightsError, match=r"key\(s\) missing, first 'features.5.weight'"):
        load_model("cnn-small", num_classes=10, in_channels=1, weights=str(path))


def test_unexpected_keys_are_reported(tmp_path: Path) -> None:
    state_dict = build_model("mlp", num_classes=3, in_channels=1).state_dict()
    state_dict["extra.weight"] = torch.zeros(1)
    path = tmp_path / "surplus.pt"
    torch.save(state_dict, path)
    with pytest.raises(WeightsError, match="unexpected key.*'extra.weight'"):
        load_model("mlp", num_classes=3, in_channels=1, weights=str(path))


def test_unusable_weight_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="absent.pt"):
        read_weights(tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"definitely not a torch file")
    with pytest.raises(WeightsError, match="cannot load") as raised:
        read_weights(garbage)
    assert "\n" not in str(raised.value)
    not_a_state_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_a_state_dict)
    with pytest.raises(WeightsError, match="neither a state_dict nor a softlabels checkpoint"):
        read_weights(not_a_state_dict)
    newer = tmp_path / "newer.pt"
    torch.save({"format": "softlabels.checkpoint", "version": 2, "state_dict": {}}, newer)
    with pytest.raises(WeightsError, match="version 2"):
        read_weights(newer)


@pytest.mark.parametrize(
    "content, found",
    [
        (b"ideas for the next run\n", "found a text file"),
        (b"", "found an empty file"),
        (bytes(range(256)) * 4, "found 1024 bytes that are not a torch.save file"),
    ],
    ids=["text", "empty", "binary"],
)
def test_foreign_weight_files_say_what_a_weights_file_must_be(
    tmp_path: Path, content: bytes, found: str
) -> None:
    path = tmp_path / "afile.txt"
    path.write_bytes(content)
    with pytest.raises(WeightsError) as raised:
        read_weights(path)
    message = str(raised.value)
    assert "a PyTorch state_dict or a softlabels checkpoint saved with torch.save" in message
    assert found in message and "KeyError" not in message and "\n" not in message


def test_a_torch_file_of_another_kind_says_what_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(WeightsError, match="found a list"):
        read_weights(path)


def test_checkpoint_extra_must_be_plain(tmp_path: Path) -> None:
    model = build_model("mlp", num_classes=3, in_channels=1)
    with pytest.raises(WeightsError, match=r"extra\['loss'\] is a float64"):
        save_checkpoint(
            tmp_path / "x.pt",
            model,
            model_spec="mlp",
            num_classes=3,
            in_channels=1,
            extra={"loss": np.float64(1.0)},
        )
    assert not list(tmp_path.iterdir())
