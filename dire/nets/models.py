"""Model registry by name, and one way to get any model's penultimate features.

Every registry model is a :class:`Classifier`: ``body`` maps images to the
penultimate embedding (the input of the last linear layer), ``head`` maps that to
logits. ``features_and_logits`` gives both from one forward pass for registry
models, and falls back to a hook on the last ``nn.Linear`` for any other model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn as nn
import torchvision

from dire.data import DatasetInfo, from_uint8
from dire.nets.speed import autocast, to_device

ModelBuilder = Callable[..., "Classifier"]
MODELS: dict[str, ModelBuilder] = {}


def register(name: str):
    """Decorator: add ``builder`` to :data:`MODELS` under ``name``; a name may be registered once."""

    def wrap(builder: ModelBuilder) -> ModelBuilder:
        if name in MODELS:
            raise ValueError(f"a model named {name!r} is already registered")
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


def _register_depth(depth: int) -> None:
    # DC's ConvNetD4 / D5: the ConvNet for 64-px (Tiny-ImageNet) and 128-px inputs in MTT
    register(f"convnet_d{depth}")(lambda **kw: convnet(**kw, depth=depth))


for _depth in (4, 5):
    _register_depth(_depth)


@register("convnet_nn")
def convnet_nn(*, num_classes: int, in_channels: int, image_size: int, width: int = 128, depth: int = 3):
    """DC's ConvNetNN (no normalisation). On 8-px digits the instance norm of the last block sees 2×2 maps,
    whose near-zero variances make second-order gradients (MTT's unroll) erratic; without a norm they are not."""
    body, dim = convnet_body(in_channels=in_channels, image_size=image_size, width=width, depth=depth, norm="none")
    return Classifier(body, dim, num_classes)


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


# ---------------------------------------------------------------- Wide ResNet (G-VBSM's WRN-16-2)


class _WideBlock(nn.Module):
    """Pre-activation basic block: BN → ReLU → conv3x3 (stride) → BN → ReLU → conv3x3, 1x1 shortcut on shape change."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(torch.relu(self.bn2(self.conv1(out))))
        return out + skip


@register("wrn_16_2")
def wrn_16_2(*, num_classes: int, in_channels: int, image_size: int, depth: int = 16, widen: int = 2):
    """Wide ResNet (Zagoruyko & Komodakis) depth 16, widen 2: three groups of (depth − 4) / 6 = 2 blocks with
    16·k, 32·k, 64·k channels, strides 1, 2, 2, then BN → ReLU → global average pool (the CIFAR WRN)."""
    n = (depth - 4) // 6
    widths = [16, 16 * widen, 32 * widen, 64 * widen]
    layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)]
    for group, stride in zip(range(3), (1, 2, 2)):
        for i in range(n):
            layers.append(
                _WideBlock(widths[group] if i == 0 else widths[group + 1], widths[group + 1], stride if i == 0 else 1)
            )
    layers += [nn.BatchNorm2d(widths[3]), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Classifier(nn.Sequential(*layers), widths[3], num_classes)


class Ensemble(nn.Module):
    """The mean logits of several classifiers (G-VBSM and UFC soft labels)."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.models = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.models]).mean(0)


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
            f"{type(model).__name__} has no nn.Linear classifier; wrap it in dire.nets.models.Classifier "
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
def embed_batches(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    count: int,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> torch.Tensor:
    """Penultimate embeddings ``[count, d]`` (eval mode, on the CPU, float32 whatever ``precision`` the forward
    pass ran in: :func:`dire.nets.speed.autocast`) of the ``count`` images arriving in ``batches``, so a caller
    that decodes a batch at a time never holds more than one batch of images.

    They are written into one tensor allocated at the first batch: keeping each batch's small result until a final
    concatenation interleaves long-lived blocks with every forward pass's large temporaries and fragments the heap
    (measured: +1.25 MB of RSS per batch of 64 images at 224 px, growing with the dataset)."""
    was_training = model.training
    model.eval()
    out, filled = None, 0
    try:
        for x in batches:
            with autocast(device, precision):
                z = features_and_logits(model, to_device(x, device))[0]
            if out is None:
                out = torch.empty(count, z.shape[1], dtype=torch.float32)
            out[filled : filled + len(z)] = z.float()
            filled += len(z)
    finally:
        model.train(was_training)
    if filled != count:
        raise ValueError(f"expected {count} images in the batches; got {filled}")
    return torch.zeros(0, 0) if out is None else out


def embed_images(
    model: nn.Module,
    images: torch.Tensor,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    info: DatasetInfo | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """Penultimate embeddings of ``images`` in eval mode, batched, returned on the CPU as float32.

    ``images``: normalized float images, or with ``info`` stored uint8 pixels of that dataset, decoded to float a
    batch at a time on ``device`` (a synthetic set as float is 4x its uint8 bytes: 30 GB at ImageNet IPC 50)."""

    def batches() -> Iterator[torch.Tensor]:
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size]
            yield x if info is None else from_uint8(x.to(device, non_blocking=True), info)

    return embed_batches(model, batches(), len(images), device=device, precision=precision)


# ---------------------------------------------------------------- cross-architecture students
#
# Torchvision architectures (weights=None) for the cross-architecture table, built for any
# ``in_channels`` and small images the way the CIFAR variants of UFC/G-VBSM are: for
# image_size <= 64 the stem convolution has stride 1 (and ShuffleNet loses its stem max-pool),
# so every CNN downsamples by 8 overall (32 px -> a 4×4 final map, like the CIFAR ResNet18).
# On top of that, any stride-2 stage that would shrink the (nominal) feature map below 2×2 is
# made stride 1, so 8-px inputs end on a 2×2 map instead of 1×1 (a stride-2 3×3/5×5 conv with
# padding k // 2 never reaches 0 px, but stacking them would leave 1 px for the last stages).
# 224-px models are torchvision's own, apart from the first conv taking ``in_channels``.


def _halve(size: int) -> int:
    """Output size of a stride-2 conv or pool with an odd kernel k and padding k // 2."""
    return (size - 1) // 2 + 1


def _plan_downsampling(blocks, size: int, *, skip_first: bool) -> int:
    """Set the stride-2 convs of ``blocks`` (in forward order) to stride 1 where needed.

    A block downsamples only if its input map is at least 3 px (its output then is at
    least 2 px); with ``skip_first`` its first downsampling block never does (the CIFAR
    convention for MobileNetV2/EfficientNet). Returns the final map size for ``size`` px
    entering the first block. A block's stride-2 convs change together (ShuffleNet has
    one per branch); in every such block input and output channels differ, so the block
    has no residual shortcut and stays valid with stride 1.
    """
    first = True
    for block in blocks:
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
        if not convs:
            continue
        if (skip_first and first) or size < 3:
            for conv in convs:
                conv.stride = (1, 1)
        else:
            size = _halve(size)
        first = False
    return size


def _new_stem(old: nn.Conv2d, in_channels: int, stride: int, *, fan_out_init: bool) -> nn.Conv2d:
    """``old`` with ``in_channels`` inputs and the given stride (same kernel, padding, bias)."""
    conv = nn.Conv2d(
        in_channels, old.out_channels, old.kernel_size, stride=stride, padding=old.padding, bias=old.bias is not None
    )
    if fan_out_init:  # torchvision's MobileNetV2/EfficientNet conv init
        nn.init.kaiming_normal_(conv.weight, mode="fan_out")
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
    return conv


@register("mobilenet_v2")
def mobilenet_v2(*, num_classes: int, in_channels: int, image_size: int):
    """Torchvision MobileNetV2 (width 1.0), 1280-d embedding.

    image_size <= 64: stem stride 1 and the first stride-2 stage (24 channels) at stride 1,
    as in the common CIFAR MobileNetV2 (32 px -> 4×4 final map); 8 px ends on 2×2.
    The classifier's dropout is dropped: the body ends at global average pool + flatten.
    """
    net = torchvision.models.mobilenet_v2(weights=None, num_classes=num_classes)
    small = image_size <= 64
    net.features[0][0] = _new_stem(net.features[0][0], in_channels, 1 if small else 2, fan_out_init=True)
    size = image_size if small else _halve(image_size)
    _plan_downsampling(list(net.features)[1:], size, skip_first=small)
    dim = net.last_channel
    net.classifier = nn.Identity()
    return Classifier(net, dim, num_classes)


@register("shufflenet_v2")
def shufflenet_v2(*, num_classes: int, in_channels: int, image_size: int):
    """Torchvision ShuffleNetV2 x0.5 (stage widths 24/48/96/192, 1024-d embedding).

    x0.5 is the width used in the G-VBSM/UFC cross-architecture tables, and the cheapest
    student (about 0.35M parameters in the body). image_size <= 64: 3×3 stem at stride 1 and
    no max-pool, so the three stride-2 stages give 32 px -> 4×4; 8 px ends on 2×2 (stage4
    keeps both branches but at stride 1).
    """
    net = torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=num_classes)
    small = image_size <= 64
    net.conv1[0] = _new_stem(net.conv1[0], in_channels, 1 if small else 2, fan_out_init=False)
    if small:
        net.maxpool = nn.Identity()
        size = image_size
    else:
        size = _halve(_halve(image_size))
    _plan_downsampling([*net.stage2, *net.stage3, *net.stage4], size, skip_first=False)
    dim = net.fc.in_features
    net.fc = nn.Identity()  # the body ends at the global average pool (x.mean([2, 3]))
    return Classifier(net, dim, num_classes)


@register("efficientnet_b0")
def efficientnet_b0(*, num_classes: int, in_channels: int, image_size: int):
    """Torchvision EfficientNet-B0 (stochastic depth 0.2 as in torchvision), 1280-d embedding.

    image_size <= 64: stem stride 1 and the first stride-2 stage (24 channels) at stride 1
    (32 px -> 4×4 final map, as MobileNetV2); 8 px ends on 2×2. The classifier's dropout
    (p=0.2) is dropped: the body ends at global average pool + flatten.
    """
    net = torchvision.models.efficientnet_b0(weights=None, num_classes=num_classes)
    small = image_size <= 64
    net.features[0][0] = _new_stem(net.features[0][0], in_channels, 1 if small else 2, fan_out_init=True)
    size = image_size if small else _halve(image_size)
    _plan_downsampling([block for stage in list(net.features)[1:-1] for block in stage], size, skip_first=small)
    dim = net.classifier[-1].in_features
    net.classifier = nn.Identity()
    return Classifier(net, dim, num_classes)


def vit_patch_size(image_size: int) -> int:
    """Largest patch in (16, 8, 4, 2, 1) that divides ``image_size`` and leaves at least
    min(7, image_size // 2) patches per side: 224 -> 16, 64 -> 8, 32 -> 4, 28 -> 4, 8 -> 2."""
    need = min(7, image_size // 2)
    return next(p for p in (16, 8, 4, 2, 1) if image_size % p == 0 and image_size // p >= need)


@register("vit_tiny")
def vit_tiny(*, num_classes: int, in_channels: int, image_size: int):
    """A 6-layer ViT (hidden 192, 3 heads, MLP 768; about 2.7M parameters), 192-d embedding.

    Torchvision's VisionTransformer with ``patch_size = vit_patch_size(image_size)``; it only
    accepts inputs of exactly ``image_size`` px. The embedding is the class token after the
    encoder's final LayerNorm (torchvision's ``heads`` replaced by ``head``).
    """
    patch = vit_patch_size(image_size)
    net = torchvision.models.VisionTransformer(
        image_size=image_size,
        patch_size=patch,
        num_layers=6,
        num_heads=3,
        hidden_dim=192,
        mlp_dim=768,
        num_classes=num_classes,
    )
    net.conv_proj = nn.Conv2d(in_channels, 192, kernel_size=patch, stride=patch)
    fan_in = in_channels * patch * patch  # torchvision's patch-embedding init
    nn.init.trunc_normal_(net.conv_proj.weight, std=(1.0 / fan_in) ** 0.5)
    nn.init.zeros_(net.conv_proj.bias)
    net.heads = nn.Identity()
    return Classifier(net, 192, num_classes)


def swin_config(image_size: int) -> tuple[int, int]:
    """(patch, window) of ``swin_tiny`` for ``image_size`` px.

    > 64 px: patch 4, window 7 (224 px: 56/28/14 maps). 17-64 px: patch 2; <= 16 px: patch 1
    (8 px: 8/4/2 maps rather than 4/2/1). Small images use window min(4, final map), at least 2,
    so windows do not exceed the last stage (32 px: 16/8/4 maps, window 4; 8 px: window 2).
    Maps that are not a multiple of the window (28 px: 14 and 7) are zero-padded by
    torchvision, which also drops the shift where one window covers the whole map.
    """
    if image_size > 64:
        return 4, 7
    patch = 2 if image_size > 16 else 1
    final = _halve(_halve(image_size // patch))  # PatchMerging pads odd maps: ceil(size / 2)
    return patch, max(2, min(4, final))


@register("swin_tiny")
def swin_tiny(*, num_classes: int, in_channels: int, image_size: int):
    """A small Swin Transformer: embed 48, depths (2, 2, 2), heads (3, 6, 12), 192-d embedding.

    Torchvision's SwinTransformer (stochastic depth 0.1) with ``swin_config(image_size)``;
    about 1.27M parameters. Any input size >= 4 px works (windows are padded); the embedding
    is the final LayerNorm's output, average-pooled (torchvision's ``head`` becomes ``head``).
    """
    patch, window = swin_config(image_size)
    net = torchvision.models.SwinTransformer(
        patch_size=[patch, patch],
        embed_dim=48,
        depths=[2, 2, 2],
        num_heads=[3, 6, 12],
        window_size=[window, window],
        stochastic_depth_prob=0.1,
        num_classes=num_classes,
    )
    net.features[0][0] = nn.Conv2d(in_channels, 48, kernel_size=patch, stride=patch)
    dim = net.head.in_features
    net.head = nn.Identity()
    return Classifier(net, dim, num_classes)
