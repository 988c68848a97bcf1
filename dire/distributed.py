"""Many processes launched by ``torchrun``: who this process is, a static share of a list, and a barrier.

``torchrun --nproc_per_node N -m dire condense ...`` starts N processes with ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` in their environment (over many machines too: ``--nnodes``, a c10d rendezvous). Independent
work (synthesis units, student seeds) is split statically, ``items[rank::world]``, so each piece is
computed once, by a rank known in advance, with no lock contention; the per-item file locks of
:mod:`dire.runs` stay as the safety net for reruns and for processes started independently. Pieces every rank
needs (a teacher, a bank) are computed by whichever rank takes their folder lock first while the others
wait on it, then all load them.

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
import os
from collections.abc import Sequence
from datetime import timedelta
from typing import TypeVar

import torch

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


def _init(backend: str = "gloo", device: torch.device | None = None) -> None:
    """Make the process group once (torchrun's environment says where rank 0 listens)."""
    import torch.distributed as dist

    if not active() or dist.is_initialized():
        return
    kwargs = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend, timeout=TIMEOUT, **kwargs)
    atexit.register(finish)


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


def finish() -> None:
    """Leave the process group (at exit, or earlier by hand); nothing outside torchrun."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
