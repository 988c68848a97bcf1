"""Synthesis units per second with 1 and 2 processes under torchrun (gloo, CPU, digits), side by side.

The teacher and its real bank are made once in a temporary runs folder; then, alternating within each repeat,
``python -m torch.distributed.run --standalone --nproc_per_node P`` runs this script's worker on a fresh output
folder for P = 1 and P = 2. Each worker loads the teacher and bank, waits at a barrier, and times
``dire.synthesis.synthesize`` (its static share of the units, the barrier, rank 0's assembly): process start-up
and loading are left out. Every process uses one torch thread, so P processes use P cores; the ratio of units
per second is the speed-up, and the CPU seconds summed over the ranks show each unit is computed once (about
the same total for 1 and 2 processes). The median over repeats is reported.

    python benchmarks/scaling.py [--ipc 8] [--iterations 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
WORLD_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def prepare(runs_root: Path, *, bank_per_class: int) -> None:
    """The teacher and bank every worker then loads from the cache (not timed)."""
    from dire.data import load_dataset
    from dire.nets.bank import cached_bank
    from dire.nets.teacher import get_teacher

    teacher, record = get_teacher("digits", "convnet_bn", recipe="cpu", runs_root=runs_root, progress=False)
    cached_bank(teacher, record, load_dataset("digits"), per_class=bank_per_class, runs_root=runs_root)


def worker(args: argparse.Namespace) -> None:
    """One rank: synthesize the digits set into ``args.out`` and write this rank's wall and CPU seconds."""
    import dire.distributed as distributed
    from dire.data import load_dataset
    from dire.nets.bank import cached_bank
    from dire.nets.teacher import get_teacher
    from dire.synthesis import build_method, synthesize
    from dire.synthesis.base import Context, DiReConfig, SynthesisConfig

    torch.set_num_threads(1)
    train = load_dataset("digits")
    teacher, record = get_teacher("digits", "convnet_bn", recipe="cpu", runs_root=args.runs_root, progress=False)
    bank, _ = cached_bank(teacher, record, train, per_class=args.bank_per_class, runs_root=args.runs_root)
    config = SynthesisConfig(ipc=args.ipc, ipc_per_unit=1, iterations=args.iterations)
    ctx = Context(teacher=teacher, dataset=train, config=config, device=torch.device("cpu"), bank=bank)
    distributed.barrier()  # every rank has loaded: the clock starts together
    wall, cpu = time.perf_counter(), time.process_time()
    synthetic = synthesize(build_method("sre2l"), ctx, out_dir=args.out, dire=DiReConfig(enabled=True), progress=False)
    record = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "images": len(synthetic["labels"])}
    (Path(args.out) / f"timing_rank{distributed.rank()}.json").write_text(json.dumps(record))
    distributed.finish()


def launch(processes: int, out: Path, args: argparse.Namespace) -> dict:
    """One timed synthesis with ``processes`` ranks: units per second and the CPU seconds of all ranks."""
    env = {k: v for k, v in os.environ.items() if k not in WORLD_ENV}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    argv += [__file__, "--worker", "--out", str(out), "--runs-root", str(args.runs_root)]
    argv += ["--ipc", str(args.ipc), "--iterations", str(args.iterations), "--bank-per-class", str(args.bank_per_class)]
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun with {processes} processes failed:\n{done.stderr[-3000:]}")
    ranks = [json.loads((out / f"timing_rank{r}.json").read_text()) for r in range(processes)]
    units = len(list(out.glob("unit_*.pt")))
    wall = max(r["wall"] for r in ranks)
    return {"units_per_s": units / wall, "wall": wall, "cpu": sum(r["cpu"] for r in ranks), "units": units}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipc", type=int, default=8, help="images per class = units (one image slot per unit)")
    parser.add_argument("--iterations", type=int, default=200, help="synthesis steps per unit")
    parser.add_argument("--repeats", type=int, default=3, help="1- and 2-process runs, alternating")
    parser.add_argument("--bank-per-class", type=int, default=100, help="real embeddings per class for DiRe")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--runs-root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores (load average {load:.1f}), torch {torch.__version__}")
    print(
        f"setting: digits, sre2l + DiRe, {args.ipc} units of 10 images x {args.iterations} steps, "
        f"1 thread per process, gloo, median of {args.repeats}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        args.runs_root = Path(tmp) / "runs"
        prepare(args.runs_root, bank_per_class=args.bank_per_class)
        runs: dict[int, list[dict]] = {1: [], 2: []}
        for repeat in range(args.repeats):
            for processes in (1, 2):
                out = Path(tmp) / f"syn_{processes}_{repeat}"
                runs[processes].append(launch(processes, out, args))
                print(
                    f"  repeat {repeat} x{processes}: {runs[processes][-1]['units_per_s']:.3f} units/s "
                    f"({runs[processes][-1]['wall']:.1f} s wall, {runs[processes][-1]['cpu']:.1f} CPU s)"
                )
            same = torch.equal(
                torch.load(Path(tmp) / f"syn_1_{repeat}" / "synthetic.pt")["images"],
                torch.load(Path(tmp) / f"syn_2_{repeat}" / "synthetic.pt")["images"],
            )
            assert same, "the 1- and 2-process synthetic sets differ"
    med = {p: {k: statistics.median(r[k] for r in runs[p]) for k in ("units_per_s", "wall", "cpu")} for p in runs}
    for p in (1, 2):
        print(f"{p} process{'es' if p > 1 else '  '}: {med[p]['units_per_s']:.3f} units/s, {med[p]['cpu']:.1f} CPU s")
    print(
        f"ratio (2 / 1 processes): {med[2]['units_per_s'] / med[1]['units_per_s']:.2f}x units/s; "
        f"CPU seconds {med[2]['cpu'] / med[1]['cpu']:.2f}x; synthetic sets identical: yes"
    )


if __name__ == "__main__":
    main()
