"""MTT expert trajectories (Cazenavette et al., "Dataset Distillation by Matching Training Trajectories",
CVPR 2022; GeorgeCazenavette/mtt-distillation ``buffer.py``).

An expert is a network (default the DC ConvNet) trained on the real training set with
SGD (lr 0.01, momentum 0, weight decay 0, no lr decay), batch 256 and per-sample DSA;
its parameters are recorded after every epoch. Experts are trained once per
(dataset, settings, seed) and cached in ``run_dir("experts", config)``:

    expert_0000.pt          {"params": [epochs + 1, P] float32, "test_acc": float or nan}
    expert_0001.partial.pt  an expert being trained: epochs so far + optimiser state
    zca.pt                  the whitening the experts saw (only with ``zca=True``)

Row e of ``params`` is the flat parameter vector (``model.parameters()`` order) after
e epochs (row 0 = the initialisation). Every epoch rewrites the partial file
atomically, so an interrupted run resumes at the last finished epoch; expert i draws
its initialisation, batch order and augmentation from seeds derived from (seed, i,
epoch), so resuming gives the same trajectory as an uninterrupted run. The number of
experts is not part of the cache key: asking for more later trains only the missing ones.

``train_per_class`` (not in MTT) trains on a fixed random subset of each class: a
knob for CPU budgets, recorded in the cache key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm  # text on stderr, in kernels too: `dire reproduce` streams it (a widget would not)

from dire.checks import check_numbers, non_finite
from dire.data import ImageDataset, SubsetImageDataset
from dire.data.dsa import DSA, STRATEGY
from dire.data.zca import ZCA
from dire.nets.models import build_model
from dire.nets.train import accuracy
from dire.runs import atomic_save, claim, load, lock, read_json, run_dir


@dataclass(frozen=True)
class ExpertConfig:
    model: str = "convnet"  # MTT: ConvNet (ConvNetD4 for Tiny)
    epochs: int = 50  # epochs per expert (buffer.py train_epochs)
    lr: float = 0.01  # lr_teacher
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    dsa: bool = True
    dsa_strategy: str = STRATEGY
    zca: bool = False  # MTT whitens CIFAR (eps 0.1); not used on MNIST-like data
    zca_eps: float = 0.1
    train_per_class: int | None = None  # train on this many random images per class (CPU budget); None = all

    def __post_init__(self) -> None:
        ranges = {
            "epochs": ">=1",
            "lr": ">0",
            "momentum": "[0,1)",
            "batch_size": ">=1",
            "zca_eps": ">0",
            "train_per_class": ">=1",
        }
        check_numbers(self, ranges, default=">=0")

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(
                f"expected epochs >= 1, batch_size >= 1, lr > 0; got {self.epochs}, {self.batch_size}, {self.lr}"
            )
        if self.train_per_class is not None and self.train_per_class < 1:
            raise ValueError(f"train_per_class must be >= 1 or None; got {self.train_per_class}")


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).float().cpu()


def _seed(*parts: int) -> int:
    value = 0
    for p in parts:
        value = value * 1_000_003 + int(p)
    return value % (2**63)


def experts_config(train_set: ImageDataset, config: ExpertConfig, seed: int) -> dict:
    key = {
        "stage": "experts",
        "dataset": train_set.info.name,
        "n_train": len(train_set),
        "expert": dataclasses.asdict(config),
        "seed": seed,
    }
    if isinstance(train_set, SubsetImageDataset):  # e.g. less a validation split: which images, not just how many
        key["subset"] = hashlib.sha256(train_set.indices.numpy().tobytes()).hexdigest()[:16]
    return key


def _training_images(train_set: ImageDataset, config: ExpertConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if config.train_per_class is None:
        return train_set.tensors()
    xs, ys = [], []
    for c in range(train_set.info.num_classes):
        x = train_set.class_images(
            c, limit=config.train_per_class, generator=torch.Generator().manual_seed(_seed(seed, c))
        )
        xs.append(x)
        ys.append(torch.full((len(x),), c))
    return torch.cat(xs), torch.cat(ys)


def train_experts(
    train_set: ImageDataset,
    *,
    num_experts: int = 100,
    config: ExpertConfig = ExpertConfig(),
    seed: int = 0,
    test_set: ImageDataset | None = None,
    runs_root: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Path:
    """Train (or resume, or find cached) ``num_experts`` experts; returns their folder (see :class:`Experts`).

    ``test_set``: if given, each finished expert's test accuracy is recorded (MTT logs it; costs a pass
    over the test set per expert).
    """
    config.validate()
    if num_experts < 1:
        raise ValueError(f"num_experts must be >= 1; got {num_experts}")
    folder = run_dir("experts", experts_config(train_set, config, seed), root=runs_root)

    def done(i: int) -> bool:
        return (folder / f"expert_{i:04d}.pt").exists()

    for i in range(num_experts):  # a kill between saving an expert and dropping its partial file leaves the latter
        if done(i):
            (folder / f"expert_{i:04d}.partial.pt").unlink(missing_ok=True)
    if all(done(i) for i in range(num_experts)):
        return folder
    x_all, y_all = _training_images(train_set, config, seed)
    zca = None
    if config.zca:
        with lock(folder, "zca"):
            if (folder / "zca.pt").exists():
                zca = ZCA.from_state(load(folder / "zca.pt"))
            else:
                zca = ZCA.fit(x_all, eps=config.zca_eps)
                atomic_save(zca.state(), folder / "zca.pt")
        x_all = zca(x_all)
    x_all, y_all = x_all.to(device), y_all.to(device)
    info = train_set.info
    augment = DSA(config.dsa_strategy) if config.dsa else None
    # processes sharing the folder split the experts: each is trained once, by whoever takes its lock first
    for i in claim(range(num_experts), lambda i: lock(folder, f"expert_{i:04d}"), done):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed(seed, i))
            net = build_model(
                config.model, num_classes=info.num_classes, in_channels=info.channels, image_size=info.image_size
            )
        net = net.to(device).train()
        optimizer = torch.optim.SGD(
            net.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
        partial = folder / f"expert_{i:04d}.partial.pt"
        trajectory = [flat_params(net)]
        if partial.exists():  # resume at the last finished epoch
            state = load(partial)
            trajectory = list(state["params"])
            _load_flat(net, trajectory[-1])
            optimizer.load_state_dict(state["optimizer"])
        for epoch in tqdm(
            range(len(trajectory) - 1, config.epochs), desc=f"expert {i}", unit="epoch", disable=not progress
        ):
            generator = torch.Generator().manual_seed(_seed(seed, i, epoch))
            order = torch.randperm(len(x_all), generator=generator).to(device)
            finite = torch.ones((), dtype=torch.bool, device=device)
            for b in range(0, len(order), config.batch_size):
                idx = order[b : b + config.batch_size]
                x = x_all[idx] if augment is None else augment(x_all[idx], generator=generator)
                loss = F.cross_entropy(net(x), y_all[idx])
                finite &= torch.isfinite(loss.detach())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if not bool(finite):
                raise non_finite(f"MTT expert {i} ({folder})", f"epoch {epoch + 1} of {config.epochs}", lr=config.lr)
            trajectory.append(flat_params(net))
            atomic_save({"params": torch.stack(trajectory), "optimizer": optimizer.state_dict()}, partial)
        acc = math.nan
        if test_set is not None:
            tested = net if zca is None else torch.nn.Sequential(zca.to(device), net)
            acc = accuracy(tested, test_set, device=device)
        atomic_save({"params": torch.stack(trajectory), "test_acc": torch.tensor(acc)}, folder / f"expert_{i:04d}.pt")
        partial.unlink(missing_ok=True)
    return folder


@torch.no_grad()
def _load_flat(net: torch.nn.Module, flat: torch.Tensor) -> None:
    offset = 0
    for p in net.parameters():
        p.copy_(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()


class Experts:
    """The finished experts in a :func:`train_experts` folder: ``trajectory(i)`` [epochs + 1, P]."""

    def __init__(self, folder: str | Path, *, limit: int | None = None, cache_size: int = 8):
        self.folder = Path(folder)
        self.cache_size = cache_size  # trajectories kept in memory (a full FMNIST expert is ~65 MB)
        if not (self.folder / "config.json").exists():
            raise FileNotFoundError(
                f"{self.folder} is not an experts folder (no config.json); "
                "train experts first with dire.nets.experts.train_experts(...)"
            )
        record = read_json(self.folder / "config.json")
        self.config = ExpertConfig(**record["expert"])
        self.dataset = record["dataset"]
        files = sorted(self.folder.glob("expert_[0-9][0-9][0-9][0-9].pt"))
        self.files = files[:limit] if limit is not None else files
        if not self.files:
            raise FileNotFoundError(
                f"no finished experts in {self.folder}; run dire.nets.experts.train_experts(...) "
                "(an interrupted run leaves expert_*.partial.pt, which it resumes)"
            )
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.files)

    @property
    def epochs(self) -> int:
        return self.config.epochs

    def trajectory(self, i: int) -> torch.Tensor:
        """Expert ``i``'s parameters after each epoch, [epochs + 1, P]; the last ``cache_size`` read stay in memory."""
        if i not in self._cache:
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))  # the oldest
            self._cache[i] = load(self.files[i])["params"]
        return self._cache[i]

    def test_acc(self) -> list[float]:
        return [float(load(f)["test_acc"]) for f in self.files]

    def zca(self) -> ZCA | None:
        return ZCA.from_state(load(self.folder / "zca.pt")) if self.config.zca else None
