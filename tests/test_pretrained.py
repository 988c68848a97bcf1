"""Pretrained teachers: a local state-dict file and a torchvision weights name both load a teacher, the
checksum is checked, the cache key records the weights, and the torchvision layout maps onto this
project's models exactly (same logits)."""

from __future__ import annotations

import hashlib
import types

import pytest
import torch
import torchvision

from dire.data import load_dataset
from dire.nets import pretrained
from dire.nets.models import build_model
from dire.nets.teacher import get_teacher
from dire.nets.train import accuracy


def _torchvision_layout(model) -> dict:
    """``model``'s weights as a torchvision file holds them: the network's keys, then its final layer's."""
    return {**model.body.state_dict(), "fc.weight": model.head.weight.detach(), "fc.bias": model.head.bias.detach()}


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_local_weights_file_loads_a_teacher_and_enters_the_key(digits_teacher, tmp_path):
    trained, _ = digits_teacher
    path = tmp_path / "teacher.pt"
    torch.save(_torchvision_layout(trained), path)
    teacher, record = get_teacher(
        "digits", "convnet_bn", weights=str(path), runs_root=tmp_path / "runs", progress=False
    )
    assert record["config"]["pretrained"] == {"weights": str(path.resolve()), "sha256": _sha(path)}
    test = load_dataset("digits", split="test")
    assert record["test_acc"] == pytest.approx(accuracy(trained, test))  # the same network, measured again
    with torch.no_grad():
        probe = torch.randn(5, 1, 8, 8)
        assert torch.equal(teacher(probe), trained.eval()(probe))
    # another file is another teacher: the key follows the content
    torch.save({k: v + 1e-3 for k, v in _torchvision_layout(trained).items()}, path)
    _, other = get_teacher("digits", "convnet_bn", weights=str(path), runs_root=tmp_path / "runs", progress=False)
    assert other["dir"] != record["dir"]


def test_a_torchvision_weights_name_resolves_in_the_hub_cache(digits_teacher, tmp_path, monkeypatch):
    trained, _ = digits_teacher
    staged = tmp_path / "staged.pt"
    torch.save(_torchvision_layout(trained), staged)
    prefix = _sha(staged)[:8]
    url = f"https://download.example/convnet_bn-{prefix}.pth"
    monkeypatch.setattr(torchvision.models, "get_weight", lambda name: types.SimpleNamespace(url=url))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    target = tmp_path / "hub" / "checkpoints" / f"convnet_bn-{prefix}.pth"
    with pytest.raises(FileNotFoundError, match=f"{target} is missing; place convnet_bn-{prefix}.pth there"):
        get_teacher("digits", "convnet_bn", weights="ConvNet_Weights.TEST", runs_root=tmp_path / "runs")
    target.parent.mkdir(parents=True)
    target.write_bytes(staged.read_bytes())
    runs = tmp_path / "runs"
    _, record = get_teacher("digits", "convnet_bn", weights="ConvNet_Weights.TEST", runs_root=runs, progress=False)
    assert record["config"]["pretrained"]["weights"] == "ConvNet_Weights.TEST"
    target.write_bytes(staged.read_bytes()[:-10] + b"0123456789")  # damaged: its hash no longer matches its name
    with pytest.raises(ValueError, match="does not start with"):
        pretrained.resolve("ConvNet_Weights.TEST")


def test_torchvision_resnet18_layout_maps_onto_the_imagenet_resnet18(tmp_path):
    """The published ResNet-18 file is torchvision's state dict: mapped onto this project's resnet18 at
    224 px it must give torchvision's logits."""
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("resnet18", num_classes=10, in_channels=3, image_size=224).eval()
    pretrained.load_into(model, path)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)
    wrong = build_model("resnet18", num_classes=7, in_channels=3, image_size=224)
    with pytest.raises(ValueError, match="another number of classes"):
        pretrained.load_into(wrong, path)


def test_pretrained_teacher_refuses_a_validation_holdout(tmp_path):
    with pytest.raises(ValueError, match="no validation split can be held out"):
        get_teacher("digits", "convnet_bn", weights="ResNet18_Weights.IMAGENET1K_V1", holdout=(5, 0))
