"""The package's shape: no import cycles, stages import only earlier stages, registries refuse duplicates,
every notebook's parameters cell agrees with the config dataclasses, and the CLI reaches every field."""

import ast
import json
from pathlib import Path
from typing import Any, Optional

import pytest

import dire
from dire.experiments.config import FLAT, flat_defaults, make_experiment

PACKAGE = Path(dire.__file__).parent
NOTEBOOKS = PACKAGE.parent / "notebooks"
# the data flow, earliest first; a module may import its own stage and the stages before it
STAGES = [
    "checks",
    "runs",
    "distributed",
    "regularizer",
    "metrics",
    "data",
    "nets",
    "synthesis",
    "evaluation",
    "experiments",
    "report",
    "cli",
    "__main__",
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every dire module -> the dire modules it imports anywhere in its body (lazy imports included)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dire"):
                targets.add(node.module)
                targets.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("dire"))
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "cli"  # "dire" itself (the package docstring) imports nothing


def test_no_import_cycles():
    graph = _imports()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_stages_import_only_earlier_stages():
    order = {s: i for i, s in enumerate(STAGES)}
    backward = [
        (m, t)
        for m, targets in _imports().items()
        for t in targets
        if m != "dire" and order[_stage(t)] > order[_stage(m)]
    ]
    assert not backward, f"a stage imports a later one: {backward}"


def test_registries_refuse_duplicate_names():
    from dire.evaluation import PROTOCOLS, register_protocol
    from dire.nets.models import register as register_model
    from dire.synthesis import METHODS, SRe2L, register

    with pytest.raises(ValueError, match="already registered"):
        register(type("Again", (SRe2L,), {"name": "sre2l"}))
    with pytest.raises(ValueError, match="already registered"):
        register_model("convnet")(lambda **kw: None)
    with pytest.raises(ValueError, match="already registered"):
        register_protocol(PROTOCOLS["soft"])
    assert METHODS["sre2l"] is SRe2L


def _parameters(notebook: Path) -> dict[str, Any]:
    cell = next(
        c for c in json.loads(notebook.read_text())["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])
    )
    namespace: dict[str, Any] = {"Optional": Optional, "Any": Any}
    exec("".join(cell["source"]), namespace)
    return {k: namespace[k] for k in namespace["__annotations__"]}


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_parameters_cell_agrees_with_the_dataclasses(notebook):
    defaults = flat_defaults()
    params = _parameters(notebook)
    shared = {k: v for k, v in params.items() if k in defaults}
    assert shared, f"{notebook.name} mirrors no config field"
    wrong = {
        k: (v, defaults[k])
        for k, v in shared.items()
        if (list(v) if isinstance(v, tuple) else v)
        != (list(defaults[k]) if isinstance(defaults[k], tuple) else defaults[k])
    }
    assert not wrong, f"{notebook.name}: (cell, dataclass) defaults differ: {wrong}"


def test_make_experiment_defaults_are_the_dataclass_defaults():
    from dire.experiments.config import Experiment
    from dire.synthesis import SRe2L

    exp = make_experiment()
    assert exp.synthesis == Experiment().synthesis and exp.dire == Experiment().dire
    assert exp.method_kwargs == {"r_bn": SRe2L.r_bn, "jitter": SRe2L.jitter}
    assert make_experiment(method="gvbsm").method_kwargs == {"jitter": SRe2L.jitter}  # G-VBSM takes no r_bn


# a value different from each flat name's default, as typed on the command line
_CLI_VALUES = {
    "dataset": "fashion-mnist",
    "method": "cda",
    "ipc": "7",
    "seed": "3",
    "iterations": "9",
    "lr": "0.5",
    "betas": "0.1,0.2",
    "ipc_per_unit": "7",
    "classes_per_unit": "2",
    "init": "real",
    "condense_classes": "3",
    "dire": "on",
    "dire_weight": "0.3",
    "r_c": "2.0",
    "r_e": "0.5",
    "official": "on",
    "terms": "cd,edm",
    "logdet_eps": "0.2",
    "edm_coreset": "4",
    "teacher_arch": "convnet_bn_w32",
    "teacher_recipe": "cifar",
    "teacher_seed": "2",
    "teacher_weights": "teacher.pt",
    "teacher_set": "ufc-paper",
    "bank_per_class": "9",
    "student_arch": "resnet18",
    "student_recipe": "cifar",
    "student_epochs": "3",
    "student_seeds": "4,5",
    "student_ddp": "on",
    "teacher_ddp": "on",
    "metric_arch": "convnet",
    "protocol": "dc",
    "validation_per_class": "8",
    "validation_seed": "6",
    "precision": "bf16",
    "synthesis_precision": "bf16",
}
_DICT_VALUES = {
    "method_settings": ("--method-arg", "crop_scale=(0.5,1.0)", {"crop_scale": (0.5, 1.0)}),
    "student_overrides": ("--student-arg", "lr=0.001", {"lr": 0.001}),
    "teacher_overrides": ("--teacher-arg", "epochs=2", {"epochs": 2}),
    "experts": ("--expert-arg", "num_experts=4", {"num_experts": 4}),
}


def test_every_config_field_is_reachable_from_the_cli():
    from dire.cli import build_parser, experiment_from_args

    assert set(FLAT) - {"r_bn", "jitter"} == set(_CLI_VALUES) | set(_DICT_VALUES)  # r_bn, jitter: --method-arg
    argv = ["condense"] + [a for k, v in _CLI_VALUES.items() for a in ("--" + k.replace("_", "-"), v)]
    argv += [a for flag, text, _ in _DICT_VALUES.values() for a in (flag, text)]
    exp = experiment_from_args(build_parser().parse_args(argv))
    expected = make_experiment(
        **{
            "dataset": "fashion-mnist",
            "method": "cda",
            "ipc": 7,
            "seed": 3,
            "iterations": 9,
            "lr": 0.5,
            "betas": (0.1, 0.2),
            "ipc_per_unit": 7,
            "classes_per_unit": 2,
            "init": "real",
            "condense_classes": 3,
            "dire": True,
            "dire_weight": 0.3,
            "r_c": 2.0,
            "r_e": 0.5,
            "official": True,
            "terms": ("cd", "edm"),
            "logdet_eps": 0.2,
            "edm_coreset": 4,
            "teacher_arch": "convnet_bn_w32",
            "teacher_recipe": "cifar",
            "teacher_seed": 2,
            "teacher_weights": "teacher.pt",
            "teacher_set": "ufc-paper",
            "bank_per_class": 9,
            "student_arch": "resnet18",
            "student_recipe": "cifar",
            "student_epochs": 3,
            "student_seeds": (4, 5),
            "student_ddp": True,
            "teacher_ddp": True,
            "metric_arch": "convnet",
            "protocol": "dc",
            "validation_per_class": 8,
            "validation_seed": 6,
            "precision": "bf16",
            "synthesis_precision": "bf16",
            **{k: v for k, (_, _, v) in _DICT_VALUES.items()},
        },
        shared_method_defaults=False,
    )
    assert exp == expected
    assert exp != make_experiment(shared_method_defaults=False)


def test_cli_defaults_are_the_dataclass_defaults():
    from dire.cli import build_parser, experiment_from_args

    exp = experiment_from_args(build_parser().parse_args(["condense"]))
    assert exp == make_experiment(shared_method_defaults=False)
