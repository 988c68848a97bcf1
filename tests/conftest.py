import os

import pytest
import torch

# Under pytest-xdist each worker gets its share of the cores (at most 2 threads), and exports it so the notebook
# kernels and torchrun children it starts do not oversubscribe the machine either.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_threads = max(1, min(2, torch.get_num_threads()) // _workers)  # torch.get_num_threads() honours OMP_NUM_THREADS
if _workers > 1:
    os.environ["OMP_NUM_THREADS"] = str(_threads)
torch.set_num_threads(_threads)


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def digits_teacher(runs_root):
    """A ConvNet-BN teacher trained on digits with the CPU recipe (seconds), shared by the session."""
    from dire.nets.teacher import get_teacher

    return get_teacher("digits", "convnet_bn", recipe="cpu", seed=0, runs_root=runs_root, progress=False)


@pytest.fixture(scope="session")
def digits(digits_teacher):
    """(teacher, digits train set, the teacher's real bank of 100 per class)."""
    from dire.data import load_dataset
    from dire.nets.bank import real_embedding_bank

    teacher, _ = digits_teacher
    train = load_dataset("digits")
    return teacher, train, real_embedding_bank(teacher, train, per_class=100)
