"""Loading torchvision ImageNet weights into the 32x32 resnets: what loads, what is refused, and why."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from cifarcli.config import ModelConfig
from cifarcli.errors import CheckpointError
from cifarcli.models import build_model, head_module, load_imagenet_backbone, set_backbone_trainable
from cifarcli.models.pretrained import guess_resnet_name


def imagenet_state_dict(depth: int) -> dict[str, torch.Tensor]:
    """What torchvision's ImageNet file holds: a 1000-class resnet with the 7x7 stem."""
    torch.manual_seed(depth)
    factory = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34, 50: torchvision.models.resnet50}[depth]
    return factory(weights=None, num_classes=1000).state_dict()


def shapes_only(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Same keys and shapes in a tiny file (stride-0 views of one zero): all a mismatch check reads."""
    return {key: torch.zeros(()).expand(tensor.shape) for key, tensor in state.items()}


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    state = imagenet_state_dict(18)
    path = tmp_path_factory.mktemp("weights") / "resnet18-imagenet.pth"
    torch.save(state, path)
    return path, state


def test_backbone_loads_and_head_is_new(resnet18_file: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, saved = resnet18_file
    model = build_model(ModelConfig(name="resnet18", pretrained=path), num_classes=100)
    loaded = model.state_dict()
    for key in ("layer1.0.conv1.weight", "layer4.1.bn2.running_var", "bn1.weight"):
        assert torch.equal(loaded[key], saved[key]), key
    head = head_module(model)
    assert (head.out_features, head.in_features) == (100, 512)
    assert model.conv1.weight.shape == (64, 3, 3, 3)  # the 7x7 ImageNet stem was left out
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_left_out_keys_are_reported(resnet18_file: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, _ = resnet18_file
    left_out = load_imagenet_backbone(build_model(ModelConfig(name="resnet18"), 10), path, "resnet18")
    assert left_out == ["conv1.weight", "fc.weight", "fc.bias"]


def test_a_matching_3x3_stem_is_loaded_and_wrapped_files_are_read(tmp_path: Path) -> None:
    source = build_model(ModelConfig(name="resnet18"), num_classes=10)  # a CIFAR run's weights
    path = tmp_path / "cifar-run.pth"
    torch.save({"model": source.state_dict(), "epoch": 3}, path)
    model = build_model(ModelConfig(name="resnet18", pretrained=path), num_classes=100)
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert not torch.equal(model.fc.weight[:10], source.fc.weight)


def test_state_dict_key_and_ddp_prefix_are_accepted(tmp_path: Path, resnet18_file: tuple[Path, dict[str, torch.Tensor]]) -> None:
    _, saved = resnet18_file
    path = tmp_path / "ddp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in saved.items()}}, path)
    model = build_model(ModelConfig(name="resnet18", pretrained=path), num_classes=10)
    assert torch.equal(model.layer2[0].downsample[0].weight, saved["layer2.0.downsample.0.weight"])


def test_freezing_a_pretrained_model_trains_only_what_is_new(resnet18_file: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, _ = resnet18_file
    model = build_model(ModelConfig(name="resnet18", pretrained=path, freeze_backbone_epochs=2), num_classes=10)
    set_backbone_trainable(model, False)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["conv1.weight", "bn1.weight", "bn1.bias", "fc.weight", "fc.bias"]  # new stem + new head
    nn.functional.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([1, 2])).backward()
    assert model.layer1[0].conv1.weight.grad is None
    assert model.fc.weight.grad is not None and model.conv1.weight.grad is not None


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match=r"not found: .*nope\.pth; set model\.pretrained"):
        build_model(ModelConfig(name="resnet34", pretrained=missing), num_classes=10)


def test_directory_is_not_a_weights_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is not a file"):
        build_model(ModelConfig(name="resnet18", pretrained=tmp_path), num_classes=10)


def _leave_marker(marker: str) -> str:
    Path(marker).write_text("the pickle ran code")
    return marker


class CodeRunningPayload:
    """Unpickling this calls _leave_marker: what a malicious weights file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return _leave_marker, (self.marker,)


def test_pickled_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": CodeRunningPayload(marker)}, path)
    with pytest.raises(CheckpointError, match=r"refused to load .*evil\.pth.*arbitrary code"):
        build_model(ModelConfig(name="resnet18", pretrained=path), num_classes=10)
    assert not marker.exists()
    # the payload is live: an unsafe load does run it (so the check above can fail)
    torch.load(path, weights_only=False)
    assert marker.read_text() == "the pickle ran code"


@pytest.mark.parametrize("content", [b"hello, not weights", b"PK\x03\x04 truncated zip"])
def test_garbage_file_is_not_a_weights_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"pretrained weights file .*garbage\.pth is damaged or truncated"):
        build_model(ModelConfig(name="resnet18", pretrained=path), num_classes=10)


def test_non_tensor_entries_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "mixed.pth"
    torch.save({"conv1.weight": torch.zeros(1), "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="entry 'epoch' is not a tensor"):
        build_model(ModelConfig(name="resnet18", pretrained=path), num_classes=10)


def test_resnet50_file_for_resnet34_names_the_key_and_the_architecture(tmp_path: Path) -> None:
    path = tmp_path / "resnet50.pth"
    torch.save(shapes_only(imagenet_state_dict(50)), path)
    with pytest.raises(CheckpointError) as caught:
        build_model(ModelConfig(name="resnet34", pretrained=path), num_classes=10)
    message = caught.value.message
    assert "key layer1.0.conv1.weight has shape [64, 64, 1, 1] in the file but [64, 64, 3, 3]" in message
    assert "looks like a resnet50 file but model.name is resnet34" in message
    assert "\n" not in message


def test_missing_backbone_key_is_named(tmp_path: Path) -> None:
    state = shapes_only(imagenet_state_dict(18))
    del state["layer3.1.bn2.weight"]
    path = tmp_path / "cut.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"key layer3\.1\.bn2\.weight is missing from the file"):
        build_model(ModelConfig(name="resnet18", pretrained=path), num_classes=10)


def test_unexpected_key_is_named(tmp_path: Path) -> None:
    state = shapes_only(imagenet_state_dict(18))
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"the file has key extra\.weight that the model lacks"):
        build_model(ModelConfig(name="resnet18", pretrained=path), num_classes=10)


def test_files_without_batch_counters_still_load(tmp_path: Path) -> None:
    state = {k: v for k, v in imagenet_state_dict(18).items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(state, path)
    model = build_model(ModelConfig(name="resnet18", pretrained=path), num_classes=10)
    assert torch.equal(model.layer1[0].bn1.running_mean, state["layer1.0.bn1.running_mean"])


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_guess_resnet_name_from_keys(depth: int) -> None:
    meta = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34, 50: torchvision.models.resnet50}
    with torch.device("meta"):
        keys = list(meta[depth]().state_dict())
    assert guess_resnet_name(keys) == f"resnet{depth}"
    assert guess_resnet_name(["fc.weight"]) is None


def test_a_flipped_bit_in_a_weights_file_is_caught(resnet18_file: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path) -> None:
    path, _ = resnet18_file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside a tensor's bytes: torch.load alone would not notice
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"damaged or truncated \(CRC-32 mismatch"):
        build_model(ModelConfig(name="resnet18", pretrained=damaged), num_classes=10)
