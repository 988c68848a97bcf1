"""Model registry: shapes for any channels/size, the CIFAR stem, one way to get penultimate features."""

import pytest
import torch
import torch.nn as nn

from dire.models import Classifier, build_model, embed_images, features_and_logits, list_models


@pytest.mark.parametrize("name", ["convnet", "convnet_bn", "resnet18", "resnet50"])
@pytest.mark.parametrize("channels,size", [(1, 8), (1, 28), (3, 32)])
def test_registry_shapes(name, channels, size):
    model = build_model(name, num_classes=7, in_channels=channels, image_size=size).eval()
    z, logits = features_and_logits(model, torch.randn(2, channels, size, size))
    assert logits.shape == (2, 7) and z.shape == (2, model.feature_dim)
    assert torch.allclose(logits, model(torch.randn(0, channels, size, size)).new_zeros(0, 7).sum() + model.head(z))


def test_convnet_matches_dc_conventions():
    m = build_model("convnet", num_classes=10, in_channels=1, image_size=28)
    assert m.feature_dim == 128 * 4 * 4  # 28 px padded to 32 by the first conv, as in DC
    assert isinstance(m.body[1], nn.GroupNorm) and m.body[1].num_groups == 128  # instance norm with affine
    bn = build_model("convnet_bn", num_classes=10, in_channels=3, image_size=32)
    assert any(isinstance(x, nn.BatchNorm2d) for x in bn.modules())


def test_resnet_stems():
    small = build_model("resnet18", num_classes=100, in_channels=3, image_size=32)
    assert small.body.conv1.kernel_size == (3, 3) and small.body.conv1.stride == (1, 1)
    assert isinstance(small.body.maxpool, nn.Identity) and small.feature_dim == 512
    large = build_model("resnet18", num_classes=1000, in_channels=3, image_size=224)
    assert large.body.conv1.kernel_size == (7, 7) and isinstance(large.body.maxpool, nn.MaxPool2d)
    assert build_model("resnet50", num_classes=10, in_channels=3, image_size=64).feature_dim == 2048
    assert build_model("convnet_bn_w32", num_classes=10, in_channels=1, image_size=28).feature_dim == 32 * 4 * 4


def test_features_of_a_model_outside_the_registry():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3))
    x = torch.randn(4, 3, 2, 2)
    z, logits = features_and_logits(net, x)
    assert torch.allclose(z, net[2](net[1](net[0](x)))) and torch.allclose(logits, net(x))
    with pytest.raises(TypeError, match="no nn.Linear classifier"):
        features_and_logits(nn.Sequential(nn.Flatten()), x)


def test_embed_images_batches_and_restores_mode():
    m = build_model("convnet_bn", num_classes=3, in_channels=1, image_size=8).train()
    x = torch.randn(10, 1, 8, 8)
    z = embed_images(m, x, batch_size=3)
    assert m.training and torch.allclose(z, m.eval().embed(x), atol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        build_model("vgg", num_classes=10)
    with pytest.raises(ValueError, match="num_classes >= 2"):
        build_model("convnet", num_classes=1)
    assert {"convnet", "convnet_bn", "resnet18", "resnet50"} <= set(list_models())
    assert isinstance(build_model("convnet", num_classes=2, in_channels=1, image_size=8), Classifier)
