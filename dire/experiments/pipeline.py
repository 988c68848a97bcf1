"""One experiment end to end: teacher → real bank → synthesis (± DiRe) → students → diversity metrics.

Every stage is cached under ``<runs>/<stage>/<hash of its config>/``, so a rerun
of the same experiment loads what exists and resumes what was interrupted.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

import dire.distributed as distributed
from dire.checks import check_device
from dire.evaluation import Students, get_protocol
from dire.experiments.config import Experiment, teacher_archs
from dire.metrics import diversity_metrics
from dire.nets.bank import bank_embeddings, cached_bank
from dire.nets.experts import ExpertConfig, Experts, train_experts
from dire.nets.models import Ensemble, embed_images
from dire.nets.speed import precision_key, resolve_precision
from dire.nets.teacher import get_teacher, training_split
from dire.nets.train import get_recipe, recipe_key
from dire.runs import config_dict, config_hash, run_dir, write_json
from dire.synthesis import METHODS, build_method, synthesize
from dire.synthesis.base import Context
from dire.synthesis.mtt import MTT_SETTINGS


def prepare_experts(
    exp: Experiment, train_set, test_set, *, limit: int | None = None, device, runs_root, progress
) -> Experts:
    """Expert trajectories for ``exp`` (trained once, cached): the dataset's published model and ZCA (MTT's
    settings table), then ``exp.experts`` (``num_experts`` and any :class:`~dire.nets.experts.ExpertConfig` field).
    The first ``limit`` (default ``num_experts``) finished experts of the folder are used."""
    row = MTT_SETTINGS.get((exp.dataset, exp.synthesis.ipc), {})
    settings = {k: row[k] for k in ("model", "zca") if k in row}
    settings.update({k: v for k, v in exp.experts.items() if k != "num_experts"})
    count = exp.experts.get("num_experts", 100)
    folder = train_experts(
        train_set,
        num_experts=count,
        config=ExpertConfig(**settings),
        seed=exp.teacher_seed,
        test_set=test_set,
        runs_root=runs_root,
        device=device,
        progress=progress,
    )
    return Experts(folder, limit=limit or count)


def metric_network(
    exp: Experiment,
    *,
    teacher: torch.nn.Module,
    teacher_record: dict,
    device: str | torch.device = "cpu",
    data_root: str | Path = "data",
    runs_root: str | Path | None = None,
    progress: bool = False,
    download: bool = False,
) -> tuple[torch.nn.Module, dict, str]:
    """The evaluator network of the diversity metrics, its record and its name: the teacher when
    ``exp.metric_arch`` is None, else an independent ``metric_arch`` trained with the teacher's recipe, precision
    and seed + 1 (:func:`run_experiment` measures in the teacher and in this evaluator)."""
    if exp.metric_arch is None:
        return teacher, teacher_record, f"teacher {exp.teacher_arch}"
    net, record = get_teacher(
        exp.dataset,
        exp.metric_arch,
        recipe=exp.teacher_recipe,
        seed=exp.teacher_seed + 1,
        data_root=data_root,
        runs_root=runs_root,
        device=device,
        progress=progress,
        download=download,
        holdout=exp.holdout,
        **exp.teacher_overrides,
        precision=exp.precision,
        ddp=exp.teacher_ddp,
    )
    return net, record, f"evaluator {exp.metric_arch}"


def run_experiment(
    exp: Experiment,
    *,
    device: str | torch.device = "cpu",
    data_root: str | Path = "data",
    runs_root: str | Path | None = None,
    progress: bool = True,
    download: bool = False,
    log=print,
) -> dict:
    """Run (or resume) ``exp`` and return ``{"config", "teacher_acc", "accuracy", "diversity", "timing", "dirs"}``.

    ``diversity`` (:func:`dire.metrics.diversity_metrics`) is measured in the teacher's features
    (``metric_network`` names it); with ``exp.metric_arch`` also in that evaluator's, as ``diversity_eval``
    (``eval_network`` names it).

    ``accuracy`` is on the test split, or on the validation split when ``exp.validation_per_class > 0``
    (``eval_split`` says which). ``log`` gets the teachers' accuracy and, at the end, :func:`result_line`.

    Under torchrun (:mod:`dire.distributed`) every rank calls this with the same ``exp``: the ranks split the
    synthesis units and the student seeds, wait on the folder locks for the teacher and bank one of them
    computes, and all return the same result; only rank 0 logs, shows progress and writes ``result.json``, and
    ``device="cuda"`` means each rank's own GPU."""
    start = time.perf_counter()
    device = distributed.setup(check_device(device))
    if not distributed.is_main():
        progress, log = False, lambda _m: None
    # "auto" resolved once for this device; a stage in bf16 says so in its key, fp32 leaves keys as they were
    precision = resolve_precision(exp.precision, device)
    syn_precision = resolve_precision(exp.synthesis_precision, device)
    # settings first (method, teachers, student recipe), so a bad one fails before any data, teacher or
    # synthesis. A method's published per-dataset settings lie under the explicit ones (build_method names an
    # unknown method)
    defaults = METHODS[exp.method].dataset_defaults(exp.dataset, exp.synthesis.ipc) if exp.method in METHODS else {}
    method = build_method(exp.method, **{**defaults, **exp.method_kwargs})
    protocol = get_protocol(exp.protocol or method.protocol)
    if not protocol.uses_recipe and exp.student_overrides:
        raise ValueError(
            f"student_overrides {exp.student_overrides} set the soft-label recipe, but {exp.method} "
            f"is evaluated with the {protocol.name!r} protocol, which takes no recipe; drop them or "
            "use protocol='soft'"
        )
    archs = teacher_archs(exp, method)
    student = method.student_settings(len(archs))
    epochs = {"epochs": exp.student_epochs} if exp.student_epochs else {}  # for either protocol
    recipe = get_recipe(
        exp.student_recipe,
        student=True,
        **{**epochs, **exp.student_overrides, **({"loss": student["loss"]} if "loss" in student else {})},
    )
    if "epoch_scale" in student:  # e.g. UFC: (M + 1)x more images, so 1 / (M + 1) of the epochs
        recipe = dataclasses.replace(recipe, epochs=max(1, round(recipe.epochs * student["epoch_scale"])))

    # test_set: what students are scored on (the validation split when holding one out)
    train_set, test_set = training_split(exp.dataset, holdout=exp.holdout, data_root=data_root, download=download)
    info = train_set.info
    eval_split = (
        "test" if exp.holdout is None else f"validation ({exp.validation_per_class}/class, seed {exp.validation_seed})"
    )

    def load_teacher(arch: str) -> tuple[torch.nn.Module, dict]:
        weights = exp.teacher_weights if arch == exp.teacher_arch else None  # the weights name teacher_arch's
        net, record = get_teacher(
            exp.dataset,
            arch,
            recipe=exp.teacher_recipe,
            seed=exp.teacher_seed,
            data_root=data_root,
            runs_root=runs_root,
            device=device,
            progress=progress,
            download=download,
            holdout=exp.holdout,
            weights=weights,
            **exp.teacher_overrides,
            precision=precision,
            ddp=exp.teacher_ddp,
        )
        how = f"weights {weights}" if weights else exp.teacher_recipe
        log(f"teacher {arch} ({how}): test accuracy {record['test_acc']:.2f}%")
        return net, record

    teacher, trec = load_teacher(exp.teacher_arch)
    teacher_key = config_hash(trec["config"])

    def load_bank(net: torch.nn.Module, record: dict, *, show: bool = False):
        """``(bank, folder)`` of a cached teacher: every bank of the experiment is made the same way."""
        return cached_bank(
            net,
            record,
            train_set,
            per_class=exp.bank_per_class,
            device=device,
            runs_root=runs_root,
            progress=show,
            precision=precision,
            classes=exp.synthesis.condense_classes,  # a run condensing a few classes needs no other class's rows
        )

    bank, bank_dir = load_bank(teacher, trec, show=progress)

    experts = None
    if method.needs_experts:  # a stage the method declares (MTT): expert trajectories on the real data
        experts = prepare_experts(
            exp,
            train_set,
            test_set,
            limit=getattr(method, "num_experts", None),
            device=device,
            runs_root=runs_root,
            progress=progress,
        )
    teachers, banks, keys = [teacher], [bank], [teacher_key]
    for arch in archs[1:]:
        net, rec = load_teacher(arch)
        teachers.append(net)
        banks.append(load_bank(net, rec)[0] if exp.dire.enabled else None)
        keys.append(config_hash(rec["config"]))
    # keyed by the method's resolved settings, so {"r_bn": 1.0} and {"r_bn": 1.0, "jitter": 4} share a cache
    syn_config = {
        "teacher": teacher_key,
        "bank": bank_dir.name,
        "method": exp.method,
        "method_settings": dataclasses.asdict(method),
        "synthesis": config_dict(exp.synthesis),  # added fields enter only when set
        "dire": config_dict(exp.dire),
    }
    if len(teachers) > 1:
        syn_config["teachers"] = keys
    if experts is not None:  # by content (the experts' config hash and how many are used), not by path
        syn_config["experts"] = {"key": experts.folder.name, "count": len(experts)}
    syn_config.update(precision_key(syn_precision, device))  # only bf16 synthesis adds a field
    syn_dir = run_dir("synthetic", syn_config, root=runs_root)
    ctx = Context(
        teacher=teacher,
        dataset=train_set,
        config=exp.synthesis,
        device=device,
        bank=bank,
        teachers=teachers,
        banks=banks,
        cache_dir=run_dir("precomputed", {"teachers": keys}, root=runs_root),
        experts=experts,
        precision=syn_precision,
    )
    synthetic = synthesize(method, ctx, out_dir=syn_dir, dire=exp.dire, progress=progress)
    n_images = len(synthetic["labels"])
    timing = {
        "synthesis_s": float(synthetic["seconds"]),
        "synthesis_s_per_image": float(synthetic["seconds"]) / n_images,
    }

    labeller = Ensemble(teachers) if student.get("ensemble") and len(teachers) > 1 else teacher
    split_key = {} if exp.holdout is None else {"eval_split": eval_split}  # absent for the test split: old keys hold
    students = Students(
        test_set=test_set,
        seeds=exp.student_seeds,
        arch=exp.student_arch,
        recipe=recipe,
        labeller=labeller,
        labeller_key=teacher_key if labeller is teacher else keys,
        zca=experts.zca() if experts is not None else None,
        epochs=exp.student_epochs,
        device=device,
        cache_key={"synthetic": syn_dir.name, **split_key},
        runs_root=runs_root,
        progress=progress,
        precision=precision,
        ddp=exp.student_ddp,
    )
    acc = protocol.evaluate(synthetic, students)

    def measure(net: torch.nn.Module, record: dict) -> dict:
        """The diversity metrics in ``net``'s features: the synthetic images embedded as its real bank was
        (decoded a batch at a time), so both sides of the metrics share one rounding."""
        net_bank = bank if record is trec else load_bank(net, record)[0]
        fake = embed_images(net, synthetic["images"], info=info, device=device, precision=precision)
        real, real_labels = bank_embeddings(net_bank)
        return diversity_metrics(fake, synthetic["labels"], real, real_labels, seed=exp.synthesis.seed)

    # always in the teacher's features, and also in an independent evaluator when metric_arch names one, so no
    # method scores well merely by shaping the features it is measured in
    measured = {"diversity": measure(teacher, trec), "metric_network": f"teacher {exp.teacher_arch}"}
    if exp.metric_arch is not None:
        net, rec, name = metric_network(
            exp,
            teacher=teacher,
            teacher_record=trec,
            device=device,
            data_root=data_root,
            runs_root=runs_root,
            progress=progress,
            download=download,
        )
        measured.update(diversity_eval=measure(net, rec), eval_network=name)

    result = {
        "config": exp.config(),
        "teacher_acc": trec["test_acc"],
        "teachers": archs,
        "student_recipe": recipe_key(recipe) if protocol.uses_recipe else None,
        "protocol": protocol.name,
        "eval_split": eval_split,
        "accuracy": acc,
        **measured,
        "timing": timing,
        "precision": {"train": precision, "synthesis": syn_precision},  # "auto" as resolved on this device
        "dirs": {"teacher": trec["dir"], "synthetic": str(syn_dir)},
    }
    exp_dir = run_dir("experiment", {"synthetic": syn_dir.name, "config": exp.config()}, root=runs_root)
    if distributed.is_main():
        write_json(exp_dir / "result.json", result)
    log(result_line(result, time.perf_counter() - start))
    return result


def result_line(result: dict, seconds: float | None = None) -> str:
    """One line for a finished experiment, e.g. ``done: sre2l + DiRe (w 0.1, cd,cdm,edm) on digits, IPC 5, seed 0:
    convnet student accuracy 80.12 % (1 seed), Vendi 3.41 [12 s]`` (``dire reproduce`` streams it as each experiment
    ends)."""
    cfg, acc = result["config"], result["accuracy"]["final"]
    dire = cfg["dire"]
    name = cfg["method"] + (f" + DiRe (w {dire['weight']:g}, {','.join(dire['terms'])})" if dire["enabled"] else "")
    took = f" [{seconds:.0f} s]" if seconds is not None else ""
    return (
        f"done: {name} on {cfg['dataset']}, IPC {cfg['synthesis']['ipc']}, seed {cfg['synthesis']['seed']}: "
        f"{cfg['student_arch']} student accuracy {acc['mean']:.2f} % ({acc['n']} seed{'s' if acc['n'] != 1 else ''}), "
        f"Vendi {result['diversity']['vendi']:.2f}{took}"
    )
