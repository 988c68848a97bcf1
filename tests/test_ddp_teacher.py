"""A teacher trained across two ranks with DDP (``get_teacher(..., ddp=True)`` under torchrun) against the same
teacher from one plain process, the independent reference.

The runs are real: ``python -m torch.distributed.run --standalone --nproc_per_node 2`` (gloo on the CPU), one
thread per process, a ConvNet-BN on the digits training split with 2 epochs of the ``cpu`` recipe (batches of 128:
the last of 29 images, 15 and 14 per rank), so its BatchNorm layers run over the global batch
(:class:`dire.distributed.GlobalBatchNorm`). As for DDP students (tests/test_ddp_student.py) the two cannot be
bit-equal, so they are compared to tolerances: the loss of every step, the weights and the test accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from test_ddp_student import relative_distance
from test_distributed import launch

from dire.data import load_dataset
from dire.nets.models import build_model

# The child: every rank (or the plain process) asks for the teacher and saves what it got, with a log line per
# training epoch it ran
CHILD = r"""
import json, os, sys
import torch
torch.set_num_threads(1)
import dire.nets.teacher as teacher

spec = json.loads(sys.argv[1])
rank = os.environ.get("RANK", "-")
losses, cross_entropy = [], teacher.F.cross_entropy

def logged(logits, y):
    value = cross_entropy(logits, y)
    losses.append([len(y), float(value.detach())])
    return value

teacher.F.cross_entropy = logged
model, record = teacher.get_teacher("digits", "convnet_bn", recipe="cpu", seed=0, runs_root=spec["runs_root"],
                                    progress=False, ddp=True, epochs=spec["epochs"])  # fmt: skip
torch.save({"state": model.state_dict(), "record": record, "bn": type(model.body[1]).__name__, "losses": losses},
           f"{spec['out']}.{rank}.pt")  # fmt: skip
"""


EPOCHS = 2


def run(tmp_path: Path, name: str, *, ranks: int = 0) -> dict[str, dict]:
    """What each process got, by its RANK ("-" for the plain process): its teacher, record and per-step losses
    ``[slice size, loss]``."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    out = tmp_path / name
    spec = {"runs_root": str(tmp_path / "runs"), "out": str(out), "epochs": EPOCHS}
    proc = launch([str(script), json.dumps(spec)], ranks=ranks)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {p.name.split(".")[1]: torch.load(p) for p in tmp_path.glob(f"{name}.*.pt")}


def test_ddp_teacher_matches_the_one_process_teacher(tmp_path):
    ref = run(tmp_path, "one")["-"]
    two = run(tmp_path, "two", ranks=2)  # "ddp": 2 in its key: trained, not the plain process's teacher reused
    got = [two[r] for r in ("0", "1")]
    assert "ddp" not in ref["record"]["config"]  # outside torchrun the key is the one-process key
    assert all(g["record"]["config"]["ddp"] == 2 for g in got)
    assert got[0]["record"]["dir"] == got[1]["record"]["dir"] != ref["record"]["dir"]
    assert all(g["bn"] == "BatchNorm2d" for g in got)  # the saved teacher, in plain BatchNorm layers
    for key, value in got[0]["state"].items():  # both ranks hold the one teacher rank 0 saved
        assert torch.equal(value, got[1]["state"][key]), key
    # each rank trained on half of every global batch (128 = 64 + 64, the last 29 = 15 + 14); the whole batch's
    # loss, put together from the two halves, is the one process's: to float rounding at first (measured 5e-8
    # relative over the first 3 steps), then the rounding grows, as SGD at lr 0.05 amplifies it step by step
    # (measured: 1.6e-6 by the end of the first epoch, 6e-4 by the end of the second). Not a bug of the split:
    # the first steps agree to rounding, and the gap is the one float rounding starts (a one-process teacher at 2
    # threads instead of 1 already differs by 5e-7 in weights after one epoch)
    steps = len(ref["losses"])
    assert steps == 12 * EPOCHS and all(len(g["losses"]) == steps for g in got)
    assert [[g["losses"][i][0] for g in got] for i in (0, 11)] == [[64, 64], [15, 14]]
    whole = [
        sum(n * v for n, v in (g["losses"][i] for g in got)) / sum(g["losses"][i][0] for g in got) for i in range(steps)
    ]
    gaps = [abs(a - b) / a for (_, a), b in zip(ref["losses"], whole)]
    assert max(gaps[:3]) <= 1e-5 and max(gaps) <= 5e-3, gaps
    info = load_dataset("digits").info
    torch.manual_seed(0)  # get_teacher's start
    start = build_model("convnet_bn", num_classes=10, in_channels=info.channels, image_size=info.image_size)
    distance = relative_distance(ref["state"], got[0]["state"], start.state_dict())
    assert distance <= 0.05, distance  # measured 0.007
    acc_one, acc_two = ref["record"]["test_acc"], got[0]["record"]["test_acc"]
    assert acc_one > 70.0 and abs(acc_one - acc_two) <= 2.0, (acc_one, acc_two)  # 79.7 / 79.2; chance: 10 %
    # a second call finds the DDP teacher on disk: every rank loads it, none trains
    again = run(tmp_path, "again", ranks=2)
    assert all(
        again[r]["losses"] == [] and torch.equal(again[r]["state"]["head.weight"], got[0]["state"]["head.weight"])
        for r in ("0", "1")
    )
