"""The one synthesis loop every method plugs into.

Synthesis is split into independent *units*: a block of classes × a chunk of image
slots per class. A unit is optimised from its initial images for ``iterations``
steps and saved atomically as ``unit_<block>_<chunk>.pt``; a rerun skips finished
units, so an interrupted run resumes where it stopped, and units can be sharded
across processes. Each unit draws from its own generator seeded by (seed, block,
chunk), so a resumed run produces the same images as an uninterrupted one.

Layouts (``ipc_per_unit`` × ``classes_per_unit``):
- SRe2L: ``ipc_per_unit=1`` and all classes (or blocks of 100 on ImageNet): one image
  per class per batch, so BN batch statistics mix all classes.
- DiRe release: ``ipc_per_unit=10``, ``classes_per_unit=50``: 50 classes × 10 images of
  each class optimised together; the diversity term acts within the chunk.

A method supplies the initial images, the parameters to optimise, the loss on the
current batch (returning the penultimate embeddings of that same forward pass) and
what to do after a step; the loop adds DiRe, steps Adam with a cosine schedule and
checkpoints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tqdm import tqdm  # text on stderr, in kernels too: `dire reproduce` streams it (a widget would not)

import dire.distributed as distributed
from dire.checks import check_numbers, non_finite
from dire.data import DatasetInfo, ImageDataset, to_uint8
from dire.nets.speed import autocast
from dire.regularizer import ALL_TERMS, TERMS, DiRe, RealBank
from dire.runs import added_field, atomic_save, claim, load, lock, restore_rng, rng_state, setting


@dataclass
class DiReConfig:
    """The DiRe term added to a method's loss (the release's weights)."""

    enabled: bool = setting(False, "add the DiRe regulariser (off = the plain method)")
    r_c: float = setting(1.0, "DiRe weight of CD + CDM")
    r_e: float = setting(0.01, "DiRe weight of EDM")
    weight: float = setting(0.1, "DiRe overall weight w")
    official: bool = setting(False, "the release's diagonal arithmetic instead of the exact terms")
    terms: tuple[str, ...] = setting(TERMS, "DiRe terms that are on: a subset of cd, cdm, edm, logdet")
    logdet_eps: float = added_field(0.1, "ridge eps of the log-det term")
    edm_coreset: int | None = added_field(None, "EDM against this many k-means centres per class (None: exact)")

    def __post_init__(self) -> None:
        check_numbers(self, {"logdet_eps": ">0", "edm_coreset": ">=1"}, default=">=0")
        unknown = [t for t in self.terms if t not in ALL_TERMS]
        if unknown:
            raise ValueError(f"DiReConfig.terms: unknown {unknown}; expected a subset of {ALL_TERMS}")

    def module(self) -> DiRe | None:
        if not self.enabled:
            return None
        return DiRe(
            r_c=self.r_c,
            r_e=self.r_e,
            weight=self.weight,
            official=self.official,
            terms=self.terms,
            logdet_eps=self.logdet_eps,
            edm_coreset=self.edm_coreset,
        )


@dataclass
class SynthesisConfig:
    """What every method shares: the budget, the layout and the optimiser (smoke-sized defaults)."""

    ipc: int = setting(5, "images per class")
    iterations: int = setting(20, "synthesis steps per unit (SRe2L and the DiRe release: 1000)")
    lr: float = setting(0.25, "synthesis learning rate (Adam, cosine to 0)")
    betas: tuple[float, float] = setting((0.5, 0.9), "Adam betas (SRe2L)")
    ipc_per_unit: int = setting(5, "images of a class optimised together (SRe2L: 1; DiRe release: 10)")
    classes_per_unit: int | None = setting(None, "classes per unit (None: all; DiRe release: 50)")
    init: str = setting("noise", "synthetic init: noise (N(0, 1), normalized) or real (random real images)")
    seed: int = setting(0, "synthesis seed")
    condense_classes: int | None = added_field(
        None, "condense only the first N classes (None: all): a class range per job, or a dry run's budget"
    )

    def __post_init__(self) -> None:
        ranges = {
            "ipc": ">=1",
            "iterations": ">=1",
            "lr": ">0",
            "betas": "[0,1)",
            "ipc_per_unit": ">=1",
            "classes_per_unit": ">=1",
            "seed": "seed",
            "condense_classes": ">=1",
        }
        check_numbers(self, ranges)
        if self.init not in ("noise", "real"):
            raise ValueError(f"SynthesisConfig.init must be 'noise' or 'real'; got {self.init!r}")

    def class_count(self, num_classes: int) -> int:
        """How many classes are condensed: the first ``condense_classes`` of the dataset's ``num_classes``."""
        return num_classes if self.condense_classes is None else min(self.condense_classes, num_classes)

    def validate(self, num_classes: int) -> None:
        if self.ipc < 1 or self.ipc_per_unit < 1:
            raise ValueError(f"ipc and ipc_per_unit must be >= 1; got ipc={self.ipc}, ipc_per_unit={self.ipc_per_unit}")
        if self.classes_per_unit is not None and not 1 <= self.classes_per_unit <= num_classes:
            raise ValueError(f"classes_per_unit must be in 1..{num_classes} or None; got {self.classes_per_unit}")
        if self.condense_classes is not None and self.condense_classes > num_classes:
            raise ValueError(f"condense_classes must be in 1..{num_classes} or None; got {self.condense_classes}")
        if self.iterations < 1 or self.lr <= 0:
            raise ValueError(f"iterations must be >= 1 and lr > 0; got {self.iterations}, {self.lr}")
        if self.init not in ("noise", "real"):
            raise ValueError(f"init must be 'noise' or 'real'; got {self.init!r}")


@dataclass(frozen=True)
class Unit:
    """One independently optimised batch: ``classes`` × image slots ``slots`` of each."""

    block: int
    chunk: int
    classes: tuple[int, ...]
    slots: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"unit_{self.block:04d}_{self.chunk:04d}"

    def labels(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Class-major labels: all slots of the first class, then the next class, ..."""
        return torch.tensor(self.classes, device=device).repeat_interleave(len(self.slots))


def plan_units(config: SynthesisConfig, num_classes: int) -> list[Unit]:
    config.validate(num_classes)
    n = config.class_count(num_classes)
    k = config.classes_per_unit or n
    blocks = [tuple(range(s, min(s + k, n))) for s in range(0, n, k)]
    chunks = [
        tuple(range(s, min(s + config.ipc_per_unit, config.ipc))) for s in range(0, config.ipc, config.ipc_per_unit)
    ]
    return [Unit(b, c, classes, slots) for b, classes in enumerate(blocks) for c, slots in enumerate(chunks)]


@dataclass
class Context:
    """What a method may use: the frozen teacher(s), the real data and the run's settings.

    ``teachers`` / ``banks`` hold every teacher a multi-teacher method (G-VBSM, UFC) uses, with the real
    embedding bank of each; ``teachers`` defaults to ``[teacher]`` and an empty ``banks`` means ``ctx.bank``
    for the first teacher (see :meth:`bank_of`). Methods without a teacher (DM, MTT) take ``teacher=None``.
    """

    teacher: nn.Module | None
    dataset: ImageDataset
    config: SynthesisConfig
    device: torch.device
    bank: RealBank | None = None
    extra: dict = field(default_factory=dict)  # method-private state (e.g. precomputed statistics)
    teachers: list[nn.Module] = field(default_factory=list)
    banks: list[RealBank | None] = field(default_factory=list)
    cache_dir: Path | None = None  # where a method may cache what it precomputes from real data (G-VBSM)
    experts: Any = None  # expert trajectories (dire.nets.experts.Experts) of a method that ``needs_experts``
    precision: str = "fp32"  # autocast of each step's forward pass and method loss (dire.nets.speed); DiRe in fp32

    def __post_init__(self) -> None:
        self.teachers = self.teachers or ([self.teacher] if self.teacher is not None else [])
        if self.banks and len(self.banks) != len(self.teachers):
            raise ValueError(f"got {len(self.teachers)} teachers but {len(self.banks)} real embedding banks")

    def bank_of(self, index: int) -> RealBank | None:
        """The real bank in teacher ``index``'s embedding space."""
        if self.banks:
            return self.banks[index]
        return self.bank if index == 0 else None

    @property
    def info(self) -> DatasetInfo:
        return self.dataset.info


@dataclass
class Step:
    """What a method's loss returns: the loss, and the embeddings DiRe acts on (same forward pass).

    ``bank`` is the real bank in the embeddings' own network (default ``ctx.bank``), or a function
    returning it, called only when DiRe is on (DM and MTT embed real images in a network that changes
    every iteration, which costs a forward pass MTT would not otherwise need); a method whose batch goes
    through several networks at once returns the other groups in ``more`` (each a Step whose loss is
    ignored), and DiRe is summed over all groups.
    """

    loss: torch.Tensor
    embeddings: torch.Tensor | None
    labels: torch.Tensor | None = None  # labels of ``embeddings`` when they are not the unit's labels
    logs: dict = field(default_factory=dict)
    bank: RealBank | Callable[[], RealBank] | None = None  # real bank of ``embeddings``' network; None = ctx.bank
    more: list[Step] = field(default_factory=list)

    def dire_groups(
        self, labels: torch.Tensor, bank: RealBank | None
    ) -> list[tuple[torch.Tensor, torch.Tensor, RealBank]]:
        groups = []
        for step in [self, *self.more]:
            if step.embeddings is None:
                raise TypeError("the method exposes no embeddings, so DiRe cannot act on it")
            z_bank = step.bank if step.bank is not None else bank
            if callable(z_bank):
                z_bank = z_bank()
            if z_bank is None:
                raise ValueError("DiRe is enabled but no real embedding bank matches the method's embeddings")
            groups.append((step.embeddings, step.labels if step.labels is not None else labels, z_bank))
        return groups


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a method to :data:`METHODS` under its ``name``; a name may be registered once."""
    if cls.name in METHODS:
        raise ValueError(
            f"a synthesis method named {cls.name!r} is already registered ({METHODS[cls.name].__qualname__})"
        )
    METHODS[cls.name] = cls
    return cls


class Method:
    """Base class: noise or real init, the images themselves as parameters, clamping after each step.

    Subclasses override :meth:`loss` (required) and any other hook, and are registered with
    :func:`register`. Besides its hooks a method declares what the pipeline must prepare for it
    (class attributes, never changed after construction): its student ``protocol`` (a name in
    ``dire.evaluation.PROTOCOLS``), its ``default_teacher_set`` and whether it ``needs_experts``.
    """

    name = "method"
    cosine_lr = True  # anneal every parameter group's lr to 0 over the unit (SRe2L); False = constant (DM, MTT)
    protocol = "soft"  # how students are evaluated by default: "soft" (teacher soft labels) or "dc" (DM, MTT)
    default_teacher_set: str | None = None  # multi-teacher methods: the paper's teachers (config.TEACHER_SETS)
    needs_experts = False  # True: the pipeline trains expert trajectories first and passes them in ctx.experts
    own_bank = False  # True: every Step carries its own real bank (DM, MTT), so DiRe needs no ctx.bank
    optimises = True  # False: the unit's initial images are stored as they are (the real-subset reference)
    RANGES: dict[str, str] = {}  # numeric settings with a tighter range than finite and >= 0 (dire.checks)

    def __post_init__(self) -> None:
        # every numeric method setting is a weight, a rate, a size or a count: finite and >= 0, tighter where
        # a method says so in RANGES
        check_numbers(self, self.RANGES, default=">=0")

    @classmethod
    def dataset_defaults(cls, dataset: str, ipc: int) -> dict:
        """Published settings for ``dataset`` at ``ipc`` that explicit settings override (MTT's table); none here."""
        return {}

    def setup(self, ctx: Context) -> None:
        """Once per run, before the first unit (e.g. precompute statistics into ``ctx.extra``)."""

    def units(self, ctx: Context) -> list[Unit]:
        """The units to optimise; by default ``ipc`` slots per class in the configured layout (UFC stores more
        images than it optimises, so it plans fewer)."""
        return plan_units(ctx.config, ctx.info.num_classes)

    def student_settings(self, num_teachers: int) -> dict:
        """How students of this method are trained, beyond the recipe: ``ensemble`` (soft labels = the mean
        logits of all teachers), ``loss`` ("kl" or "mse_ce") and ``epoch_scale`` (multiplies the epochs)."""
        return {}

    def init_images(self, ctx: Context, unit: Unit, generator: torch.Generator) -> torch.Tensor:
        info, n = ctx.info, len(unit.classes) * len(unit.slots)
        if ctx.config.init == "noise":
            shape = (n, info.channels, info.image_size, info.image_size)
            return torch.randn(shape, generator=generator)
        return torch.cat([real_init(ctx, c, unit.slots) for c in unit.classes])

    def start_unit(
        self, ctx: Context, unit: Unit, images: torch.Tensor, generator: torch.Generator
    ) -> list[torch.Tensor]:
        """Tensors to optimise for this unit; by default the images themselves."""
        return [images.requires_grad_()]

    def optimizer(self, ctx: Context, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        """Adam with the configured lr and betas (SRe2L); methods that step pixels with SGD override it."""
        return torch.optim.Adam(params, lr=ctx.config.lr, betas=ctx.config.betas)

    def images(self, params: Sequence[torch.Tensor]) -> torch.Tensor:
        """The current synthetic images from the optimised tensors."""
        return params[0]

    def stored(
        self, ctx: Context, unit: Unit, params: Sequence[torch.Tensor], labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What the unit saves: by default the optimised images and their labels (UFC adds more)."""
        return self.images(params), labels

    def extras(self, ctx: Context, unit: Unit, params: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Other learned tensors saved with the unit and in ``synthetic.pt`` (MTT: its learned ``syn_lr``)."""
        return {}

    def loss(
        self,
        ctx: Context,
        unit: Unit,
        images: torch.Tensor,
        labels: torch.Tensor,
        iteration: int,
        generator: torch.Generator,
    ) -> Step:
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, ctx: Context, params: Sequence[torch.Tensor]) -> None:
        lo, hi = pixel_bounds(ctx, params[0].device)
        params[0].copy_(torch.maximum(torch.minimum(params[0], hi), lo))

    def end_unit(self, ctx: Context, unit: Unit) -> None:
        """After a unit is saved (e.g. restore a perturbed teacher)."""

    def unit_state(self, ctx: Context, unit: Unit) -> dict:
        """State the method carries from one iteration of a unit to the next outside the optimised tensors
        (G-VBSM: its running statistics), saved in mid-unit checkpoints; none by default."""
        return {}

    def load_unit_state(self, ctx: Context, unit: Unit, state: dict) -> None:
        """Restore :meth:`unit_state` when a unit resumes from a checkpoint."""


def pixel_bounds(ctx: Context, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Valid normalized pixel range [C, 1, 1] on ``device``, built once per run (the clamp runs every step)."""
    key = ("pixel_bounds", str(device))
    if key not in ctx.extra:
        ctx.extra[key] = tuple(b.to(device) for b in ctx.info.pixel_bounds())
    return ctx.extra[key]


def real_init(ctx: Context, cls: int, slots: Sequence[int]) -> torch.Tensor:
    """Real images of ``cls`` for the given slots: one random draw per (seed, class), so slots never repeat
    and every unit sees the same draw whatever order units run in."""
    key = ("real_init", cls)
    if key not in ctx.extra:
        g = torch.Generator().manual_seed(ctx.config.seed * 1_000_003 + cls)
        ctx.extra[key] = ctx.dataset.class_images(cls, limit=ctx.config.ipc, generator=g)
    pool = ctx.extra[key]
    if len(pool) < ctx.config.ipc:
        raise ValueError(f"class {cls} has {len(pool)} real images, fewer than ipc={ctx.config.ipc} for real init")
    return pool[list(slots)]


def _unit_generator(seed: int, unit: Unit) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + unit.block * 10_007 + unit.chunk)


CHECKPOINT_SECONDS = 60.0  # optimisation time between mid-unit checkpoints (a kill loses at most this much)


def run_unit(
    method: Method,
    ctx: Context,
    unit: Unit,
    dire: DiRe | None,
    *,
    checkpoint: Path | None = None,
    checkpoint_seconds: float | None = None,
    on_step: Callable[[], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Optimise one unit and return its stored images and labels.

    With ``checkpoint`` (a file path) the unit saves its state there every ``checkpoint_seconds`` (default
    :data:`CHECKPOINT_SECONDS`) of optimisation: the optimised tensors, the optimiser, the iteration, the
    unit's generator, the global RNG and the method's :meth:`Method.unit_state`; a unit started again with
    that file resumes from it and ends with the same images as an uninterrupted run. A loss that is not
    finite stops the unit with :class:`dire.checks.NonFiniteLoss` before anything of it is saved. ``on_step``
    runs after each step (progress)."""
    cfg, device = ctx.config, ctx.device
    every = CHECKPOINT_SECONDS if checkpoint_seconds is None else checkpoint_seconds
    generator = _unit_generator(cfg.seed, unit)
    labels = unit.labels(device)
    x0 = method.init_images(ctx, unit, generator).to(device)
    params = method.start_unit(ctx, unit, x0, generator)
    optimizer = method.optimizer(ctx, params)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    first, spent = 0, 0.0
    if checkpoint is not None and checkpoint.exists():
        state = load(checkpoint, map_location=device)
        with torch.no_grad():
            for p, saved in zip(params, state["params"]):
                p.copy_(saved)
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"].cpu())
        restore_rng(state["rng"])
        method.load_unit_state(ctx, unit, state["method"])
        first, spent = int(state["iteration"]), float(state["seconds"])
    where = f"unit {unit.name} of {method.name}"
    start = last_save = time.perf_counter()
    finite = torch.ones((), dtype=torch.bool, device=device)
    for it in range(first, cfg.iterations if method.optimises else 0):
        if method.cosine_lr:  # cosine to 0, no warm-up (SRe2L)
            for group, lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = 0.5 * (1 + math.cos(math.pi * it / cfg.iterations)) * lr
        with autocast(device, ctx.precision):
            step = method.loss(ctx, unit, method.images(params), labels, it, generator)
        loss = step.loss.float()  # .float(): no-ops in fp32; under bf16 the sums and DiRe's terms stay float32
        if dire is not None:
            for z, z_labels, bank in step.dire_groups(labels, ctx.bank):
                loss = loss + dire(z.float(), z_labels, bank)
        finite &= torch.isfinite(loss.detach())  # read on the CPU each step, on a GPU at checkpoints
        if device.type == "cpu" and not bool(finite):
            raise non_finite("synthesis", f"{where}, iteration {it + 1} of {cfg.iterations}", lr=cfg.lr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.after_step(ctx, params)
        if on_step is not None:
            on_step()
        now = time.perf_counter()
        if checkpoint is not None and now - last_save >= every and it + 1 < cfg.iterations:
            if not bool(finite):
                raise non_finite("synthesis", f"{where}, iterations up to {it + 1}", lr=cfg.lr)
            state = {
                "params": [p.detach() for p in params],
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(),
                "rng": rng_state(),
                "iteration": it + 1,
                "seconds": spent + now - start,
                "method": method.unit_state(ctx, unit),
            }
            atomic_save(state, checkpoint)
            last_save = time.perf_counter()
    with torch.no_grad():
        images, stored_labels = method.stored(ctx, unit, params, labels)
        extras = {k: v.detach().cpu() for k, v in method.extras(ctx, unit, params).items()}
    if not bool(finite) or not bool(torch.isfinite(images).all()):
        raise non_finite("synthesis", f"{where} (its images are not finite)", lr=cfg.lr)
    result = {
        "images": to_uint8(images, ctx.info),
        "labels": stored_labels.cpu(),
        "seconds": torch.tensor(spent + time.perf_counter() - start, dtype=torch.float64),
    }
    if extras:
        result["extras"] = extras
    return result


def _assemble_extras(parts: list[dict]) -> dict[str, torch.Tensor]:
    """Each unit's extras by name: one unit's tensor as is, several units' stacked in unit order."""
    names = sorted({k for p in parts for k in p.get("extras", {})})
    clash = sorted(set(names) & {"images", "labels", "seconds"})
    if clash:
        raise ValueError(f"method extras {clash} would overwrite the synthetic set's own entries; rename them")
    out = {}
    for name in names:
        values = [p["extras"][name] for p in parts if name in p.get("extras", {})]
        out[name] = values[0] if len(values) == 1 else torch.stack(values)
    return out


def synthesize(
    method: Method, ctx: Context, *, out_dir: str | Path, dire: DiReConfig | None = None, progress: bool = True
) -> dict[str, torch.Tensor]:
    """Run (or resume) every unit and assemble ``synthetic.pt``: uint8 ``images`` [N, C, H, W], ``labels`` [N],
    ``seconds`` (summed optimisation time of the units), and any :meth:`Method.extras` by name.

    Processes given the same ``out_dir`` split the units (each unit's lock, :func:`dire.runs.claim`); a unit in
    progress checkpoints to ``<unit>.ckpt.pt`` (see :func:`run_unit`), so a killed run resumes mid-unit. Under
    torchrun each rank takes its static share of the units (:func:`dire.distributed.my_share`), and after a
    barrier rank 0 assembles the set the others then load: the same file one process makes."""
    out_dir = Path(out_dir)
    final = out_dir / "synthetic.pt"
    if distributed.all_true(final.exists()):  # every rank takes the same branch, so each meets the barriers
        return load(final)
    dire_module = (dire or DiReConfig()).module()
    if dire_module is not None and not method.own_bank and ctx.bank_of(0) is None:
        raise ValueError("DiRe is enabled but the context has no real embedding bank (ctx.bank)")
    if dire_module is not None and not method.optimises:
        raise ValueError(f"{method.name} takes no synthesis steps, so DiRe would do nothing; run it with DiRe off")
    for teacher in ctx.teachers:
        teacher.eval().requires_grad_(False)
    method.setup(ctx)
    units = method.units(ctx)
    mine = distributed.my_share(units)  # all of them outside torchrun

    def done(unit: Unit) -> bool:
        return (out_dir / f"{unit.name}.pt").exists()

    todo = sum(not done(u) for u in mine)
    # counted in steps, not units: one unit can take minutes (quick profile: all classes in one unit)
    bar = tqdm(
        total=todo * (ctx.config.iterations if method.optimises else 0),
        desc=f"{method.name}{' + DiRe' if dire_module else ''} ({todo} of {len(units)} units)",
        unit="step",
        disable=not progress,
    )
    for unit in claim(mine, lambda u: lock(out_dir, u.name), done):
        ckpt = out_dir / f"{unit.name}.ckpt.pt"
        result = run_unit(method, ctx, unit, dire_module, checkpoint=ckpt, on_step=bar.update)
        atomic_save(result, out_dir / f"{unit.name}.pt")
        ckpt.unlink(missing_ok=True)
        method.end_unit(ctx, unit)
    bar.close()
    distributed.barrier()  # every rank's units are saved
    synthetic = _assemble(units, out_dir) if distributed.is_main() else None
    distributed.barrier()  # rank 0 assembled the set the others now read
    return synthetic if synthetic is not None else load(final)


def _assemble(units: list[Unit], out_dir: Path) -> dict[str, torch.Tensor]:
    """``synthetic.pt`` from the saved units, made once whichever processes reach here (the folder's lock)."""
    final = out_dir / "synthetic.pt"
    with lock(out_dir, "synthetic"):
        if final.exists():  # assembled by another process meanwhile
            return load(final)
        for unit in units:  # a kill between saving a unit and dropping its checkpoint leaves the checkpoint
            (out_dir / f"{unit.name}.ckpt.pt").unlink(missing_ok=True)
        parts = [load(out_dir / f"{u.name}.pt") for u in units]
        synthetic = {
            "images": torch.cat([p["images"] for p in parts]),
            "labels": torch.cat([p["labels"] for p in parts]),
            "seconds": sum(p["seconds"] for p in parts),  # optimisation time of all units, wherever they ran
            **_assemble_extras(parts),
        }
        atomic_save(synthetic, final)
    return synthetic
