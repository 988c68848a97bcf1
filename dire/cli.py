"""Command line: ``dire condense`` runs one experiment and prints accuracy and diversity; ``dire compare``
tabulates baseline vs + DiRe over seeds; ``dire sweep`` chooses DiRe's weights on a validation split;
``dire reproduce`` runs the notebooks of a profile.

Example::

    dire condense --dataset fashion-mnist --method sre2l --dire on --ipc 10 --seed 0
    dire sweep --dataset digits --grid weight=0.1,1.0 --grid r_e=0,0.01 --validation-per-class 10 --out w.json
"""

from __future__ import annotations

import argparse
import ast
import sys

from dire.data import DATASETS
from dire.models import list_models
from dire.pipeline import TEACHER_SETS
from dire.regularizer import ALL_TERMS, TERMS
from dire.synthesis import METHODS, DiReConfig, SynthesisConfig
from dire.train import STUDENT_RECIPES, TEACHER_RECIPES


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
        value = raw
    return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dire", description="DiRe dataset-condensation experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("condense", help="condense a dataset with one method (± DiRe), evaluate, measure diversity",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_experiment_options(c)
    cmp = sub.add_parser("compare", help="baseline vs + DiRe over several seeds; writes a CSV and Markdown table",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_experiment_options(cmp)
    cmp.add_argument("--seeds", default="0,1,2", help="seed s = synthesis seed s and student seed s")
    cmp.add_argument("--out", default="figures/cli/compare", help="table path without extension (.csv and .md)")
    sw = sub.add_parser("sweep", help="choose DiRe's weights (w, r_c, r_e) on a validation split held out of the "
                        "training set; writes the chosen weights for the profiles", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_experiment_options(sw)
    sw.add_argument("--grid", type=_key_value, action="append", default=[], metavar="AXIS=V1,V2,...",
                    help="values to try for weight, r_c or r_e (repeatable; default weight=0.03,0.1,0.3,1.0 "
                         "r_c=1.0 r_e=0.0,0.01,0.1)")
    sw.add_argument("--seeds", default="0", help="seeds per grid point")
    sw.add_argument("--validation-per-class", type=_positive(int), default=500,
                    help="training images per class held out for choosing (never the test split)")
    sw.add_argument("--validation-seed", type=int, default=0)
    sw.add_argument("--out", default="figures/cli/selected_weights.json", help="the chosen weights (JSON)")
    sw.add_argument("--table", default="figures/cli/sweep", help="table path without extension (.csv and .md)")
    rep = sub.add_parser("reproduce", help="run the paper notebooks headless (papermill) for a profile",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    rep.add_argument("--profile", default="quick", choices=["smoke", "quick", "paper"])
    rep.add_argument("--only", nargs="+", default=None, metavar="NOTEBOOK", help="e.g. 02_ablation")
    rep.add_argument("--device", default="cpu")
    return parser


def _add_experiment_options(c: argparse.ArgumentParser) -> None:
    c.add_argument("--dataset", default="digits", choices=sorted(DATASETS))
    c.add_argument("--method", default="sre2l", choices=sorted(METHODS))
    c.add_argument("--dire", default="off", choices=["on", "off"], help="add the DiRe regulariser")
    c.add_argument("--ipc", type=_positive(int), default=10, help="images per class")
    c.add_argument("--seed", type=int, default=0, help="synthesis seed")
    g = c.add_argument_group("synthesis")
    g.add_argument("--iterations", type=_positive(int), default=200)
    g.add_argument("--lr", type=float, default=0.25)
    g.add_argument("--ipc-per-unit", type=_positive(int), default=1, help="images of a class optimised together")
    g.add_argument("--classes-per-unit", type=_positive(int), default=None, help="classes per unit (default all)")
    g.add_argument("--init", default="noise", choices=["noise", "real"])
    g.add_argument("--method-arg", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="a method setting, e.g. r_bn=0.01 or jitter=4 (repeatable)")
    d = c.add_argument_group("DiRe")
    d.add_argument("--r-c", type=float, default=1.0)
    d.add_argument("--r-e", type=float, default=0.01)
    d.add_argument("--dire-weight", type=float, default=0.1)
    d.add_argument("--official", action="store_true", help="the release's diagonal arithmetic")
    d.add_argument("--terms", default=",".join(TERMS), help="comma-separated subset of cd,cdm,edm,logdet")
    d.add_argument("--logdet-eps", type=float, default=0.1, help="ridge ε of the log-det term")
    d.add_argument("--edm-coreset", type=_positive(int), default=None,
                   help="EDM against this many k-means centres per class (default: every real embedding)")
    t = c.add_argument_group("teacher, students, metrics")
    t.add_argument("--teacher", default="convnet_bn", choices=list_models())
    t.add_argument("--teacher-recipe", default="cpu", choices=sorted(TEACHER_RECIPES))
    t.add_argument("--teacher-set", default=None, choices=sorted(TEACHER_SETS),
                   help="teachers of G-VBSM / UFC after --teacher (default: the method's paper set)")
    t.add_argument("--bank-per-class", type=_positive(int), default=500)
    t.add_argument("--student", default="convnet", choices=list_models())
    t.add_argument("--student-recipe", default="cpu", choices=sorted(STUDENT_RECIPES))
    t.add_argument("--student-epochs", type=_positive(int), default=None)
    t.add_argument("--student-seeds", default="0,1,2", help="comma-separated seeds")
    t.add_argument("--student-arg", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="a student recipe setting, e.g. lr=0.001 or warmup_epochs=10 (repeatable; dire.train.Recipe)")
    t.add_argument("--metric-arch", default=None, choices=list_models(), help="independent evaluator (default: teacher)")
    o = c.add_argument_group("where")
    o.add_argument("--device", default="cpu")
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
    from dire.pipeline import Experiment

    terms = tuple(t for t in args.terms.split(",") if t)
    unknown = [t for t in terms if t not in ALL_TERMS]
    if unknown:
        raise ValueError(f"--terms: unknown {unknown}; expected a comma-separated subset of {','.join(ALL_TERMS)}")
    seeds = _seeds(args.student_seeds, "--student-seeds")
    synthesis = SynthesisConfig(ipc=args.ipc, iterations=args.iterations, lr=args.lr, ipc_per_unit=args.ipc_per_unit,
                                classes_per_unit=args.classes_per_unit, init=args.init, seed=args.seed)
    synthesis.validate(DATASETS[args.dataset].num_classes)
    dire = DiReConfig(enabled=args.dire == "on", r_c=args.r_c, r_e=args.r_e, weight=args.dire_weight,
                      official=args.official, terms=terms, logdet_eps=args.logdet_eps, edm_coreset=args.edm_coreset)
    return Experiment(dataset=args.dataset, method=args.method, method_kwargs=dict(args.method_arg), synthesis=synthesis,
                      dire=dire, teacher_arch=args.teacher, teacher_recipe=args.teacher_recipe,
                      teacher_set=args.teacher_set, bank_per_class=args.bank_per_class, student_arch=args.student, student_recipe=args.student_recipe,
                      student_epochs=args.student_epochs, student_overrides=dict(args.student_arg),
                      student_seeds=seeds, metric_arch=args.metric_arch)


def format_result(result: dict) -> str:
    acc, div = result["accuracy"], result["diversity"]
    cfg = result["config"]
    name = f"{cfg['method']}{' + DiRe' if cfg['dire']['enabled'] else ''}"
    lines = [
        f"{name} on {cfg['dataset']}, IPC {cfg['synthesis']['ipc']}",
        f"  teacher accuracy      {result['teacher_acc']:.2f}%   (teachers: {', '.join(result['teachers'])})",
        f"  student accuracy      final {acc['final']['mean']:.2f} ± {acc['final']['std']:.2f}%   "
        f"best {acc['best']['mean']:.2f} ± {acc['best']['std']:.2f}%   ({acc['final']['n']} seeds)",
        f"  diversity ({result['metric_network']}):",
        f"    Vendi {div['vendi']:.3f} (all classes {div['vendi_all']:.3f})   Coverage {div['coverage']:.3f} "
        f"(all {div['coverage_all']:.3f})   intra-class cosine {div['intra_class_cosine']:.4f}",
        f"    precision {div['precision']:.3f}   recall {div['recall']:.3f}   density {div['density']:.3f}",
        f"  synthesis {result['timing']['synthesis_s']:.1f} s ({result['timing']['synthesis_s_per_image'] * 1e3:.1f} ms/image)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    try:
        if args.command == "reproduce":
            from dire.reproduce import reproduce

            runs = reproduce(args.profile, only=args.only, device=args.device, log=print)
            failed = [r.name for r in runs if not r.ok]
            return 1 if failed else 0
        exp = experiment_from_args(args)
        where = dict(device=args.device, data_root=args.data_root, runs_root=args.runs_root, progress=not args.quiet,
                     download=args.download)
        if args.command == "condense":
            from dire.pipeline import run_experiment
            from dire.runs import write_json

            result = run_experiment(exp, log=log, **where)
            print(format_result(result))
            if args.json:
                write_json(args.json, result)
        elif args.command == "sweep":
            from dire.sweep import DEFAULT_GRID, select, sweep, sweep_markdown, write_selection
            from dire.tables import rows_to_csv
            from dire.runs import atomic_write_text

            grid = dict(DEFAULT_GRID)
            for axis, values in args.grid:
                grid[axis] = tuple(values) if isinstance(values, (tuple, list)) else (values,)
            rows = sweep(exp, grid=grid, seeds=_seeds(args.seeds, "--seeds"),
                         validation_per_class=args.validation_per_class, validation_seed=args.validation_seed,
                         log=log, **where)
            chosen = select(rows)
            write_selection(args.out, chosen, rows, base=exp, validation_per_class=args.validation_per_class,
                            validation_seed=args.validation_seed, command="dire " + " ".join(argv or sys.argv[1:]))
            atomic_write_text(f"{args.table}.csv", rows_to_csv(rows))
            table = sweep_markdown(rows)
            atomic_write_text(f"{args.table}.md", table)
            print(table)
            print(f"chosen: w {chosen['weight']:g}, r_c {chosen['r_c']:g}, r_e {chosen['r_e']:g} (validation accuracy "
                  f"{chosen['val_acc']:.2f}; baseline {chosen['baseline_val_acc']:.2f}) -> {args.out}")
        elif args.command == "compare":
            from dire.tables import compare, to_markdown, write_table

            rows = compare(exp, seeds=_seeds(args.seeds, "--seeds"), log=log, **where)
            csv_path, md_path = write_table(rows, args.out)
            print(to_markdown(rows))
            print(f"metrics in: {rows[0]['metric_network']}; teacher accuracy {rows[0]['teacher_acc']:.2f}%; "
                  f"tables: {csv_path}, {md_path}")
    except (ValueError, FileNotFoundError, TypeError) as err:
        parser.exit(2, f"dire: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
