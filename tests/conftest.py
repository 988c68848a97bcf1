import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


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
