"""Student steps for S seeds: S separate models against one vmapped stack of them, side by side (issue 15).

Issue 15 proposes training a student's seeds together as one batched model (``torch.func.stack_module_state`` +
``vmap``) if process parallelism cannot bring the quick profile under 90 minutes. This measures whether it would
pay here before any of it enters the pipeline. Both arms do the same work per step, as
``dire.evaluation.soft.train_student`` does it: each seed augments its own batch with its own generator (the
named recipe's crop, flip, mixup / CutMix), the teacher labels the augmented batch, the student takes one
optimiser step on the soft-label loss. The separate arm loops over S models and optimisers; the batched arm
stacks the S students' parameters, runs them under ``vmap`` (convolutions become grouped ones), labels the S
batches in one teacher call and steps one optimiser over the stacked parameters (AdamW and SGD act element by
element, so each seed's slice gets its own update). Before timing, one step of each arm from the same start is
compared: the per-seed parameters must agree to float tolerance, so the two arms are the same computation.

Arms alternate within each repeat; the median ms per step (all S seeds) and the ratio are printed. On CUDA each
arm's steps are synchronised before the clock stops.

    python benchmarks/batched_seeds.py [--seeds 5] [--steps 20] [--repeats 3] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch
from torch.func import functional_call, stack_module_state, vmap

from dire.data.augment import cutmix, mixup
from dire.nets.models import build_model
from dire.nets.train import augment_batch, get_recipe, make_optimizer, soft_label_loss


def students(arch: str, seeds: int, *, channels: int, size: int, classes: int, device) -> list[torch.nn.Module]:
    nets = []
    for seed in range(seeds):
        torch.manual_seed(seed)  # as train_student seeds each student
        nets.append(build_model(arch, num_classes=classes, in_channels=channels, image_size=size).to(device))
    return nets


def augmented(x: torch.Tensor, recipe, generator: torch.Generator) -> torch.Tensor:
    x = augment_batch(x, recipe, generator)
    if recipe.mixup_alpha > 0:
        x = mixup(x, recipe.mixup_alpha, generator)
    return cutmix(x, recipe.cutmix_alpha, generator) if recipe.cutmix_alpha > 0 else x


class Separate:
    def __init__(self, nets, teacher, recipe):
        self.nets, self.teacher, self.recipe = nets, teacher, recipe
        self.optimizers = [make_optimizer(net, recipe) for net in nets]

    def step(self, xs, ys, generators) -> None:
        for net, opt, x, y, g in zip(self.nets, self.optimizers, xs, ys, generators, strict=True):
            x = augmented(x, self.recipe, g)
            with torch.no_grad():
                soft = self.teacher(x)
            loss = soft_label_loss(net(x), soft, y, self.recipe)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def params(self, seed: int) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in self.nets[seed].parameters()])


class Batched:
    def __init__(self, nets, teacher, recipe):
        if any(True for _ in nets[0].buffers()):
            raise SystemExit(f"{type(nets[0]).__name__} has buffers (BatchNorm): vmap cannot update them in place")
        params, self.buffers = stack_module_state(nets)
        self.params = {k: v.detach().requires_grad_() for k, v in params.items()}
        self.base = copy.deepcopy(nets[0]).to("meta")
        self.teacher, self.recipe = teacher, recipe
        holder = torch.nn.Module()
        for i, p in enumerate(self.params.values()):
            holder.register_parameter(f"p{i}", torch.nn.Parameter(p))  # make_optimizer takes a module
        self.params = dict(zip(self.params, holder.parameters(), strict=True))
        self.optimizer = make_optimizer(holder, recipe)

    def step(self, xs, ys, generators) -> None:
        x = torch.stack([augmented(x, self.recipe, g) for x, g in zip(xs, generators, strict=True)])
        with torch.no_grad():
            soft = self.teacher(x.flatten(0, 1)).view(*x.shape[:2], -1)
        logits = vmap(lambda p, b, xi: functional_call(self.base, (p, b), (xi,)))(self.params, self.buffers, x)
        loss = sum(soft_label_loss(logits[s], soft[s], ys[s], self.recipe) for s in range(len(xs)))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def params_of(self, seed: int) -> torch.Tensor:
        return torch.cat([p.detach()[seed].flatten() for p in self.params.values()])


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="convnet_w32", help="student (no BatchNorm: vmap cannot update its buffers)")
    ap.add_argument("--teacher", default="convnet_bn_w32")
    ap.add_argument("--recipe", default="fashion-mnist", help="student recipe (dire.nets.train.STUDENT_RECIPES)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per arm and repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=28, help="image side (Fashion-MNIST: 28)")
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    recipe = get_recipe(args.recipe, student=True)
    shape = dict(channels=args.channels, size=args.size, classes=args.classes, device=device)
    torch.manual_seed(1234)
    teacher = build_model(args.teacher, num_classes=args.classes, in_channels=args.channels, image_size=args.size)
    teacher.to(device).eval()
    xs = torch.randn(args.seeds, recipe.batch_size, args.channels, args.size, args.size, device=device)
    ys = torch.randint(0, args.classes, (args.seeds, recipe.batch_size), device=device)

    def gens():
        return [torch.Generator().manual_seed(s) for s in range(args.seeds)]

    sep = Separate(students(args.arch, args.seeds, **shape), teacher, recipe)
    bat = Batched(students(args.arch, args.seeds, **shape), teacher, recipe)
    sep.step(xs, ys, gens())
    bat.step(xs, ys, gens())
    gap = max(float((sep.params(s) - bat.params_of(s)).abs().max()) for s in range(args.seeds))
    print(f"after one step from the same start, largest per-seed parameter difference: {gap:.2e}")
    if gap > 1e-4:
        raise SystemExit("the two arms disagree: they are not the same computation")

    times = {"separate": [], "batched (vmap)": []}
    for _ in range(args.repeats):
        for name, arm in (("separate", sep), ("batched (vmap)", bat)):
            g = gens()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                arm.step(xs, ys, g)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append((time.perf_counter() - t0) / args.steps * 1000)
    print(
        f"{args.seeds} seeds of {args.arch} (teacher {args.teacher}), recipe {args.recipe} "
        f"(batch {recipe.batch_size}), {args.size}x{args.size}x{args.channels}, {args.threads} threads, "
        f"torch {torch.__version__}, {device_name(device)}"
    )
    ms = {name: statistics.median(t) for name, t in times.items()}
    for name, value in ms.items():
        each = ", ".join(f"{t:.1f}" for t in times[name])
        print(f"  {name:15s} {value:8.1f} ms per step of all seeds (repeats: {each})")
    print(f"  batched / separate time: x{ms['batched (vmap)'] / ms['separate']:.2f} (below 1: batching pays)")


if __name__ == "__main__":
    main()
