"""Model registry by name, and one way to get any model's penultimate features.

Every registry model is a :class:`Classifier`: ``body`` maps images to the
penultimate embedding (the input of the last linear layer), ``head`` maps that to
logits. ``features_and_logits`` gives both from one forward pass for registry
models, and falls back to a hook on the last ``nn.Linear`` for any other model.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torchvision

ModelBuilder = Callable[..., "Classifier"]
MODELS: dict[str, ModelBuilder] = {}


def register(name: str):
    def wrap(builder: ModelBuilder) -> ModelBuilder:
        MODELS[name] = builder
        return builder

    return wrap


class Classifier(nn.Module):
    """``head(body(x))`` with the penultimate embedding exposed as :meth:`embed`."""

    def __init__(self, body: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.body = body
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def list_models() -> list[str]:
    return sorted(MODELS)


def build_model(name: str, *, num_classes: int, in_channels: int = 3, image_size: int = 32) -> Classifier:
    """Build a registry model for ``in_channels`` × ``image_size`` inputs.

    Example: ``build_model("resnet18", num_classes=100, in_channels=3, image_size=32)``.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {list_models()}")
    if num_classes < 2 or in_channels < 1 or image_size < 4:
        raise ValueError(
            f"expected num_classes >= 2, in_channels >= 1, image_size >= 4; "
            f"got {num_classes}, {in_channels}, {image_size}"
        )
    return MODELS[name](num_classes=num_classes, in_channels=in_channels, image_size=image_size)


# ---------------------------------------------------------------- ConvNet (DC-style)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":  # DC's "instancenorm": GroupNorm with one group per channel, affine
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected 'instance', 'batch' or 'none'")


def convnet_body(*, in_channels: int, image_size: int, width: int = 128, depth: int = 3, norm: str = "instance"):
    """[conv3x3 → norm → ReLU → avgpool2] × depth, flattened (DC/DM/MTT ConvNet).

    28-px inputs get padding 3 on the first conv (28 → 32), as in the DC code, so
    MNIST-like data has the same 128·4·4 = 2048-d embedding as 32-px data.
    """
    layers: list[nn.Module] = []
    size, channels = image_size, in_channels
    for i in range(depth):
        pad = 3 if (i == 0 and image_size == 28) else 1
        size = size + 2 * pad - 2
        layers += [nn.Conv2d(channels, width, 3, padding=pad), _norm(norm, width), nn.ReLU(inplace=True)]
        if size >= 2:
            layers.append(nn.AvgPool2d(2, 2))
            size //= 2
        channels = width
    layers.append(nn.Flatten())
    return nn.Sequential(*layers), width * size * size


@register("convnet")
def convnet(*, num_classes: int, in_channels: int, image_size: int, width: int = 128, depth: int = 3):
    body, dim = convnet_body(in_channels=in_channels, image_size=image_size, width=width, depth=depth, norm="instance")
    return Classifier(body, dim, num_classes)


@register("convnet_bn")
def convnet_bn(*, num_classes: int, in_channels: int, image_size: int, width: int = 128, depth: int = 3):
    """ConvNet with BatchNorm: a CPU-sized teacher whose BN statistics SRe2L can match."""
    body, dim = convnet_body(in_channels=in_channels, image_size=image_size, width=width, depth=depth, norm="batch")
    return Classifier(body, dim, num_classes)


def _register_width(width: int) -> None:
    # DC's ConvNetW32/W64: the same net, narrower; CPU-sized teachers and students (about (128/w)² fewer FLOPs)
    register(f"convnet_w{width}")(lambda **kw: convnet(**kw, width=width))
    register(f"convnet_bn_w{width}")(lambda **kw: convnet_bn(**kw, width=width))


for _width in (32, 64):
    _register_width(_width)


# ---------------------------------------------------------------- torchvision ResNets


def _resnet(arch: str, *, num_classes: int, in_channels: int, image_size: int) -> Classifier:
    net = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    if image_size <= 64:
        # CIFAR stem (SRe2L, DiRe release): 3x3 stride-1 conv, no max-pool
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    dim = net.fc.in_features
    net.fc = nn.Identity()  # the body ends at the global average pool: the paper's embedding
    return Classifier(net, dim, num_classes)


@register("resnet18")
def resnet18(*, num_classes: int, in_channels: int, image_size: int):
    return _resnet("resnet18", num_classes=num_classes, in_channels=in_channels, image_size=image_size)


@register("resnet50")
def resnet50(*, num_classes: int, in_channels: int, image_size: int):
    return _resnet("resnet50", num_classes=num_classes, in_channels=in_channels, image_size=image_size)


# ---------------------------------------------------------------- features


def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate embeddings [N, d] and logits [N, classes] from one forward pass.

    Registry models split at ``body``/``head``; any other model is split at the
    input of its last ``nn.Linear`` (captured by a forward pre-hook).
    """
    if isinstance(model, Classifier):
        z = model.body(x)
        return z, model.head(z)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise TypeError(
            f"{type(model).__name__} has no nn.Linear classifier; wrap it in dire.models.Classifier "
            "to say where its penultimate features are"
        )
    captured: list[torch.Tensor] = []
    handle = linears[-1].register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return captured[-1].flatten(1), logits


@torch.no_grad()
def embed_images(model: nn.Module, images: torch.Tensor, *, batch_size: int = 256, device: str | torch.device = "cpu"):
    """Penultimate embeddings of ``images`` in eval mode, batched, returned on the CPU."""
    was_training = model.training
    model.eval()
    out = [features_and_logits(model, images[i : i + batch_size].to(device))[0].float().cpu()
           for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else images.new_zeros(0, 0)
