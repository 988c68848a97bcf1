"""Command line: ``dire condense`` runs one experiment and prints accuracy and diversity; ``dire compare``
tabulates baseline vs + DiRe over seeds; ``dire sweep`` chooses DiRe's weights on a validation split;
``dire recipe-search`` chooses a profile's teacher and student recipe on one;
``dire reproduce`` runs the notebooks of a profile; ``dire lab`` opens them in JupyterLab.

Every experiment option is generated from :mod:`dire.experiments.config` (its defaults and help come from the
dataclass fields), so ``dire condense --help`` shows the same defaults as the notebooks. Example::

    dire condense --dataset fashion-mnist --method sre2l --dire on --ipc 10 --iterations 500 --seed 0
    dire condense --method mtt --expert-arg num_experts=4 --expert-arg epochs=3
    dire sweep --dataset digits --grid weight=0.1,1.0 --grid r_e=0,0.01 --validation-per-class 10 --out w.json
    dire recipe-search notebooks/params/recipe_search/fashion-mnist.yaml --out notebooks/params/selected/r.json
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys

import dire.distributed as distributed
from dire.checks import NonFiniteLoss, check_device, set_deterministic
from dire.data import DATASETS
from dire.evaluation import PROTOCOLS
from dire.experiments.config import (
    FLAT,
    TEACHER_SETS,
    flat_defaults,
    flat_help,
    flat_nullable,
    flat_type,
    make_experiment,
)
from dire.nets.models import list_models
from dire.nets.speed import PRECISIONS
from dire.nets.train import STUDENT_RECIPES, TEACHER_RECIPES
from dire.regularizer import ALL_TERMS
from dire.synthesis import METHODS


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
        return value

    return parse


def _key_value(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. r_bn=0.01), got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        try:
            value = float(raw)  # nan, inf: numbers to check, not strings
        except ValueError:
            value = raw
    return key.strip(), value


def _optional(kind):
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)

    return parse


def _default(function, name: str):
    return inspect.signature(function).parameters[name].default


# flat names the CLI spells its own way: dicts take KEY=VALUE repeats, lists take commas, booleans are on/off
_DICT_FLAGS = {
    "method_settings": "--method-arg",
    "student_overrides": "--student-arg",
    "teacher_overrides": "--teacher-arg",
    "experts": "--expert-arg",
}
_ALIASES = {"teacher_arch": ["--teacher"], "student_arch": ["--student"], "dire_weight": [], "seed": []}
_CHOICES = {
    "dataset": lambda: sorted(DATASETS),
    "method": lambda: sorted(METHODS),
    "init": lambda: ["noise", "real"],
    "teacher_arch": list_models,
    "student_arch": list_models,
    "metric_arch": list_models,
    "teacher_recipe": lambda: sorted(TEACHER_RECIPES),
    "student_recipe": lambda: sorted(STUDENT_RECIPES),
    "teacher_set": lambda: sorted(TEACHER_SETS),
    "protocol": lambda: sorted(PROTOCOLS),
    "precision": lambda: list(PRECISIONS),
    "synthesis_precision": lambda: list(PRECISIONS),
}
_POSITIVE = {"ipc", "iterations", "ipc_per_unit", "classes_per_unit", "bank_per_class", "student_epochs", "edm_coreset"}
_CLI_ONLY_IN_NOTEBOOKS = {"r_bn", "jitter"}  # shared method settings: the CLI takes them as --method-arg


def _add_experiment_options(parser: argparse.ArgumentParser, *, skip: set[str] = frozenset()) -> None:
    """One option per flat name of dire.experiments.config.FLAT, its default and help from the dataclasses."""
    defaults = flat_defaults()
    for name in FLAT:
        if name in skip or name in _CLI_ONLY_IN_NOTEBOOKS:
            continue
        default, help_text = defaults[name], flat_help(name)
        flag = _DICT_FLAGS.get(name, "--" + name.replace("_", "-"))
        names = [flag, *_ALIASES.get(name, [])]
        if name in _DICT_FLAGS:
            parser.add_argument(
                *names,
                dest=name,
                type=_key_value,
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help=f"{help_text} (repeatable)",
            )
        elif isinstance(default, bool):
            parser.add_argument(
                *names, dest=name, default="on" if default else "off", choices=["on", "off"], help=help_text
            )
        elif isinstance(default, tuple):
            parser.add_argument(
                *names, dest=name, default=",".join(map(str, default)), help=f"{help_text} (comma-separated)"
            )
        else:
            kind, nullable = flat_type(name), flat_nullable(name)
            kind = _positive(kind) if name in _POSITIVE else kind
            choices = _CHOICES[name]() + ([None] if nullable else []) if name in _CHOICES else None
            parser.add_argument(
                *names,
                dest=name,
                default=default,
                choices=choices,
                help=help_text,
                type=_optional(kind) if nullable else kind,
            )


def build_parser() -> argparse.ArgumentParser:
    from dire.experiments.drivers import compare
    from dire.experiments.recipe_search import search_recipes
    from dire.experiments.sweep import sweep

    parser = argparse.ArgumentParser(prog="dire", description="DiRe dataset-condensation experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter
    c = sub.add_parser(
        "condense", help="condense a dataset with one method (± DiRe), evaluate, measure diversity", formatter_class=fmt
    )
    _add_experiment_options(c)
    _add_where_options(c)
    cmp = sub.add_parser(
        "compare", help="baseline vs + DiRe over several seeds; writes a CSV and Markdown table", formatter_class=fmt
    )
    _add_experiment_options(cmp)
    _add_where_options(cmp)
    cmp.add_argument(
        "--seeds",
        default=",".join(map(str, _default(compare, "seeds"))),
        help="seed s = synthesis seed s and student seed s",
    )
    cmp.add_argument("--out", default="figures/cli/compare", help="table path without extension (.csv and .md)")
    cmp.add_argument(
        "--jobs",
        type=_positive(int),
        default=1,
        help="worker processes for the table's experiments (one GPU each where there are GPUs)",
    )
    cmp.add_argument(
        "--reference-row",
        choices=("on", "off"),
        default="off",
        help="add a real-subset row: IPC random real training images per class, same students and metrics",
    )
    sw = sub.add_parser(
        "sweep",
        help="choose DiRe's weights (w, r_c, r_e) on a validation split held out of the "
        "training set; writes the chosen weights for the profiles",
        formatter_class=fmt,
    )
    _add_experiment_options(sw, skip={"validation_per_class", "validation_seed"})
    _add_where_options(sw)
    sw.add_argument(
        "--grid",
        type=_key_value,
        action="append",
        default=[],
        metavar="AXIS=V1,V2,...",
        help="values to try for weight, r_c or r_e (repeatable; default weight=0.03,0.1,0.3,1.0 "
        "r_c=1.0 r_e=0.0,0.01,0.1)",
    )
    sw.add_argument("--seeds", default=",".join(map(str, _default(sweep, "seeds"))), help="seeds per grid point")
    sw.add_argument(
        "--validation-per-class",
        type=_positive(int),
        default=_default(sweep, "validation_per_class"),
        help="training images per class held out for choosing (never the test split)",
    )
    sw.add_argument("--validation-seed", type=int, default=_default(sweep, "validation_seed"))
    sw.add_argument("--out", default="figures/cli/selected_weights.json", help="the chosen weights (JSON)")
    sw.add_argument("--table", default="figures/cli/sweep", help="table path without extension (.csv and .md)")
    rs = sub.add_parser(
        "recipe-search",
        help="choose a teacher and student recipe on a validation split held out of the training set "
        "(candidates from a YAML search file)",
        formatter_class=fmt,
    )
    rs.add_argument("search", help="YAML: base (flat settings), candidates [{name, settings}], seeds, max_std")
    rs.add_argument("--seeds", default=None, help="seeds per candidate (default: the file's)")
    rs.add_argument(
        "--validation-per-class", type=_positive(int), default=_default(search_recipes, "validation_per_class")
    )
    rs.add_argument("--validation-seed", type=int, default=_default(search_recipes, "validation_seed"))
    rs.add_argument("--out", default="figures/cli/selected_recipe.json", help="the chosen candidate (JSON)")
    rs.add_argument("--table", default="figures/cli/recipe_search", help="table path without extension (.csv, .md)")
    _add_where_options(rs)
    rep = sub.add_parser(
        "reproduce", help="run the paper notebooks headless (papermill) for a profile", formatter_class=fmt
    )
    rep.add_argument("--profile", default="quick", choices=["smoke", "quick", "paper"])
    rep.add_argument("--only", nargs="+", default=None, metavar="NOTEBOOK", help="e.g. 02_ablation")
    rep.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    rep.add_argument("--deterministic", action="store_true", help="pass deterministic=True to every notebook")
    rep.add_argument(
        "--dry-run",
        action="store_true",
        help="every notebook at a step or two on stand-in data of the true shapes; outputs in build/<profile>-dry-run/",
    )
    rep.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="notebooks run at once, each in its own process (its share of the CPU threads, or its own GPU); "
        "output is not streamed",
    )
    rep.add_argument(
        "--quiet",
        action="store_true",
        help="no streamed progress, per-experiment lines or time estimates; only failures and the index",
    )
    lab = sub.add_parser(
        "lab",
        help="register the Jupyter kernel 'Python (dire)' for this user and open JupyterLab on notebooks/",
    )
    lab.add_argument("--no-browser", action="store_true", help="start the server without opening a browser")
    lab.add_argument("--port", type=int, default=None, help="server port (default: Jupyter's, 8888 or the next free)")
    lab.add_argument("--token", default=None, help="server token (default: a random one, printed in the log)")
    res = sub.add_parser(
        "results", help="refill RESULTS.md's tables from figures/ (--check: fail if out of date)", formatter_class=fmt
    )
    res.add_argument("--check", action="store_true", help="write nothing; exit 1 when RESULTS.md differs from figures/")
    res.add_argument("--path", default="RESULTS.md")
    res.add_argument("--figures", default="figures", help="the folder the tables' paths are relative to")
    runs = sub.add_parser(
        "runs",
        help="the runs/ cache: list it, verify every artifact, clean unfinished runs, carry finished ones elsewhere",
        formatter_class=fmt,
    )
    runs.add_argument(
        "action",
        choices=["list", "verify", "clean", "pack", "unpack"],
        help="list: one line per run folder; verify: load every artifact and check every config; "
        "clean: remove incomplete run folders (never complete ones) and leftover temporary files; "
        "pack: write the complete run folders to --archive, to resume the run on another machine; "
        "unpack: add the run folders of --archive (keeping complete ones already here)",
    )
    runs.add_argument("--runs-root", default="runs")
    runs.add_argument("--dry-run", action="store_true", help="clean: only say what would be removed")
    runs.add_argument("--archive", default=None, help="pack / unpack: the .tar.gz file")
    runs.add_argument(
        "--stage", action="append", default=None, help="pack: only this stage (repeat for several; default: all)"
    )
    return parser


def _add_where_options(c: argparse.ArgumentParser) -> None:
    o = c.add_argument_group("where")
    o.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    o.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic kernels (torch.use_deterministic_algorithms, no cuDNN autotuning): slower "
        "on a GPU; see dire.checks.set_deterministic",
    )
    o.add_argument("--data-root", default="data")
    o.add_argument("--download", action="store_true", help="let torchvision download Fashion-MNIST / CIFAR if missing")
    o.add_argument("--runs-root", default="runs")
    o.add_argument("--json", default=None, help="also write the result to this file")
    o.add_argument("--quiet", action="store_true", help="no progress bars")


def _seeds(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated integers, got {text!r}") from None


def experiment_from_args(args: argparse.Namespace):
    """The :class:`~dire.experiments.config.Experiment` the parsed options describe."""
    values = {name: getattr(args, name) for name in FLAT if hasattr(args, name)}
    for name in _DICT_FLAGS:
        if name in values:
            values[name] = dict(values[name])
    terms = tuple(t for t in values["terms"].split(",") if t)
    unknown = [t for t in terms if t not in ALL_TERMS]
    if unknown:
        raise ValueError(f"--terms: unknown {unknown}; expected a comma-separated subset of {','.join(ALL_TERMS)}")
    values["terms"] = terms
    values["student_seeds"] = _seeds(values["student_seeds"], "--student-seeds")
    try:
        values["betas"] = tuple(float(b) for b in values["betas"].split(","))
    except ValueError:
        raise ValueError(f"--betas: expected two comma-separated numbers, got {values['betas']!r}") from None
    defaults = flat_defaults()
    for name in values:
        if isinstance(defaults[name], bool):
            values[name] = values[name] == "on"
    exp = make_experiment(**values, shared_method_defaults=False)
    exp.synthesis.validate(DATASETS[exp.dataset].num_classes)
    return exp


def format_result(result: dict) -> str:
    acc, div, timing = result["accuracy"], result["diversity"], result["timing"]
    cfg = result["config"]
    name = f"{cfg['method']}{' + DiRe' if cfg['dire']['enabled'] else ''}"
    lines = [
        f"{name} on {cfg['dataset']}, IPC {cfg['synthesis']['ipc']}",
        f"  teacher accuracy      {result['teacher_acc']:.2f}%   (teachers: {', '.join(result['teachers'])})",
        f"  student accuracy      final {acc['final']['mean']:.2f} ± {acc['final']['std']:.2f}%   "
        f"best {acc['best']['mean']:.2f} ± {acc['best']['std']:.2f}%   ({acc['final']['n']} seeds)",
        *diversity_lines(div, result["metric_network"]),
        *(diversity_lines(result["diversity_eval"], result["eval_network"]) if "diversity_eval" in result else []),
        f"  synthesis {timing['synthesis_s']:.1f} s ({timing['synthesis_s_per_image'] * 1e3:.1f} ms/image)",
    ]
    return "\n".join(lines)


def diversity_lines(div: dict, network: str) -> list[str]:
    """A result's diversity metrics in one network, Coverage beside its identical-distribution expectation."""
    expected = f" (E {div['coverage_expected']:.3f})" if "coverage_expected" in div else ""
    return [
        f"  diversity ({network}):",
        f"    Vendi {div['vendi']:.3f} (all classes {div['vendi_all']:.3f})   Coverage {div['coverage']:.3f}"
        f"{expected} (all {div['coverage_all']:.3f})   intra-class cosine {div['intra_class_cosine']:.4f}",
        f"    precision {div['precision']:.3f}   recall {div['recall']:.3f}   density {div['density']:.3f}",
    ]


def _runs_command(args: argparse.Namespace) -> int:
    from dire.report import runs_folder

    if args.action in ("pack", "unpack"):
        if args.archive is None:
            raise ValueError(f"dire runs {args.action} needs --archive FILE.tar.gz")
        if args.action == "pack":
            packed = runs_folder.pack(args.runs_root, args.archive, stages=args.stage)
            print(f"packed {len(packed)} complete run folder(s) into {args.archive}")
        else:
            added, kept = runs_folder.unpack(args.archive, args.runs_root)
            print(f"added {len(added)} run folder(s) to {args.runs_root}; kept {len(kept)} already here")
        return 0
    if args.action == "clean":
        removed = runs_folder.clean(args.runs_root, dry_run=args.dry_run)
        for path in removed:
            print(f"{'would remove' if args.dry_run else 'removed'} {path}")
        print(
            f"{len(removed)} incomplete run folder(s) or temporary file(s) {'to remove' if args.dry_run else 'removed'}"
        )
        return 0
    runs = runs_folder.verify(args.runs_root) if args.action == "verify" else runs_folder.scan(args.runs_root)
    for run in runs:
        print(runs_folder.describe(run))
        for problem in run.problems:
            print(f"    problem: {problem}")
    bad = sum(bool(r.problems) for r in runs)
    print(
        f"{len(runs)} run folder(s), {sum(not r.complete for r in runs)} incomplete"
        + (f", {bad} with problems" if args.action == "verify" else "")
    )
    return 1 if bad else 0


KERNEL = "dire"


def _recipe_search_command(args: argparse.Namespace, log, argv) -> int:
    from dire.experiments.recipe_search import load_search, search_recipes, select_recipe, write_recipe_selection
    from dire.report.tables import recipe_search_markdown, rows_to_csv
    from dire.runs import atomic_write_text, write_json

    spec = load_search(args.search)
    seeds = _seeds(args.seeds, "--seeds") if args.seeds else tuple(spec["seeds"])
    held = dict(validation_per_class=args.validation_per_class, validation_seed=args.validation_seed)
    rows = search_recipes(
        spec["base"],
        spec["candidates"],
        seeds=seeds,
        log=log,
        device=args.device,
        data_root=args.data_root,
        runs_root=args.runs_root,
        progress=not args.quiet,
        download=args.download,
        **held,
    )
    if not distributed.is_main():
        return 0
    chosen = select_recipe(rows, max_std=spec["max_std"])
    command = "dire " + " ".join(argv or sys.argv[1:])
    write_recipe_selection(
        args.out, chosen, rows, base=spec["base"], seeds=seeds, max_std=spec["max_std"], command=command, **held
    )
    atomic_write_text(f"{args.table}.csv", rows_to_csv(rows))
    if args.json:
        write_json(args.json, rows)
    table = recipe_search_markdown(rows, chosen)
    atomic_write_text(f"{args.table}.md", table)
    print(table)
    steady = "" if chosen["within_std"] else f" (no candidate had seed std <= {spec['max_std']})"
    print(
        f"chosen: {chosen['name']} {chosen['settings']} (validation accuracy {chosen['val_acc']['mean']:.2f}){steady}"
    )
    return 0


def lab(*, browser: bool = True, port: int | None = None, token: str | None = None) -> int:
    """Register the kernel ``dire`` (this interpreter, for this user: any Jupyter front-end can pick it), then run
    JupyterLab rooted at the repository with notebooks/ open; each notebook's kernel starts in notebooks/, the
    working folder its ``../data``, ``../runs`` and ``../figures`` expect. Returns the server's exit code."""
    import os
    import subprocess
    from importlib.util import find_spec

    from dire.report.reproduce import NOTEBOOKS, kernel_transport

    if find_spec("jupyterlab") is None:
        raise FileNotFoundError("JupyterLab is not installed: pip install -e '.[notebooks]' (make lab does that)")
    from ipykernel.kernelspec import install
    from jupyter_core.paths import jupyter_runtime_dir

    install(user=True, kernel_name=KERNEL, display_name="Python (dire)")
    argv = [
        sys.executable,
        "-m",
        "jupyterlab",
        f"--ServerApp.root_dir={NOTEBOOKS.parent}",
        f"--LabApp.default_url=/lab/tree/{NOTEBOOKS.name}",
        "--ServerApp.ip=127.0.0.1",
        # kernel sockets beside their connection files in Jupyter's runtime folder, as dire reproduce does
        f"--KernelManager.transport={kernel_transport(jupyter_runtime_dir())}",
    ]
    if not browser:
        argv.append("--no-browser")
    if port is not None:
        argv += [f"--ServerApp.port={port}", "--ServerApp.port_retries=0"]
    if token is not None:
        argv.append(f"--IdentityProvider.token={token}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI run as root; Jupyter refuses without this
        argv.append("--allow-root")
    if os.name == "posix":  # become the server, so a signal (Ctrl-C, a test's terminate) reaches it directly
        os.execv(sys.executable, argv)
    try:
        return subprocess.call(argv)
    except KeyboardInterrupt:  # Ctrl-C reaches the server too, which shuts down
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    main_rank = distributed.is_main()  # under torchrun only rank 0 logs, prints and writes tables and records
    log = (lambda msg: print(msg, file=sys.stderr)) if main_rank else (lambda _m: None)  # noqa: E731
    try:
        if getattr(args, "device", None) is not None:
            check_device(args.device)  # a wrong or absent device fails before any work
        if getattr(args, "deterministic", False):
            set_deterministic(True)
        if args.command == "reproduce":
            from dire.report.reproduce import reproduce

            extra = {"deterministic": True} if args.deterministic else None
            runs = reproduce(
                args.profile,
                only=args.only,
                device=args.device,
                quiet=args.quiet,
                log=print,
                extra=extra,
                dry_run=args.dry_run,
                jobs=args.jobs,
            )
            failed = [r.name for r in runs if not r.ok]
            return 1 if failed else 0
        if args.command == "recipe-search":
            return _recipe_search_command(args, log, argv)
        if args.command == "runs":
            return _runs_command(args)
        if args.command == "lab":
            return lab(browser=not args.no_browser, port=args.port, token=args.token)
        if args.command == "results":
            from pathlib import Path

            from dire.report.results import stale_tables, write_results

            if args.check:
                stale = stale_tables(Path(args.path).read_text(), args.figures)
                if stale:
                    log(f"{args.path} is out of date with {args.figures}/ in {', '.join(stale)}; run `dire results`")
                    return 1
                print(f"{args.path} is up to date with {args.figures}/")
            else:
                changed = write_results(args.path, args.figures)
                print(f"{args.path} {'updated from' if changed else 'is up to date with'} {args.figures}/")
            return 0
        exp = experiment_from_args(args)
        where = dict(
            device=args.device,
            data_root=args.data_root,
            runs_root=args.runs_root,
            progress=not args.quiet,
            download=args.download,
        )
        if args.command == "condense":
            from dire.experiments.pipeline import run_experiment
            from dire.runs import write_json

            result = run_experiment(exp, log=log, **where)
            if main_rank:
                print(format_result(result))
                if args.json:
                    write_json(args.json, result)
        elif args.command == "sweep":
            from dire.experiments.sweep import DEFAULT_GRID, select, sweep, write_selection
            from dire.report.tables import rows_to_csv, sweep_markdown
            from dire.runs import atomic_write_text

            grid = dict(DEFAULT_GRID)
            for axis, values in args.grid:
                grid[axis] = tuple(values) if isinstance(values, (tuple, list)) else (values,)
            rows = sweep(
                exp,
                grid=grid,
                seeds=_seeds(args.seeds, "--seeds"),
                validation_per_class=args.validation_per_class,
                validation_seed=args.validation_seed,
                log=log,
                **where,
            )
            if not main_rank:  # every rank ran the sweep's experiments; rank 0 writes what they chose
                return 0
            chosen = select(rows)
            write_selection(
                args.out,
                chosen,
                rows,
                base=exp,
                validation_per_class=args.validation_per_class,
                validation_seed=args.validation_seed,
                command="dire " + " ".join(argv or sys.argv[1:]),
            )
            atomic_write_text(f"{args.table}.csv", rows_to_csv(rows))
            table = sweep_markdown(rows)
            atomic_write_text(f"{args.table}.md", table)
            print(table)
            print(
                f"chosen: w {chosen['weight']:g}, r_c {chosen['r_c']:g}, r_e {chosen['r_e']:g} (validation accuracy "
                f"{chosen['val_acc']:.2f}; baseline {chosen['baseline_val_acc']:.2f}) -> {args.out}"
            )
        elif args.command == "compare":
            from dire.experiments.drivers import compare
            from dire.report.tables import to_markdown, write_table

            if args.jobs > 1 and distributed.active():
                raise ValueError("--jobs starts worker processes; under torchrun the ranks share the work: drop --jobs")
            rows = compare(
                exp,
                seeds=_seeds(args.seeds, "--seeds"),
                log=log,
                jobs=args.jobs,
                reference_row=args.reference_row == "on",
                **where,
            )
            if not main_rank:
                return 0
            csv_path, md_path = write_table(rows, args.out)
            print(to_markdown(rows))
            print(
                f"metrics in: {rows[0]['metric_network']}; teacher accuracy {rows[0]['teacher_acc']:.2f}%; "
                f"tables: {csv_path}, {md_path}"
            )
    except (ValueError, FileNotFoundError, NonFiniteLoss) as err:  # bad input and bad files: one line, no traceback
        parser.exit(2, f"dire: error: {err}\n")
    finally:
        distributed.finish()  # leave torchrun's process group (nothing outside torchrun)
    return 0


if __name__ == "__main__":
    sys.exit(main())
