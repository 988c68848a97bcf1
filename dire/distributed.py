"""Many processes launched by ``torchrun``: who this process is, a static share of a list, and a barrier.

``torchrun --nproc_per_node N -m dire condense ...`` starts N processes with ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` in their environment (over many machines too: ``--nnodes``, a c10d rendezvous). Independent
work (synthesis units, student seeds, the batches of a real-embedding bank) is split statically,
``items[rank::world]``, so each piece is computed once, by a rank known in advance, with no lock contention; the
per-item file locks of :mod:`dire.runs` stay as the safety net for reruns and for processes started
independently. A teacher every rank needs is trained by whichever rank takes its folder lock first while the
others wait on it, then all load it.

Outside torchrun (no ``WORLD_SIZE``, or 1) :func:`rank` is 0, :func:`world_size` 1, :func:`my_share` the
whole list and :func:`barrier` does nothing, and no process group is ever made: one process behaves exactly
as before this module existed.

The group is made once, on first need: ``gloo`` for a CPU run (its collectives are a flag and a barrier,
tensors small enough that the CPU backend serves CUDA runs too), ``nccl`` with ``cuda:LOCAL_RANK`` once
:func:`setup` is given a CUDA device. Its collectives wait up to :data:`TIMEOUT` (``DIRE_DIST_TIMEOUT_H``
hours): a rank may wait at a barrier while another finishes its last unit or student, which on ImageNet
takes hours. A rank that dies does not leave the others waiting: torchrun stops them all.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn as nn

T = TypeVar("T")
TIMEOUT = timedelta(hours=float(os.environ.get("DIRE_DIST_TIMEOUT_H", "24")))


def world_size() -> int:
    """How many processes torchrun started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's index among them, 0 to ``world_size() - 1`` (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's index on its machine: the GPU it uses."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def active() -> bool:
    """Whether work is shared with other processes (torchrun with more than one)."""
    return world_size() > 1


def is_main() -> bool:
    """Whether this process logs, prints and writes records (rank 0; the only process outside torchrun)."""
    return rank() == 0


def my_share(items: Sequence[T]) -> list[T]:
    """This rank's items, ``items[rank::world]``: the ranks' shares partition the list, each item in one share."""
    return list(items[rank() :: world_size()])


def setup(device: str | torch.device = "cpu") -> torch.device:
    """The device this rank works on, and the process group made for it (under torchrun): ``cuda`` (no index)
    becomes ``cuda:LOCAL_RANK``; anything else is returned unchanged. Call it before the first collective so
    that a CUDA run's group uses ``nccl``; without it the group is made with ``gloo`` on first need."""
    device = torch.device(device)
    if active() and device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    _init("nccl" if device.type == "cuda" else "gloo", device)
    return device


#: set by ``dire reproduce`` under torchrun for each notebook's kernel: the name under which that kernel's group
#: keeps its keys in torchrun's store (a kernel is a new process; a second group made in the store without its own
#: keys would find the first one's stale addresses and fail to connect)
GROUP_ENV = "DIRE_DIST_GROUP"


def _init(backend: str = "gloo", device: torch.device | None = None) -> None:
    """Make the process group once (torchrun's environment says where rank 0 listens)."""
    import torch.distributed as dist

    if not active() or dist.is_initialized():
        return
    kwargs = {"device_id": device} if backend == "nccl" else {}
    if name := os.environ.get(GROUP_ENV):
        kwargs.update(store=dist.PrefixStore(f"dire/{name}", _store()), rank=rank(), world_size=world_size())
    dist.init_process_group(backend, timeout=TIMEOUT, **kwargs)
    atexit.register(finish)


def _store():
    """The key-value store at ``MASTER_ADDR:MASTER_PORT``: torchrun's agent serves it
    (``TORCHELASTIC_USE_AGENT_STORE``); under another launcher rank 0 does."""
    import torch.distributed as dist

    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    return dist.TCPStore(host, port, world_size(), is_master=not agent and is_main(), timeout=TIMEOUT)


def _device() -> torch.device:
    """Where the group's collectives take their tensors: the rank's GPU under nccl, else the CPU."""
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def barrier() -> None:
    """Wait until every rank gets here (nothing outside torchrun)."""
    if not active():
        return
    import torch.distributed as dist

    _init()
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def all_true(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank (``flag`` itself outside torchrun): ranks that must take the same
    branch (e.g. skip a stage whose file exists) agree on it here, even if the file appeared in between."""
    if not active():
        return flag
    import torch.distributed as dist

    _init()
    value = torch.tensor([int(flag)], device=_device())
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


@contextlib.contextmanager
def main_decides(folder: str | Path, done: Callable[[], bool], *, together: bool = True) -> Iterator[bool]:
    """``with main_decides(folder, done) as finished:`` whether the work kept in ``folder`` is finished, one answer
    for all ranks: rank 0 holds the folder's lock for the whole block (other processes sharing ``runs/`` wait
    on it) and reads ``done()`` under it; the other ranks take its answer, so all skip the work or do it
    together. Outside torchrun, or with ``together=False`` (each rank works alone), every process takes the
    lock and reads ``done()`` itself."""
    from dire.runs import lock

    if not together or not active():
        with lock(folder):
            yield done()
        return
    with lock(folder) if is_main() else contextlib.nullcontext():
        yield all_true(done() if is_main() else True)  # the others say True: rank 0's view decides


def gather_to_main(item: T) -> list[T] | None:
    """Every rank's ``item`` (any picklable object: CPU tensors, lists), in rank order, on rank 0; None on the
    others. Outside torchrun: ``[item]``."""
    if not active():
        return [item]
    import torch.distributed as dist

    _init()
    out = [None] * world_size() if is_main() else None
    dist.gather_object(item, out, dst=0)
    return out


def finish() -> None:
    """Leave the process group (at exit, or earlier by hand); nothing outside torchrun."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# One student across the ranks (DistributedDataParallel): every rank draws and augments the same global batch,
# then trains on its own contiguous slice of it.


def batch_slice(n: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s part of a global batch of ``n`` split over ``world`` ranks: contiguous, the ranks' parts
    disjoint and covering the batch in order, their sizes differing by at most one (the first ``n % world``
    ranks take one more), as ``torch.tensor_split``."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1}")
    size, extra = divmod(n, world)
    start = rank * size + min(rank, extra)
    return slice(start, start + size + (rank < extra))


def my_part(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """This rank's slice of a global batch ``(x, y)`` and its loss weight ``world * slice / batch``: DDP
    averages the ranks' gradients, so the weighted per-slice mean losses average to the whole batch's mean
    loss, however the batch splits."""
    part = batch_slice(len(x), rank(), world_size())
    return x[part], y[part], world_size() * (part.stop - part.start) / len(x)


def check_batch_split(set_size: int, batch_size: int, *, world: int | None = None) -> None:
    """Every batch of a ``set_size`` set cut in batches of ``batch_size`` gives each of ``world`` ranks at least
    one image (a rank with none has no loss to take part in DDP's gradient average with): raises otherwise."""
    w = world_size() if world is None else world
    sizes = {min(batch_size, set_size), set_size % batch_size or batch_size}  # a full batch and the last one
    if min(sizes) < w:
        raise ValueError(
            f"a DDP student over {w} ranks needs at least {w} images in every batch; a set of {set_size} in "
            f"batches of {batch_size} has a batch of {min(sizes)}: use fewer ranks, another batch size, or "
            "ddp=False (the ranks then split the seeds)"
        )


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, over all ranks (``nn.SyncBatchNorm``
    for the CPU, where DDP refuses it): the sums are all-reduced with autograd, so the gradient is the one of
    the whole batch too. The running statistics follow the global ones, so they are the same on every rank. In
    eval mode, or without a process group, it is the ordinary BatchNorm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected a batch [N, C, ...]; got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist
        from torch.distributed.nn.functional import all_reduce

        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        dims, shape = [0, *range(2, x.dim())], (1, -1, *[1] * (x.dim() - 2))
        count = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype, device=x.device)
        total = all_reduce(torch.cat([x.sum(dims), count]))
        n = total[-1]
        mean = total[:-1] / n
        centred = x - mean.view(shape)
        var = all_reduce(centred.square().sum(dims)) / n  # two passes, as BatchNorm itself: no E[x²] - E[x]²
        if self.track_running_stats and self.running_mean is not None:
            self._update_running(mean.detach(), var.detach() * n / (n - 1).clamp(min=1))
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked += 1
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean, momentum)
        self.running_var.lerp_(unbiased_var, momentum)


def global_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with every BatchNorm layer computing global-batch statistics: ``nn.SyncBatchNorm`` on CUDA,
    :class:`GlobalBatchNorm` elsewhere. Layers are replaced in place; the new ones hold the very parameters
    and buffers of the old (an optimiser made before keeps working, state dict keys are unchanged)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine)
        out.track_running_stats = module.track_running_stats
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, global_batchnorm(child, device))
    return out


def ddp_model(model: nn.Module, device: str | torch.device = "cpu") -> nn.Module:
    """``model`` (its BatchNorm layers made global: :func:`global_batchnorm`) wrapped in
    ``DistributedDataParallel``, which starts it from rank 0's weights and averages gradients over the ranks;
    ``model`` itself outside torchrun. Forward passes go through the wrapper; ``model`` keeps the weights."""
    if not active():
        return model
    device = setup(device)
    model = global_batchnorm(model, device)
    ids = [device] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
