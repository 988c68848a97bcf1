"""Model registry: shapes for any channels/size, the CIFAR stem, one way to get penultimate features."""

import pytest
import torch
import torch.nn as nn

from dire.nets.models import Classifier, build_model, embed_images, features_and_logits, list_models


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


# ---------------------------------------------------------------- cross-architecture students

NEW_MODELS = ["mobilenet_v2", "shufflenet_v2", "efficientnet_b0", "vit_tiny", "swin_tiny"]
FEATURE_DIMS = {"mobilenet_v2": 1280, "shufflenet_v2": 1024, "efficientnet_b0": 1280, "vit_tiny": 192, "swin_tiny": 192}
# documented sizes: parameters with a 10-class head at 3 × 32 px (about 2.24M, 0.35M, 4.02M, 2.69M, 1.27M)
PARAM_BOUNDS = {
    "mobilenet_v2": 2.5e6,
    "shufflenet_v2": 0.5e6,
    "efficientnet_b0": 4.5e6,
    "vit_tiny": 3e6,
    "swin_tiny": 1.5e6,
}
CNN_STEMS = {  # (first conv, last feature map before the global average pool)
    "mobilenet_v2": lambda b: (b.features[0][0], b.features),
    "shufflenet_v2": lambda b: (b.conv1[0], b.conv5),
    "efficientnet_b0": lambda b: (b.features[0][0], b.features),
}


@pytest.mark.parametrize("name", NEW_MODELS)
@pytest.mark.parametrize("channels,size", [(1, 8), (1, 28), (3, 32)])
def test_cross_arch_shapes_backward_and_stems(name, channels, size):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=channels, image_size=size).train()
    assert model.feature_dim == FEATURE_DIMS[name]
    if size == 32:
        assert sum(p.numel() for p in model.parameters()) < PARAM_BOUNDS[name]  # CPU-trainable
    maps = []
    if name in CNN_STEMS:
        stem, last = CNN_STEMS[name](model.body)
        assert stem.stride == (1, 1) and stem.in_channels == channels  # CIFAR stem for small images
        last.register_forward_hook(lambda _m, _a, y: maps.append(tuple(y.shape[-2:])))
    x = torch.randn(2, channels, size, size, requires_grad=True)
    z, logits = features_and_logits(model, x)
    assert z.shape == (2, model.feature_dim) and logits.shape == (2, 10)
    assert torch.allclose(logits, model.head(z))
    if maps:  # 8× downsampling overall, never below a 2×2 map
        assert maps == [{8: (2, 2), 28: (4, 4), 32: (4, 4)}[size]]
    logits.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(CNN_STEMS))
def test_cross_arch_cnn_large_images_keep_torchvision_strides(name):
    big = build_model(name, num_classes=3, in_channels=1, image_size=224)
    stem, _ = CNN_STEMS[name](big.body)
    assert stem.stride == (2, 2) and stem.in_channels == 1
    strided = [c for c in big.modules() if isinstance(c, nn.Conv2d) and c.stride == (2, 2)]
    assert len(strided) == (7 if name == "shufflenet_v2" else 5)  # stem + 4 stages (ShuffleNet: 3 stages × 2 branches)
    if name == "shufflenet_v2":
        assert isinstance(big.body.maxpool, nn.MaxPool2d)
        assert isinstance(build_model(name, num_classes=3, image_size=32).body.maxpool, nn.Identity)


def test_transformer_patches_and_windows():
    from dire.nets.models import swin_config, vit_patch_size

    assert [vit_patch_size(s) for s in (8, 28, 32, 64, 224)] == [2, 4, 4, 8, 16]
    for size in (4, 7, 10, 12, 28, 96):
        p = vit_patch_size(size)
        assert size % p == 0 and size // p >= min(7, size // 2)
    vit = build_model("vit_tiny", num_classes=3, in_channels=1, image_size=28)
    assert vit.body.conv_proj.stride == (4, 4) and vit.body.conv_proj.in_channels == 1
    assert isinstance(vit.body.heads, nn.Identity) and len(vit.body.encoder.layers) == 6
    assert [swin_config(s) for s in (8, 28, 32, 64, 224)] == [(1, 2), (2, 4), (2, 4), (2, 4), (4, 7)]
    swin = build_model("swin_tiny", num_classes=3, in_channels=1, image_size=32)
    assert swin.body.features[0][0].stride == (2, 2) and swin.body.features[0][0].in_channels == 1
    assert swin.body.features[1][0].attn.window_size == [4, 4]
    assert set(NEW_MODELS) <= set(list_models())
    with torch.no_grad():  # 224 px: patch 16 (ViT), patch 4 + window 7 (Swin); one image
        for name in ("vit_tiny", "swin_tiny"):
            m = build_model(name, num_classes=3, in_channels=3, image_size=224).eval()
            assert features_and_logits(m, torch.randn(1, 3, 224, 224))[0].shape == (1, 192)


def test_wrn_16_2_matches_the_published_size_and_ensemble_averages_logits():
    from dire.nets.models import Ensemble

    wrn = build_model("wrn_16_2", num_classes=100, in_channels=3, image_size=32)
    # WRN-16-2 on CIFAR-100 is reported at 0.70 M parameters (e.g. the CRD distillation benchmark)
    assert abs(sum(p.numel() for p in wrn.parameters()) / 1e6 - 0.70) < 0.01
    assert wrn.feature_dim == 128 and wrn(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    a, b = (build_model("convnet_w32", num_classes=10, in_channels=1, image_size=8) for _ in range(2))
    x = torch.randn(3, 1, 8, 8)
    assert torch.allclose(Ensemble([a, b])(x), (a(x) + b(x)) / 2)
