"""The one home of every default: :class:`Experiment` (with the stage configs it holds) and its flat names.

Each field's default is a smoke setting (seconds on two CPU cores) and carries its help text
(:func:`dire.runs.setting`); profiles (``notebooks/params/<profile>/``) and command-line flags supply scale.
The notebooks and the CLI speak the *flat* names of :data:`FLAT` (``ipc``, ``dire_weight``, ``r_bn``, ...);
:func:`make_experiment` turns them into an :class:`Experiment`, and :func:`flat_defaults` / :func:`flat_help`
give their defaults and help, which the CLI shows and a test holds every notebook's ``parameters`` cell to.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dire.checks import check_numbers
from dire.nets.speed import PRECISIONS
from dire.runs import added_field, config_dict, field_help, setting
from dire.synthesis import METHODS, DiReConfig, SRe2L, SynthesisConfig

# teachers of the multi-teacher methods; an experiment's own ``teacher_arch`` comes first, the others follow
TEACHER_SETS: dict[str, tuple[str, ...]] = {
    # G-VBSM on CIFAR-100: ResNet-18, ConvNet-W128 (instance norm), MobileNetV2, WRN-16-2, ShuffleNetV2-0.5
    "gvbsm-paper": ("resnet18", "convnet", "mobilenet_v2", "wrn_16_2", "shufflenet_v2"),
    # UFC on CIFAR: ResNet-18, MobileNetV2, EfficientNet-B0, ShuffleNetV2
    "ufc-paper": ("resnet18", "mobilenet_v2", "efficientnet_b0", "shufflenet_v2"),
    # a CPU budget: two BN teachers of different families instead of four or five
    "cpu-convnet-shufflenet": ("convnet_bn_w32", "shufflenet_v2"),
}


@dataclass
class Experiment:
    """Every knob of one experiment, with the CPU smoke settings as defaults."""

    dataset: str = setting("digits", "dataset to condense (dire.data.DATASETS)")
    method: str = setting("sre2l", "synthesis method (dire.synthesis.METHODS)")
    method_kwargs: dict = setting(default_factory=dict, help="the method's own settings, e.g. {'r_bn': 1.0}")
    synthesis: SynthesisConfig = setting(default_factory=SynthesisConfig, help="budget, layout and optimiser")
    dire: DiReConfig = setting(default_factory=DiReConfig, help="the DiRe term")
    teacher_arch: str = setting("convnet_bn", "BN teacher that synthesis matches")
    teacher_recipe: str = setting("cpu", "teacher training recipe (dire.nets.train.TEACHER_RECIPES)")
    teacher_seed: int = setting(0, "teacher seed")
    teacher_weights: str | None = added_field(
        None, "pretrained teacher_arch: a torchvision weights name (e.g. ResNet18_Weights.IMAGENET1K_V1) or a file"
    )
    teacher_overrides: dict = added_field(
        default_factory=dict, help="teacher recipe fields over teacher_recipe, e.g. {'epochs': 50} (every teacher)"
    )
    teacher_set: str | None = setting(None, "teachers of G-VBSM / UFC after teacher_arch (None: the method's own)")
    bank_per_class: int = setting(100, "real embeddings per class (release: 500)")
    # BatchNorm: on 8-px digits the instance norm of the DC ConvNet sees 2x2 maps and soft-label students stay at chance
    student_arch: str = setting("convnet_bn", "student trained on the synthetic set")
    student_recipe: str = setting("cpu", "student recipe (dire.nets.train.STUDENT_RECIPES)")
    student_epochs: int | None = setting(60, "overrides the recipe's epochs (None keeps them)")
    student_overrides: dict = added_field(
        default_factory=dict, help="other soft-label recipe fields, e.g. {'lr': 0.001, 'warmup_epochs': 10}"
    )
    student_seeds: tuple[int, ...] = setting((0,), "student seeds")
    student_ddp: bool = added_field(
        False,
        "under torchrun: all ranks train each seed's student together as one DDP model (a large synthetic set, "
        "few seeds) instead of splitting the seeds; nothing outside torchrun",
    )
    teacher_ddp: bool = added_field(
        False,
        "under torchrun: all ranks train each teacher (and the metrics evaluator) together as one DDP model instead "
        "of one rank training it while the others wait; nothing outside torchrun or with teacher_weights",
    )
    metric_arch: str | None = setting(None, "evaluator of the metrics beside the teacher (None: the teacher only)")
    protocol: str | None = setting(None, "student protocol: soft or dc (None: the method's own)")
    experts: dict = setting(
        default_factory=dict,
        help="MTT's experts: num_experts and dire.nets.experts.ExpertConfig "
        "fields (empty: the published 100 experts x 50 epochs)",
    )
    validation_per_class: int = added_field(
        0,
        "> 0: hold out this many training images per class (never seen by "
        "teachers, banks or synthesis) and score students on them",
    )
    validation_seed: int = added_field(0, "which images the validation split holds")
    # added fields, so the default leaves every key as it was: "auto" is fp32 on the CPU, and a stage run in bf16
    # (auto on CUDA) records "precision": "bf16" in its own key (dire.nets.speed.precision_key)
    precision: str = added_field(
        "auto",
        "autocast of teacher training, real-bank and metric embeddings and student training: "
        "auto (bf16 on CUDA, fp32 elsewhere), bf16 or fp32",
    )
    synthesis_precision: str = added_field(
        "fp32", "autocast of the synthesis steps' forward passes: fp32, bf16 or auto (DiRe's terms stay fp32)"
    )

    def __post_init__(self) -> None:
        ranges = {
            "teacher_seed": "seed",
            "bank_per_class": ">=1",
            "student_epochs": ">=1",
            "student_seeds": "seed",
            "validation_per_class": ">=0",
            "validation_seed": "seed",
        }
        check_numbers(self, ranges)
        for name in ("precision", "synthesis_precision"):
            if getattr(self, name) not in PRECISIONS:
                raise ValueError(
                    f"Experiment.{name} = {getattr(self, name)!r} is not known; expected one of {', '.join(PRECISIONS)}"
                )
        if not self.student_seeds:
            raise ValueError("Experiment.student_seeds is empty; give at least one student seed, e.g. (0,)")

    @property
    def holdout(self) -> tuple[int, int] | None:
        return (self.validation_per_class, self.validation_seed) if self.validation_per_class > 0 else None

    def config(self) -> dict:
        return config_dict(self)


def teacher_archs(exp: Experiment, method) -> list[str]:
    """The teachers ``exp`` synthesises with: ``teacher_arch`` alone, or for a multi-teacher method
    ``teacher_arch`` then the rest of ``exp.teacher_set`` (default: the method's paper set)."""
    if method.default_teacher_set is None:  # a single-teacher method ignores teacher_set
        return [exp.teacher_arch]
    name = exp.teacher_set or method.default_teacher_set
    if name not in TEACHER_SETS:
        raise ValueError(f"unknown teacher set {name!r}; expected one of {sorted(TEACHER_SETS)}")
    return [exp.teacher_arch] + [a for a in TEACHER_SETS[name] if a != exp.teacher_arch]


def with_method(exp: Experiment, method: str, overrides: dict | None = None) -> Experiment:
    """``exp`` with another method. Shared method settings (e.g. ``r_bn``, ``jitter``) carry over to the methods
    that take them; ``overrides`` names this method's own settings, ``SynthesisConfig`` fields and ``Experiment``
    fields (in that order of precedence), e.g. ``{"round_iterations": 63, "iterations": 200, "teacher_set": ...}``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(METHODS)}")
    own = {f.name for f in dataclasses.fields(METHODS[method])}
    synthesis_fields = {f.name for f in dataclasses.fields(SynthesisConfig)}
    experiment_fields = {f.name for f in dataclasses.fields(Experiment)} - {"method", "method_kwargs", "synthesis"}
    kwargs = {k: v for k, v in exp.method_kwargs.items() if k in own}
    synthesis, top = {}, {}
    for key, value in (overrides or {}).items():
        if key in own:
            kwargs[key] = value
        elif key in synthesis_fields:
            synthesis[key] = tuple(value) if key == "betas" else value
        elif key in experiment_fields:
            top[key] = value
        else:
            raise ValueError(
                f"{method}: unknown override {key!r}; expected a setting of {method} {sorted(own)}, "
                f"a SynthesisConfig field {sorted(synthesis_fields)} or an Experiment field "
                f"{sorted(experiment_fields)}"
            )
    return dataclasses.replace(
        exp, method=method, method_kwargs=kwargs, synthesis=dataclasses.replace(exp.synthesis, **synthesis), **top
    )


# ------------------------------------------------------------------ flat names (notebooks, CLI)

# flat name -> (part, field): part "" is Experiment itself, "synthesis" / "dire" its stage configs, and
# "method" a setting shared by the SRe2L family (its default is SRe2L's), passed to every method that takes it
FLAT: dict[str, tuple[str, str]] = {
    "dataset": ("", "dataset"),
    "method": ("", "method"),
    **{
        name: ("synthesis", name)
        for name in (
            "ipc",
            "seed",
            "iterations",
            "lr",
            "betas",
            "ipc_per_unit",
            "classes_per_unit",
            "init",
            "condense_classes",
        )
    },
    "r_bn": ("method", "r_bn"),
    "jitter": ("method", "jitter"),
    "method_settings": ("", "method_kwargs"),
    "dire": ("dire", "enabled"),
    "dire_weight": ("dire", "weight"),
    **{name: ("dire", name) for name in ("r_c", "r_e", "official", "terms", "logdet_eps", "edm_coreset")},
    **{
        name: ("", name)
        for name in (
            "teacher_arch",
            "teacher_recipe",
            "teacher_seed",
            "teacher_weights",
            "teacher_overrides",
            "teacher_set",
            "bank_per_class",
            "student_arch",
            "student_recipe",
            "student_epochs",
            "student_overrides",
            "student_seeds",
            "student_ddp",
            "teacher_ddp",
            "metric_arch",
            "protocol",
            "experts",
            "validation_per_class",
            "validation_seed",
            "precision",
            "synthesis_precision",
        )
    },
}
_PARTS = {"": Experiment, "synthesis": SynthesisConfig, "dire": DiReConfig, "method": SRe2L}


def _default(cls: type, name: str) -> Any:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def flat_defaults() -> dict[str, Any]:
    """Every flat name's default, read from the dataclasses."""
    return {name: _default(_PARTS[part], attr) for name, (part, attr) in FLAT.items()}


def flat_help(name: str) -> str:
    part, attr = FLAT[name]
    if part == "method":
        return f"{attr} of the methods that take it (default: SRe2L's)"
    return field_help(_PARTS[part], attr)


def _options(name: str) -> tuple:
    """The types flat name ``name`` may hold, from its dataclass annotation (``(int, NoneType)`` for ``int | None``)."""
    part, attr = FLAT[name]
    hint = typing.get_type_hints(_PARTS[part])[attr]
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def flat_nullable(name: str) -> bool:
    """Whether flat name ``name`` may be None (its annotation is ``X | None``)."""
    return type(None) in _options(name)


def flat_type(name: str) -> type:
    """The value type of flat name ``name`` (``int`` for ``int | None``), from the dataclass annotation."""
    hint = next(a for a in _options(name) if a is not type(None))
    return typing.get_origin(hint) or hint


def make_experiment(*, shared_method_defaults: bool = True, **params: Any) -> Experiment:
    """An :class:`Experiment` from flat names (missing ones take their defaults). Names that are not flat names
    (a notebook's other parameters) are ignored, so a notebook can pass ``**params`` straight through.

    The shared method settings (``r_bn``, ``jitter``) go to the method only if it takes them; with
    ``shared_method_defaults=False`` only when given, so each method keeps its own defaults (the CLI)."""
    defaults = flat_defaults()
    if not shared_method_defaults:
        defaults = {k: v for k, v in defaults.items() if FLAT[k][0] != "method"}
    values = {**defaults, **{k: v for k, v in params.items() if k in FLAT}}
    parts: dict[str, dict] = {"": {}, "synthesis": {}, "dire": {}, "method": {}}
    for name, value in values.items():
        part, attr = FLAT[name]
        parts[part][attr] = tuple(value) if isinstance(value, list) else value
    top = parts[""]
    takes = {f.name for f in dataclasses.fields(METHODS[top["method"]])} if top["method"] in METHODS else set()
    shared = {k: v for k, v in parts["method"].items() if k in takes}
    top["method_kwargs"] = {**shared, **dict(top["method_kwargs"] or {})}
    return Experiment(**top, synthesis=SynthesisConfig(**parts["synthesis"]), dire=DiReConfig(**parts["dire"]))


def dataset_params(params: Mapping[str, Any], dataset: str, overrides: Mapping[str, Mapping]) -> dict[str, Any]:
    """A notebook's parameters for one of its datasets: ``params`` with ``dataset`` set and ``overrides[dataset]``
    (that dataset's own settings: its resolution's recover setting, teacher, student recipe, IPCs, ...) on top.
    A ``method_overrides`` entry merges per method into the shared one, so a dataset can change one setting of
    one method and keep the rest. Every key must be one of the notebook's parameters."""
    check_dataset_overrides(overrides)
    own = dict(overrides.get(dataset) or {})
    if unknown := sorted(set(own) - set(params)):
        raise ValueError(
            f"dataset_overrides[{dataset!r}] names {unknown}, which are not parameters of this notebook; "
            f"expected some of {sorted(params)}"
        )
    merged = {**params, "dataset": dataset, **own}
    if "method_overrides" in own:
        shared = dict(params.get("method_overrides") or {})
        merged["method_overrides"] = {
            m: {**shared.get(m, {}), **own["method_overrides"].get(m, {})}
            for m in dict.fromkeys([*shared, *own["method_overrides"]])
        }
    return merged


def check_dataset_overrides(overrides: Mapping[str, Mapping]) -> None:
    """``dataset_overrides`` keys must be dataset names (a misspelt one would silently change nothing); a
    profile may hold settings for datasets a run leaves out."""
    from dire.data import DATASETS

    if unknown := sorted(set(overrides) - set(DATASETS)):
        raise ValueError(f"dataset_overrides names unknown dataset(s) {unknown}; expected some of {sorted(DATASETS)}")


# ------------------------------------------------------------------ DiRe weights chosen by a sweep

WEIGHT_KEYS = ("weight", "r_c", "r_e")


def load_weights(path: str | Path) -> dict[str, float]:
    """``{"weight", "r_c", "r_e"}`` from a file :func:`write_selection` wrote."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"DiRe weights file {path} not found; write it with `dire sweep --out {path}` (or notebook 06_weight_sweep)"
        )
    weights = json.loads(path.read_text()).get("weights", {})
    if set(weights) != set(WEIGHT_KEYS):
        raise ValueError(f"{path}: expected 'weights' with keys {WEIGHT_KEYS}; got {sorted(weights)}")
    return {k: float(weights[k]) for k in WEIGHT_KEYS}


def resolve_dire(base: DiReConfig, spec: Mapping) -> DiReConfig:
    """``base`` with DiRe on and ``spec``'s settings: DiReConfig fields (``terms`` a list is fine) and/or
    ``weights_file`` (a selection file, whose w, r_c, r_e apply before the explicit fields)."""
    fields = {f.name for f in dataclasses.fields(DiReConfig)}
    spec = dict(spec)
    weights = load_weights(spec.pop("weights_file")) if "weights_file" in spec else {}
    unknown = set(spec) - fields
    if unknown:
        raise ValueError(
            f"unknown DiRe settings {sorted(unknown)}; expected 'weights_file' or fields of DiReConfig {sorted(fields)}"
        )
    if "terms" in spec:
        spec["terms"] = tuple(spec["terms"])
    return dataclasses.replace(base, **{"enabled": True, **weights, **spec})
