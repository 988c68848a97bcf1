"""One experiment end to end: teacher → real bank → synthesis (± DiRe) → students → diversity metrics.

Every stage is cached under ``<runs>/<stage>/<hash of its config>/``, so a rerun
of the same experiment loads what exists and resumes what was interrupted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dire.bank import bank_embeddings, cached_bank
from dire.evaluate import evaluate_synthetic
from dire.evaluate_dc import evaluate_dc
from dire.metrics import diversity_metrics
from dire.models import Ensemble, embed_images
from dire.runs import added_field, config_dict, config_hash, run_dir, write_json
from dire.mtt import ExpertConfig, Experts, train_experts
from dire.synthesis import METHODS, MTT, DiReConfig, SynthesisConfig, build_method, synthesize
from dire.synthesis.mtt import MTT_SETTINGS
from dire.synthesis.base import Context, from_uint8
from dire.teacher import get_teacher, training_split
from dire.train import get_recipe

# teachers of the multi-teacher methods; an experiment's own ``teacher_arch`` comes first, the others follow
TEACHER_SETS: dict[str, tuple[str, ...]] = {
    # G-VBSM on CIFAR-100: ResNet-18, ConvNet-W128 (instance norm), MobileNetV2, WRN-16-2, ShuffleNetV2-0.5
    "gvbsm-paper": ("resnet18", "convnet", "mobilenet_v2", "wrn_16_2", "shufflenet_v2"),
    # UFC on CIFAR: ResNet-18, MobileNetV2, EfficientNet-B0, ShuffleNetV2
    "ufc-paper": ("resnet18", "mobilenet_v2", "efficientnet_b0", "shufflenet_v2"),
    # a CPU budget: two BN teachers of different families instead of four or five
    "cpu-convnet-shufflenet": ("convnet_bn_w32", "shufflenet_v2"),
}


def teacher_archs(exp: "Experiment", method) -> list[str]:
    """The teachers ``exp`` synthesises with: ``teacher_arch`` alone, or for a multi-teacher method
    ``teacher_arch`` then the rest of ``exp.teacher_set`` (default: the method's paper set)."""
    if method.default_teacher_set is None:  # a single-teacher method ignores teacher_set
        return [exp.teacher_arch]
    name = exp.teacher_set or method.default_teacher_set
    if name not in TEACHER_SETS:
        raise ValueError(f"unknown teacher set {name!r}; expected one of {sorted(TEACHER_SETS)}")
    return [exp.teacher_arch] + [a for a in TEACHER_SETS[name] if a != exp.teacher_arch]


@dataclass
class Experiment:
    """Every knob of one experiment, with the CPU smoke settings as defaults."""

    dataset: str = "digits"  # dataset name (dire.data.DATASETS)
    method: str = "sre2l"  # synthesis method (dire.synthesis.METHODS)
    method_kwargs: dict = field(default_factory=dict)  # the method's own settings (e.g. r_bn, jitter)
    synthesis: SynthesisConfig = field(default_factory=lambda: SynthesisConfig(iterations=200))
    dire: DiReConfig = field(default_factory=DiReConfig)
    teacher_arch: str = "convnet_bn"  # BN teacher that synthesis matches
    teacher_recipe: str = "cpu"  # dire.train.TEACHER_RECIPES
    teacher_seed: int = 0
    teacher_set: str | None = None  # multi-teacher methods (G-VBSM, UFC): a TEACHER_SETS name; None = the method's own
    bank_per_class: int = 500  # real embeddings per class (release: 500)
    student_arch: str = "convnet"
    student_recipe: str = "cpu"  # dire.train.STUDENT_RECIPES
    student_epochs: int | None = None  # overrides the recipe's epochs
    # other fields of the soft-label student recipe (dire.train.Recipe), e.g. {"lr": 1e-3, "warmup_epochs": 10}
    student_overrides: dict = added_field(default_factory=dict)
    student_seeds: tuple[int, ...] = (0, 1, 2)
    metric_arch: str | None = None  # embedding network of the diversity metrics: None = the teacher
    protocol: str | None = None  # student evaluation: "soft" (teacher soft labels) or "dc"; None = the method's
    experts: dict = field(default_factory=dict)  # MTT: num_experts and ExpertConfig fields (default 100 x 50 epochs)
    # > 0: hold out this many training images per class, never used by teachers, banks or synthesis, and
    # report students' accuracy on them instead of the test split (for choosing settings, e.g. `dire sweep`)
    validation_per_class: int = added_field(0)
    validation_seed: int = added_field(0)  # which images the validation split holds

    @property
    def holdout(self) -> tuple[int, int] | None:
        return (self.validation_per_class, self.validation_seed) if self.validation_per_class > 0 else None

    def config(self) -> dict:
        return config_dict(self)


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
            raise ValueError(f"{method}: unknown override {key!r}; expected a setting of {method} {sorted(own)}, "
                             f"a SynthesisConfig field {sorted(synthesis_fields)} or an Experiment field "
                             f"{sorted(experiment_fields)}")
    return dataclasses.replace(exp, method=method, method_kwargs=kwargs,
                               synthesis=dataclasses.replace(exp.synthesis, **synthesis), **top)


def prepare_experts(exp: Experiment, train_set, test_set, *, device, runs_root, progress) -> Path:
    """MTT's expert trajectories for ``exp`` (trained once, cached): the settings row's model and ZCA, then
    ``exp.experts`` (``num_experts`` and any :class:`~dire.mtt.ExpertConfig` field)."""
    row = MTT_SETTINGS.get((exp.dataset, exp.synthesis.ipc), {})
    settings = {k: row[k] for k in ("model", "zca") if k in row}
    settings.update({k: v for k, v in exp.experts.items() if k != "num_experts"})
    return train_experts(train_set, num_experts=exp.experts.get("num_experts", 100), config=ExpertConfig(**settings),
                         seed=exp.teacher_seed, test_set=test_set, runs_root=runs_root, device=device,
                         progress=progress)


def metric_network(exp: Experiment, *, teacher: torch.nn.Module, teacher_record: dict,
                   device: str | torch.device = "cpu", data_root: str | Path = "data",
                   runs_root: str | Path | None = None, progress: bool = False,
                   download: bool = False) -> tuple[torch.nn.Module, dict, str]:
    """The one embedding network the diversity metrics use, its record and its name: the teacher, or
    (``exp.metric_arch``) an independent evaluator trained with the teacher's recipe and seed + 1."""
    if exp.metric_arch is None:
        return teacher, teacher_record, f"teacher {exp.teacher_arch}"
    net, record = get_teacher(exp.dataset, exp.metric_arch, recipe=exp.teacher_recipe, seed=exp.teacher_seed + 1,
                              data_root=data_root, runs_root=runs_root, device=device, progress=progress,
                              download=download, holdout=exp.holdout)
    return net, record, f"evaluator {exp.metric_arch}"


def run_experiment(exp: Experiment, *, device: str | torch.device = "cpu", data_root: str | Path = "data",
                   runs_root: str | Path | None = None, progress: bool = True, download: bool = False,
                   log=print) -> dict:
    """Run (or resume) ``exp`` and return ``{"config", "teacher_acc", "accuracy", "diversity", "timing", "dirs"}``.

    ``accuracy`` is on the test split, or on the validation split when ``exp.validation_per_class > 0``
    (``eval_split`` says which)."""
    device = torch.device(device)
    # settings first (method, teachers, student recipe), so a bad one fails before any data, teacher or
    # synthesis. A method's published per-dataset settings lie under the explicit ones (build_method names an
    # unknown method)
    defaults = METHODS[exp.method].dataset_defaults(exp.dataset, exp.synthesis.ipc) if exp.method in METHODS else {}
    method = build_method(exp.method, **{**defaults, **exp.method_kwargs})
    protocol = exp.protocol or method.protocol
    if protocol == "dc" and exp.student_overrides:
        raise ValueError(f"student_overrides {exp.student_overrides} set the soft-label recipe, but {exp.method} "
                         "is evaluated with the DC protocol (dire.evaluate_dc.DCProtocol); drop them or use "
                         "protocol='soft'")
    archs = teacher_archs(exp, method)
    student = method.student_settings(len(archs))
    epochs = {"epochs": exp.student_epochs} if exp.student_epochs else {}  # for either protocol
    recipe = get_recipe(exp.student_recipe, student=True, **{**epochs, **exp.student_overrides,
                                                            **({"loss": student["loss"]} if "loss" in student else {})})
    if "epoch_scale" in student:  # e.g. UFC: (M + 1)x more images, so 1 / (M + 1) of the epochs
        recipe = dataclasses.replace(recipe, epochs=max(1, round(recipe.epochs * student["epoch_scale"])))

    # test_set: what students are scored on (the validation split when holding one out)
    train_set, test_set = training_split(exp.dataset, holdout=exp.holdout, data_root=data_root, download=download)
    info = train_set.info
    eval_split = "test" if exp.holdout is None else f"validation ({exp.validation_per_class}/class, seed {exp.validation_seed})"

    teacher, trec = get_teacher(exp.dataset, exp.teacher_arch, recipe=exp.teacher_recipe, seed=exp.teacher_seed,
                                data_root=data_root, runs_root=runs_root, device=device, progress=progress,
                                holdout=exp.holdout)
    log(f"teacher {exp.teacher_arch} ({exp.teacher_recipe}): test accuracy {trec['test_acc']:.2f}%")
    teacher_key = config_hash(trec["config"])

    bank, bank_dir = cached_bank(teacher, trec, train_set, per_class=exp.bank_per_class, device=device,
                                 runs_root=runs_root, progress=progress)

    if isinstance(method, MTT) and not method.experts_dir:
        method.experts_dir = str(prepare_experts(exp, train_set, test_set, device=device, runs_root=runs_root,
                                                 progress=progress))
    teachers, banks, keys = [teacher], [bank], [teacher_key]
    for arch in archs[1:]:
        net, rec = get_teacher(exp.dataset, arch, recipe=exp.teacher_recipe, seed=exp.teacher_seed,
                               data_root=data_root, runs_root=runs_root, device=device, progress=progress,
                               holdout=exp.holdout)
        log(f"teacher {arch} ({exp.teacher_recipe}): test accuracy {rec['test_acc']:.2f}%")
        teachers.append(net)
        banks.append(cached_bank(net, rec, train_set, per_class=exp.bank_per_class, device=device,
                                 runs_root=runs_root)[0] if exp.dire.enabled else None)
        keys.append(config_hash(rec["config"]))
    # keyed by the method's resolved settings, so {"r_bn": 1.0} and {"r_bn": 1.0, "jitter": 4} share a cache
    syn_config = {"teacher": teacher_key, "bank": bank_dir.name, "method": exp.method,
                  "method_settings": dataclasses.asdict(method), "synthesis": dataclasses.asdict(exp.synthesis),
                  "dire": config_dict(exp.dire)}
    if len(teachers) > 1:
        syn_config["teachers"] = keys
    syn_dir = run_dir("synthetic", syn_config, root=runs_root)
    ctx = Context(teacher=teacher, dataset=train_set, config=exp.synthesis, device=device, bank=bank,
                  teachers=teachers, banks=banks, cache_dir=run_dir("precomputed", {"teachers": keys}, root=runs_root))
    synthetic = synthesize(method, ctx, out_dir=syn_dir, dire=exp.dire, progress=progress)
    n_images = len(synthetic["labels"])
    timing = {"synthesis_s": float(synthetic["seconds"]), "synthesis_s_per_image": float(synthetic["seconds"]) / n_images}

    labeller = Ensemble(teachers) if student.get("ensemble") and len(teachers) > 1 else teacher
    split_key = {} if exp.holdout is None else {"eval_split": eval_split}  # absent for the test split: old keys hold
    if protocol == "dc":  # hard labels, SGD, DSA (DC/DM/MTT); MTT's learned syn_lr is the lr
        zca = Experts(method.experts_dir).zca() if isinstance(method, MTT) else None
        acc = evaluate_dc(synthetic, test_set=test_set, seeds=exp.student_seeds, arch=exp.student_arch, zca=zca,
                          device=device, cache_key={"synthetic": syn_dir.name, **split_key}, runs_root=runs_root, **epochs)
    elif protocol == "soft":
        acc = evaluate_synthetic(synthetic, teacher=labeller, test_set=test_set, seeds=exp.student_seeds,
                                 arch=exp.student_arch, recipe=recipe, device=device,
                                 cache_key={"synthetic": syn_dir.name, **split_key,
                                            "teacher": teacher_key if labeller is teacher else keys},
                                 runs_root=runs_root)
    else:
        raise ValueError(f"protocol must be 'soft' or 'dc'; got {protocol!r}")

    metric_net, mrec, metric_name = metric_network(exp, teacher=teacher, teacher_record=trec, device=device,
                                                   data_root=data_root, runs_root=runs_root, progress=progress,
                                                   download=download)
    metric_bank = bank if mrec is trec else cached_bank(metric_net, mrec, train_set, per_class=exp.bank_per_class,
                                                        device=device, runs_root=runs_root)[0]
    fake = embed_images(metric_net, from_uint8(synthetic["images"], info), device=device)
    real, real_labels = bank_embeddings(metric_bank)
    diversity = diversity_metrics(fake, synthetic["labels"], real, real_labels)

    result = {"config": exp.config(), "teacher_acc": trec["test_acc"], "teachers": archs,
              "student_recipe": dataclasses.asdict(recipe) if protocol == "soft" else None, "protocol": protocol,
              "eval_split": eval_split, "accuracy": acc, "diversity": diversity,
              "metric_network": metric_name, "timing": timing,
              "dirs": {"teacher": trec["dir"], "synthetic": str(syn_dir)}}
    exp_dir = run_dir("experiment", {"synthetic": syn_dir.name, "config": exp.config()}, root=runs_root)
    write_json(exp_dir / "result.json", result)
    return result
