"""Pretrained teachers: a torchvision weights name (``ResNet18_Weights.IMAGENET1K_V1``, as SRe2L and its family
use on ImageNet-1K) or a local state-dict file, checked and loaded into this project's model of that name.

A torchvision name resolves to the file torchvision would download, in torch hub's cache
(``torch.hub.get_dir()/checkpoints/<file>``). Nothing is fetched unless asked (``download=True``); without
the file the error names the file, the folder to put it in and the address it comes from. The file's
SHA-256 must start with the hash prefix in its name (torchvision's convention). A local file's SHA-256 is
recorded instead, so a changed file is a different teacher.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from dire.nets.models import Classifier
from dire.runs import load


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve(weights: str, *, download: bool = False) -> tuple[Path, dict]:
    """The weights file for ``weights`` (a torchvision weights name or a path) and its record for the teacher's
    cache key: ``{"weights": weights, "sha256": ...}``."""
    local = Path(weights).expanduser()
    if local.is_file():
        return local, {"weights": str(local.resolve()), "sha256": _sha256(local)}
    if "." not in weights or "_Weights." not in weights:
        raise FileNotFoundError(
            f"teacher weights {weights!r}: no such file, and not a torchvision weights name like "
            "'ResNet18_Weights.IMAGENET1K_V1'"
        )
    import torchvision

    try:
        entry = torchvision.models.get_weight(weights)
    except (ValueError, KeyError, AttributeError):
        raise ValueError(f"teacher weights {weights!r}: torchvision knows no such weights") from None
    name = entry.url.rsplit("/", 1)[-1]
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    if not path.is_file():
        if not download:
            raise FileNotFoundError(
                f"teacher weights {weights}: {path} is missing; place {name} there (from {entry.url}), or pass "
                "--download to fetch it"
            )
        torch.hub.load_state_dict_from_url(entry.url, map_location="cpu", check_hash=True, weights_only=True)
    digest = _sha256(path)
    prefix = name.rsplit("-", 1)[-1].split(".")[0]
    if not digest.startswith(prefix):
        raise ValueError(
            f"{path}: SHA-256 {digest[:12]}... does not start with {prefix}, the hash in its name; the file is "
            "damaged or not the published one: delete it and place it again"
        )
    return path, {"weights": weights, "sha256": digest}


def load_into(model: Classifier, path: Path) -> None:
    """Load a torchvision-layout state dict (the network with its final linear layer) into ``model``, whose
    ``body`` is that network with the final layer removed and whose ``head`` is the final layer."""
    state = load(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (parameter name -> tensor)")
    body_keys = set(model.body.state_dict())
    head = {k.rsplit(".", 1)[-1]: v for k, v in state.items() if k not in body_keys}
    if set(head) != {"weight", "bias"}:
        raise ValueError(
            f"{path}: its parameters do not match the model: {sorted(set(state) - body_keys)} left over after the "
            "body; expected only the final layer's weight and bias (a torchvision-layout state dict of this network)"
        )
    if head["weight"].shape != model.head.weight.shape:
        raise ValueError(
            f"{path}: its final layer is {tuple(head['weight'].shape)}, the model's {tuple(model.head.weight.shape)}; "
            "the weights are for another number of classes or another network"
        )
    model.body.load_state_dict({k: v for k, v in state.items() if k in body_keys})
    model.head.load_state_dict(head)
