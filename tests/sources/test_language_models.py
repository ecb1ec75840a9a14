"""The built-in causal language models and the inputs every built-in model takes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from softlabels.errors import InvalidArgumentError
from softlabels.sources import BUILTIN_MODELS, build_model, count_parameters, load_model, save_checkpoint
from softlabels.sources.language_models import MAX_POSITIONS

LANGUAGE_MODELS = ["lm-transformer", "lm-transformer-small", "lm-lstm"]
VOCAB = 50
LENGTH = 12


def language_model(name: str, length: int = LENGTH) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(name, num_classes=VOCAB, input_shape=(length,), input_dtype=torch.int64)
    return model.eval()


def test_language_models_are_builtins() -> None:
    assert [
        name for name in BUILTIN_MODELS if BUILTIN_MODELS[name].takes == "token ids [L]"
    ] == LANGUAGE_MODELS


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_logits_per_position(name: str) -> None:
    tokens = torch.randint(0, VOCAB, (3, LENGTH))
    with torch.no_grad():
        assert language_model(name)(tokens).shape == (3, LENGTH, VOCAB)


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_a_position_never_sees_later_tokens(name: str) -> None:
    model = language_model(name)
    tokens = torch.randint(0, VOCAB, (2, LENGTH))
    changed = tokens.clone()
    changed[:, 7] = (changed[:, 7] + 1) % VOCAB
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    torch.testing.assert_close(before[:, :7], after[:, :7])
    assert not torch.allclose(before[:, 7:], after[:, 7:])


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_padding_at_the_end_leaves_real_positions_alone(name: str) -> None:
    model = language_model(name)
    tokens = torch.randint(0, VOCAB, (1, 5))
    padded = torch.cat([tokens, torch.zeros(1, 4, dtype=torch.int64)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(padded)[:, :5], model(tokens), rtol=1e-4, atol=1e-5)


def test_teacher_is_larger_than_student() -> None:
    sizes = {name: count_parameters(language_model(name)) for name in LANGUAGE_MODELS}
    assert sizes["lm-transformer"] > 2 * sizes["lm-transformer-small"]


def test_transformer_weights_load_for_another_sequence_length(tmp_path: Path) -> None:
    weights = tmp_path / "lm.pt"
    save_checkpoint(
        weights,
        language_model("lm-transformer"),
        model_spec="lm-transformer",
        num_classes=VOCAB,
        in_channels=None,
    )
    longer = load_model(
        "lm-transformer",
        num_classes=VOCAB,
        input_shape=(4 * LENGTH,),
        input_dtype=torch.int64,
        weights=weights,
    )
    with torch.no_grad():
        assert longer.module.eval()(torch.zeros(1, 4 * LENGTH, dtype=torch.int64)).shape == (
            1,
            4 * LENGTH,
            VOCAB,
        )


def test_too_long_sequences_are_refused() -> None:
    model = language_model("lm-transformer-small")
    with pytest.raises(InvalidArgumentError, match=f"exceed this model's {MAX_POSITIONS} positions"):
        model(torch.zeros(1, MAX_POSITIONS + 1, dtype=torch.int64))


@pytest.mark.parametrize(
    ("name", "shape", "dtype", "message"),
    [
        (
            "lm-transformer",
            (3, 8, 8),
            torch.float32,
            r"takes token ids \[L\], not float32 inputs of shape \[3, 8, 8\]",
        ),
        ("lm-lstm", (16,), torch.float32, r"takes token ids \[L\], not float32 inputs of shape \[16\]"),
        ("cnn", (16,), torch.int64, r"takes images \[C, H, W\], not int64 inputs of shape \[16\]"),
        ("mlp", (16,), torch.int64, r"or features \[D\], not int64"),
        ("resnet18", (16,), torch.float32, r"takes images \[C, H, W\], not float32 inputs of shape \[16\]"),
    ],
)
def test_models_refuse_inputs_they_do_not_take(
    name: str, shape: tuple[int, ...], dtype: torch.dtype, message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        build_model(name, num_classes=5, input_shape=shape, input_dtype=dtype)


def test_mlp_on_feature_vectors() -> None:
    model = load_model(
        "mlp", num_classes=4, input_shape=(13,), input_dtype=torch.float32, random_weights=True
    )
    assert model.module(torch.randn(6, 13)).shape == (6, 4)


def test_image_models_read_channels_and_size_from_the_input_shape() -> None:
    model = build_model("resnet18", num_classes=10, input_shape=(1, 32, 32))
    conv1 = model.get_submodule("conv1")
    assert isinstance(conv1, torch.nn.Conv2d) and conv1.in_channels == 1 and conv1.stride == (1, 1)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "needs its input shape"),
        (
            {"input_shape": (3, 8, 8), "in_channels": 1},
            r"input channels 1 contradict the input shape \[3, 8, 8\]",
        ),
        ({"input_shape": (0,)}, "input shape must be positive integers"),
    ],
)
def test_input_descriptions_are_checked(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        build_model("mlp", num_classes=3, **arguments)  # type: ignore[arg-type]
