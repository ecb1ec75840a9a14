"""Built-in and torchvision model specs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from softlabels.errors import InvalidArgumentError, UnknownNameError, WeightsError
from softlabels.sources import BUILTIN_MODELS, build_model, count_parameters, load_model

IMAGE_MODELS = ["mlp", "cnn-small", "cnn", "cnn-wide"]


@pytest.mark.parametrize("name", IMAGE_MODELS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (3, 13, 9)])
def test_builtin_forward_shapes(name: str, shape: tuple[int, int, int]) -> None:
    model = build_model(name, num_classes=7, in_channels=shape[0], input_size=shape[1])
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, 7)


def test_builtins_grow_in_size() -> None:
    sizes = [count_parameters(build_model(name, num_classes=10, in_channels=3)) for name in IMAGE_MODELS]
    assert [name for name in BUILTIN_MODELS if "images" in BUILTIN_MODELS[name].takes] == IMAGE_MODELS
    assert sizes[2] < sizes[3] and sizes[1] < sizes[2]
    assert sizes[3] >= 3 * sizes[2]


def stem_of(model: nn.Module) -> tuple[nn.Conv2d, nn.Module]:
    conv1 = model.get_submodule("conv1")
    assert isinstance(conv1, nn.Conv2d)
    return conv1, model.get_submodule("maxpool")


@pytest.mark.parametrize("in_channels", [3, 1])
def test_resnet18_on_small_images(in_channels: int) -> None:
    model = build_model("resnet18", num_classes=10, in_channels=in_channels, input_size=32)
    conv1, maxpool = stem_of(model)
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1) and conv1.in_channels == in_channels
    assert isinstance(maxpool, nn.Identity)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, in_channels, 32, 32)).shape == (2, 10)


def test_torchvision_model_keeps_its_stem_for_large_inputs() -> None:
    conv1, maxpool = stem_of(
        build_model("torchvision:resnet18", num_classes=4, in_channels=1, input_size=224)
    )
    assert conv1.kernel_size == (7, 7) and conv1.in_channels == 1
    assert isinstance(maxpool, nn.MaxPool2d)


def test_non_resnet_first_conv_is_adapted() -> None:
    model = build_model("mobilenet_v3_small", num_classes=5, in_channels=1, input_size=32)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 5)


def test_random_weights_must_be_asked_for() -> None:
    with pytest.raises(WeightsError, match=r"\(teacher_weights\).*\(random_weights\)"):
        load_model("cnn", num_classes=10, in_channels=1)
    with pytest.raises(WeightsError, match=r"\(student_weights\)"):
        load_model("resnet18", num_classes=10, in_channels=1, role="student")
    model = load_model("cnn", num_classes=10, in_channels=1, random_weights=True)
    assert model.spec == "cnn" and model.weights_sha256 is None and model.weights_path is None
    assert model.num_parameters == count_parameters(model.module)


def test_weights_and_random_weights_exclude_each_other() -> None:
    with pytest.raises(InvalidArgumentError, match="not both"):
        load_model("cnn", num_classes=10, in_channels=1, weights="w.pt", random_weights=True)


@pytest.mark.parametrize("spec", ["resnet-18", "torchvision:nonet", "cnn_wide"])
def test_unknown_model_names(spec: str) -> None:
    with pytest.raises(UnknownNameError, match=r"mlp, cnn-small, cnn, cnn-wide.*resnet18"):
        build_model(spec, num_classes=10, in_channels=3)
    with pytest.raises(UnknownNameError):
        load_model(spec, num_classes=10, in_channels=3)


def test_sizes_must_be_positive() -> None:
    with pytest.raises(InvalidArgumentError, match="num_classes"):
        build_model("mlp", num_classes=0, in_channels=1)
