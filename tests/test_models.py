"""The model zoo: registry names, shapes, gradients, exact parameter counts, head/conv lookup, freezing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cifarcli.config import MODEL_MIN_IMAGE_SIZE, MODEL_NAMES, ModelConfig
from cifarcli.errors import UsageError
from cifarcli.models import (
    HEAD_NAME,
    MODELS,
    build_model,
    conv_layer_names,
    find_layer,
    first_conv,
    freeze_norm_stats,
    head_module,
    last_conv_layer_name,
    set_backbone_trainable,
    unwrap_model,
)

CONV_MODELS = [name for name in MODEL_NAMES if name != "mlp"]


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def linear_params(width_in: int, width_out: int) -> int:
    return width_in * width_out + width_out


def test_registry_has_exactly_the_config_names() -> None:
    assert tuple(MODELS) == MODEL_NAMES


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("num_classes", [10, 100])
def test_forward_backward_shapes_and_gradient_reaches_first_layer(name: str, num_classes: int) -> None:
    torch.manual_seed(0)
    model = MODELS[name](num_classes)
    images = torch.randn(2, 3, 32, 32)
    logits = model(images)
    assert logits.shape == (2, num_classes)
    assert logits.dtype == torch.float32
    nn.functional.cross_entropy(logits, torch.tensor([0, num_classes - 1])).backward()
    first_name, first_param = next(iter(model.named_parameters()))
    assert first_param.grad is not None, first_name
    assert first_param.grad.abs().sum().item() > 0, first_name
    assert head_module(model).weight.grad.abs().sum().item() > 0


@pytest.mark.parametrize(
    ("name", "num_classes", "expected"),
    [
        ("resnet9", 10, 6_573_130),
        ("resnet18", 100, 11_220_132),
        ("resnet34", 100, 21_328_292),
        # mlp: 3072 -> 1024 -> 512 -> 256 -> 10, each Linear with a bias
        ("mlp", 10, linear_params(3072, 1024) + linear_params(1024, 512) + linear_params(512, 256) + linear_params(256, 10)),
        # simple_cnn: three 3x3 convs with bias (3->32->64->128), then 2048 -> 256 -> 128 -> 10
        (
            "simple_cnn",
            10,
            (27 * 32 + 32) + (288 * 64 + 64) + (576 * 128 + 128)
            + linear_params(2048, 256) + linear_params(256, 128) + linear_params(128, 10),
        ),
    ],
)
def test_parameter_counts_are_exact(name: str, num_classes: int, expected: int) -> None:
    assert param_count(MODELS[name](num_classes)) == expected


def test_resnet9_layout_matches_the_seed_recipe() -> None:
    model = MODELS["resnet9"](10)
    convs = [model.get_submodule(n) for n in conv_layer_names(model)]
    assert [c.out_channels for c in convs] == [64, 128, 128, 128, 256, 512, 512, 512]
    assert all(c.bias is None and c.kernel_size == (3, 3) for c in convs)
    # the residual adds its input back: with the block zeroed out, res1 is the identity
    for param in model.res1.parameters():
        nn.init.zeros_(param)
    features = torch.randn(1, 128, 16, 16)
    assert torch.equal(model.res1(features), features)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_torchvision_resnets_have_a_32px_stem(name: str) -> None:
    model = MODELS[name](10)
    stem = first_conv(model)
    assert (stem.kernel_size, stem.stride, stem.padding, stem.bias) == ((3, 3), (1, 1), (1, 1), None)
    assert isinstance(model.maxpool, nn.Identity)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_head_is_a_linear_called_fc_sized_to_the_classes(name: str) -> None:
    model = MODELS[name](7)
    head = head_module(model)
    assert isinstance(head, nn.Linear)
    assert head.out_features == 7
    assert head is model.get_submodule(HEAD_NAME)


# mlp and simple_cnn drop out after each hidden fully connected layer; the others before the head.
DROPOUT_LAYERS = {"mlp": 3, "simple_cnn": 2}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_dropout_is_active_only_in_training(name: str) -> None:
    torch.manual_seed(0)
    model = MODELS[name](10, dropout=0.5)
    rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert rates == [0.5] * DROPOUT_LAYERS.get(name, 1)
    images = torch.randn(2, 3, 32, 32)
    model.eval()
    assert torch.equal(model(images), model(images))
    model.train()
    assert not torch.equal(model(images), model(images))


@pytest.mark.parametrize("name", ["resnet18", "mlp", "simple_cnn"])
def test_dropout_keeps_state_dict_keys(name: str) -> None:
    assert list(MODELS[name](10).state_dict()) == list(MODELS[name](10, dropout=0.3).state_dict())


def test_dropout_follows_every_hidden_layer_of_the_mlp() -> None:
    model = MODELS["mlp"](10, dropout=0.2)
    kinds = [type(m).__name__ for m in model.hidden.modules() if not isinstance(m, nn.Sequential)]
    assert kinds == ["Flatten"] + ["Linear", "LeakyReLU", "Dropout"] * 3


@pytest.mark.parametrize(
    ("name", "hidden", "expected"),
    [
        ("mlp", [64, 32], linear_params(3072, 64) + linear_params(64, 32) + linear_params(32, 10)),
        ("mlp", [], linear_params(3072, 10)),  # no hidden layer: a linear classifier
        ("simple_cnn", [100], (27 * 32 + 32) + (288 * 64 + 64) + (576 * 128 + 128) + linear_params(2048, 100) + linear_params(100, 10)),
    ],
)
def test_hidden_sizes_set_the_fully_connected_widths(name: str, hidden: list[int], expected: int) -> None:
    model = build_model(ModelConfig(name=name, hidden_sizes=hidden), num_classes=10)
    assert param_count(model) == expected
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def smallest_image_side(name: str) -> int:
    return MODEL_MIN_IMAGE_SIZE.get(name, 4)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_adapts_to_the_image_size(name: str) -> None:
    for side in (smallest_image_side(name), 48):
        model = build_model(ModelConfig(name=name), num_classes=5, image_size=side).eval()
        assert model(torch.randn(2, 3, side, side)).shape == (2, 5), (name, side)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")  # simple_cnn's first Linear has no inputs
@pytest.mark.parametrize("name", sorted(MODEL_MIN_IMAGE_SIZE))
def test_the_minimum_image_size_is_the_real_limit(name: str) -> None:
    side = MODEL_MIN_IMAGE_SIZE[name] - 1
    model = build_model(ModelConfig(name=name), num_classes=5, image_size=side).eval()
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 3, side, side))


def test_fully_connected_models_size_their_first_layer_from_the_image() -> None:
    mlp = build_model(ModelConfig(name="mlp"), num_classes=10, image_size=64)
    assert mlp.hidden[1].in_features == 3 * 64 * 64
    cnn = build_model(ModelConfig(name="simple_cnn"), num_classes=10, image_size=64)
    assert cnn.hidden[1].in_features == 128 * 8 * 8
    resnet9 = build_model(ModelConfig(name="resnet9"), num_classes=10, image_size=64)
    assert param_count(resnet9) == 6_573_130  # global pooling: the same network at any size


@pytest.mark.parametrize("name", CONV_MODELS)
def test_conv_layer_lookup(name: str) -> None:
    model = MODELS[name](10)
    names = conv_layer_names(model)
    assert names and all(isinstance(model.get_submodule(n), nn.Conv2d) for n in names)
    assert first_conv(model) is model.get_submodule(names[0])
    assert first_conv(model).in_channels == 3
    assert last_conv_layer_name(model) == names[-1]
    assert find_layer(model, names[-1]) is model.get_submodule(names[-1])


def test_last_conv_names_are_the_deepest_convs() -> None:
    assert last_conv_layer_name(MODELS["resnet9"](10)) == "res3.block2.conv"
    assert last_conv_layer_name(MODELS["resnet18"](10)) == "layer4.1.conv2"
    assert last_conv_layer_name(MODELS["resnet50"](10)) == "layer4.2.conv3"
    assert last_conv_layer_name(MODELS["simple_cnn"](10)) == "conv3.0"


def test_mlp_has_no_conv_layer_and_says_so() -> None:
    model = MODELS["mlp"](10)
    assert conv_layer_names(model) == []
    with pytest.raises(UsageError, match="MLP has no conv layer.*resnet9"):
        first_conv(model)
    with pytest.raises(UsageError, match="no conv layer"):
        last_conv_layer_name(model)


def test_find_layer_names_the_choices() -> None:
    with pytest.raises(UsageError, match=r"layer 'layer9' not found in ResNet9.*prep\.conv"):
        find_layer(MODELS["resnet9"](10), "layer9")


def test_wrapped_models_are_unwrapped() -> None:
    model = MODELS["simple_cnn"](10)
    wrapped = nn.DataParallel(model)  # stands in for DDP / torch.compile, which wrap the same way
    assert unwrap_model(wrapped) is model
    assert head_module(wrapped) is model.fc
    assert conv_layer_names(wrapped) == conv_layer_names(model)


def test_build_model_uses_the_config_slice() -> None:
    model = build_model(ModelConfig(name="simple_cnn", dropout=0.25, hidden_sizes=[64]), num_classes=20)
    assert head_module(model).out_features == 20 and head_module(model).in_features == 64
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.25]


@pytest.mark.parametrize(
    "name, trainable",
    [
        ("resnet9", {"fc.weight", "fc.bias"}),
        # the 3x3 stem never comes from ImageNet weights, so it trains with the head
        ("resnet18", {"fc.weight", "fc.bias", "conv1.weight", "bn1.weight", "bn1.bias"}),
    ],
)
def test_freezing_leaves_only_the_head_and_fresh_stem_trainable(name: str, trainable: set[str]) -> None:
    model = MODELS[name](10)
    set_backbone_trainable(model, False)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable
    set_backbone_trainable(model, True)
    assert all(p.requires_grad for p in model.parameters())


def test_frozen_batchnorm_keeps_its_running_statistics() -> None:
    model = MODELS["resnet9"](10)
    set_backbone_trainable(model, False)
    model.train()
    frozen = freeze_norm_stats(model)
    assert frozen == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 8
    assert model.training and not model.prep.bn.training
    mean_before = model.prep.bn.running_mean.clone()
    model(torch.randn(4, 3, 32, 32) * 3 + 1)
    assert torch.equal(model.prep.bn.running_mean, mean_before)
    # an unfrozen backbone is left in train mode, so its statistics do move
    set_backbone_trainable(model, True)
    model.train()
    assert freeze_norm_stats(model) == 0
    model(torch.randn(4, 3, 32, 32) * 3 + 1)
    assert not torch.equal(model.prep.bn.running_mean, mean_before)
