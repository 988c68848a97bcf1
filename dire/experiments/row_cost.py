"""What a table row costs: its work counted from its settings, times a step time measured per image.

A row (dataset × IPC × method × ± DiRe) does three kinds of work, each counted in *image-steps* (one image
through a forward and backward pass of the teacher or student):

- synthesis: images of the set × iterations (DELT's images join round by round: the mean share of rounds an
  image is active; UFC's and MTT's own unit makeup is not modelled);
- student training: images of the set × epochs × seeds (soft-label students also run the teacher forward,
  counted as the same step: a student step is taken to cost one synthesis image-step);
- MTT's experts and the teachers are shared by many rows and left out.

Hours = image-steps × seconds per image-step, read from ``04_timing_memory``'s JSON at that dataset's shape
(``step_s_per_image`` of its baseline row). Without a measurement for a dataset the hours are None: "not
measured". On a GPU, ``dire reproduce --profile paper --only 04_timing_memory --device cuda`` measures them.

On G GPUs under torchrun (:func:`wall_fraction`) the ranks take the synthesis units in static shares and the
student seeds one per rank (or, with DDP students, every seed's batches split G ways): a row's wall time is
its hours times the share of the work its busiest rank does. Communication, teachers and banks are left out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from dire.data import dataset_info
from dire.experiments.config import Experiment, dataset_params, make_experiment, with_method
from dire.nets.train import get_recipe
from dire.synthesis import METHODS
from dire.synthesis.base import plan_units

_DC_EPOCHS = 1000  # the DC/DM/MTT protocol's student epochs (dire.evaluation.dc.DCProtocol's default)


def synthesis_image_steps(exp: Experiment) -> float:
    """Image-steps of one synthesis run of ``exp``."""
    classes = exp.synthesis.class_count(dataset_info(exp.dataset).num_classes)
    images, iterations = exp.synthesis.ipc * classes, exp.synthesis.iterations
    method = METHODS[exp.method](**exp.method_kwargs)
    if not method.optimises:  # the real-subset reference only draws its images
        return 0.0
    if exp.method == "delt":  # group g of R rounds joins at round g: active for (R - g) / R of the run
        rounds = math.ceil(iterations / method.round_iterations)
        return images * iterations * (rounds + 1) / (2 * rounds)
    return images * iterations


def student_image_steps(exp: Experiment, seeds: int) -> float:
    """Image-steps of ``seeds`` students trained on ``exp``'s set."""
    classes = exp.synthesis.class_count(dataset_info(exp.dataset).num_classes)
    images = exp.synthesis.ipc * classes
    protocol = exp.protocol or METHODS[exp.method].protocol
    if protocol == "dc":
        epochs = exp.student_epochs or _DC_EPOCHS
    else:
        epochs = exp.student_epochs or get_recipe(exp.student_recipe, student=True).epochs
    return images * epochs * seeds


def unit_count(exp: Experiment) -> int:
    """Synthesis units of ``exp`` (the ranks' unit of work): MTT optimises its whole set as one."""
    if exp.method == "mtt":
        return 1
    return len(plan_units(exp.synthesis, dataset_info(exp.dataset).num_classes))


def wall_fraction(row: Mapping, gpus: int, *, ddp_students: bool = False) -> float:
    """The share of ``row``'s work (a :func:`main_table_rows` row) its busiest rank does on ``gpus`` ranks: its
    wall time over one GPU's. Synthesis: ``ceil(units / G)`` of the units; students: ``ceil(seeds / G)`` of the
    seeds, or ``1 / G`` of every seed's steps with ``ddp_students``."""
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1; got {gpus}")
    synthesis = row["synthesis_steps"] * math.ceil(row["units"] / gpus) / row["units"]
    seeds = 1 / gpus if ddp_students else math.ceil(row["seeds"] / gpus) / row["seeds"]
    return (synthesis + row["student_steps"] * seeds) / row["image_steps"]


def step_seconds(timing_json: Path) -> dict[str, float]:
    """Seconds per image-step of each dataset's baseline row in a ``04_timing_memory`` JSON."""
    rows = json.loads(Path(timing_json).read_text())
    return {r["dataset"]: float(r["step_s_per_image"]) for r in rows if not r["dire"]}


def main_table_rows(params: Mapping, *, seconds: Mapping[str, float] | None = None) -> list[dict]:
    """Every row of ``01_main_results``' ``params`` (a profile merged over the notebook's defaults) with its
    image-steps (``synthesis_steps`` + ``student_steps``), its ``units`` and ``seeds``, and, where ``seconds`` has
    its dataset, its hours on one GPU (a DiRe row is counted like its baseline: the term's own time is 04's DiRe
    share)."""
    rows = []
    for dataset in params["datasets"]:
        p = dataset_params(params, dataset, params.get("dataset_overrides", {}))
        for ipc in p["ipcs"]:
            base = make_experiment(**{**p, "ipc": ipc, "method": p["methods"][0]})
            for method in p["methods"]:
                exp = with_method(base, method, p["method_overrides"].get(method))
                synthesis, students = synthesis_image_steps(exp), student_image_steps(exp, len(p["seeds"]))
                work = synthesis + students
                per = (seconds or {}).get(dataset)
                hours = None if per is None else work * per / 3600
                rows.append(
                    {
                        "dataset": dataset,
                        "ipc": ipc,
                        "method": method,
                        "image_steps": work,
                        "synthesis_steps": synthesis,
                        "student_steps": students,
                        "units": unit_count(exp),
                        "seeds": len(p["seeds"]),
                        "hours": hours,
                    }
                )
    return rows
