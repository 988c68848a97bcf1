"""The command line: clear errors for bad input; one digits experiment end to end."""

import json

import pytest

from dire.cli import main
from dire.report.tables import to_csv, to_markdown


@pytest.mark.parametrize(
    "argv,message",
    [
        (["condense", "--dataset", "mnist"], "invalid choice: 'mnist'"),
        (["condense", "--method", "foo"], "invalid choice: 'foo'"),
        (["condense", "--ipc", "0"], "expected an integer >= 1, got 0"),
        (["condense", "--terms", "cd,dpp"], "--terms: unknown ['dpp']"),
        (["condense", "--student-seeds", "a,b"], "--student-seeds: expected comma-separated integers"),
        (["condense", "--method-arg", "r_bn"], "expected KEY=VALUE"),
        (["condense", "--dataset", "cifar10", "--data-root", "/nonexistent"], "cifar-10-batches-py"),
    ],
)
def test_bad_input_is_a_clear_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--runs-root", "/tmp/dire-cli-never"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_condense_on_digits(runs_root, tmp_path, capsys):
    out = tmp_path / "result.json"
    main(
        [
            "condense",
            "--dataset",
            "digits",
            "--dire",
            "on",
            "--ipc",
            "2",
            "--ipc-per-unit",
            "2",
            "--iterations",
            "10",
            "--student-epochs",
            "20",
            "--student-seeds",
            "0",
            "--bank-per-class",
            "50",
            "--runs-root",
            str(runs_root),
            "--json",
            str(out),
            "--quiet",
        ]
    )
    printed = capsys.readouterr().out
    assert "sre2l + DiRe on digits, IPC 2" in printed and "Vendi" in printed and "Coverage" in printed
    result = json.loads(out.read_text())
    assert result["config"]["dire"]["enabled"] and result["accuracy"]["final"]["n"] == 1
    assert set(result["diversity"]) >= {"vendi", "coverage", "intra_class_cosine", "precision", "recall", "density"}
    assert 1.0 <= result["diversity"]["vendi"] <= 2.0  # 2 images per class: Vendi lies in [1, n]


def test_student_recipe_settings_reach_the_student_and_bad_ones_fail_early(runs_root, tmp_path):
    from dire.experiments.config import Experiment
    from dire.experiments.drivers import cross_architecture
    from dire.experiments.pipeline import run_experiment
    from dire.synthesis import SynthesisConfig

    out = tmp_path / "result.json"
    main(
        [
            "condense",
            "--dataset",
            "digits",
            "--ipc",
            "2",
            "--ipc-per-unit",
            "2",
            "--iterations",
            "3",
            "--student-epochs",
            "4",
            "--student-seeds",
            "0",
            "--bank-per-class",
            "50",
            "--student-arg",
            "lr=0.003",
            "--student-arg",
            "warmup_epochs=2",
            "--runs-root",
            str(runs_root),
            "--json",
            str(out),
            "--quiet",
        ]
    )
    recipe = json.loads(out.read_text())["student_recipe"]
    assert (recipe["lr"], recipe["warmup_epochs"], recipe["epochs"]) == (0.003, 2, 4)
    tiny = dict(dataset="digits", synthesis=SynthesisConfig(ipc=2, ipc_per_unit=2, iterations=3), bank_per_class=50)
    with pytest.raises(ValueError, match="unknown recipe setting"):  # before any synthesis: no synthetic folder
        run_experiment(
            Experiment(**tiny, student_overrides={"learnig_rate": 1.0}), runs_root=tmp_path / "r1", progress=False
        )
    assert not (tmp_path / "r1" / "synthetic").exists()
    with pytest.raises(ValueError, match="the .dc. protocol, which takes no recipe"):
        run_experiment(
            Experiment(**{**tiny, "method": "dm"}, student_overrides={"lr": 1e-3}),
            runs_root=tmp_path / "r2",
            progress=False,
        )
    with pytest.raises(ValueError, match=r"not among the students \['convnet'\]"):
        cross_architecture(Experiment(**tiny), students=["convnet"], student_overrides={"vit_tiny": {"lr": 1e-3}})


@pytest.mark.parametrize("method", ["cda", "dwa", "delt", "gvbsm", "ufc"])
def test_condense_each_family_method_on_digits(runs_root, tmp_path, capsys, method):
    """``dire condense --method <name>`` end to end; the multi-teacher methods train and use their teacher set, and
    their students learn from the ensemble (UFC with 1/(M+1) of the epochs, G-VBSM with MSE + CE)."""
    out = tmp_path / "result.json"
    main(
        [
            "condense",
            "--dataset",
            "digits",
            "--method",
            method,
            "--dire",
            "on",
            "--ipc",
            "3",
            "--ipc-per-unit",
            "3",
            "--iterations",
            "4",
            "--student-epochs",
            "9",
            "--student-seeds",
            "0",
            "--bank-per-class",
            "50",
            "--teacher-set",
            "cpu-convnet-shufflenet",
            "--runs-root",
            str(runs_root),
            "--json",
            str(out),
            "--quiet",
        ]
    )
    assert f"{method} + DiRe on digits, IPC 3" in capsys.readouterr().out
    result = json.loads(out.read_text())
    multi = method in ("gvbsm", "ufc")
    assert result["teachers"] == (["convnet_bn", "convnet_bn_w32", "shufflenet_v2"] if multi else ["convnet_bn"])
    assert result["student_recipe"]["epochs"] == (9 // 4 if method == "ufc" else 9)  # UFC: M = 3, 1/(M+1)
    assert result["student_recipe"]["loss"] == ("mse_ce" if method == "gvbsm" else "kl")
    assert 0 <= result["accuracy"]["final"]["mean"] <= 100


def test_tables_render():
    stat = {"mean": 1.0, "std": 0.5}
    row = {
        "method": "sre2l",
        "dire": True,
        "dataset": "digits",
        "ipc": 10,
        "seeds": 3,
        "teacher_acc": 98.0,
        **{
            k: stat
            for k in (
                "acc_final",
                "acc_best",
                "vendi",
                "coverage",
                "intra_class_cosine",
                "precision",
                "density",
                "synthesis_s_per_image",
            )
        },
    }
    md = to_markdown([row])
    assert "| sre2l + DiRe | digits | 10 | soft | 1.00 ± 0.50 |" in md and md.count("\n") == 3  # no protocol: soft
    assert to_csv([row]).splitlines()[1].startswith("sre2l,True,,digits,10,3,98.0,soft,1.0,0.5")
    dc = to_markdown([{**row, "method": "dm", "protocol": "dc"}])
    assert "| dm + DiRe | digits | 10 | dc | 1.00 ± 0.50 |" in dc
    variant = {**row, "variant": "log-det"}
    assert "| sre2l + DiRe (log-det) | digits |" in to_markdown([variant])
    assert to_csv([variant]).splitlines()[1].startswith("sre2l,True,log-det,digits,")
    one_seed = {**row, "seeds": 1, "acc_final": {"mean": 1.0, "std": 0.0, "n": 1}}
    assert "| sre2l + DiRe | digits | 10 | soft | 1.00 | 1.00 ± 0.50 |" in to_markdown([one_seed])  # no spread of 1
    assert to_csv([one_seed]).splitlines()[1].startswith("sre2l,True,,digits,10,1,98.0,soft,1.0,0.0,")


def test_cross_architecture_and_flat_tables():
    from dire.report.tables import cross_architecture_markdown, flat_rows, rows_to_csv

    def row(dire, student, acc):
        return {
            "method": "sre2l",
            "dire": dire,
            "student": student,
            "acc_final": {"mean": acc, "std": 1.0},
            "runs": [{"seed": 0}],
        }

    rows = [row(False, "convnet", 50.0), row(False, "vit_tiny", 40.0), row(True, "convnet", 55.0)]
    md = cross_architecture_markdown(rows).splitlines()
    assert md[0] == "| method | convnet | vit_tiny |"
    assert md[2] == "| sre2l | 50.00 ± 1.00 | 40.00 ± 1.00 |"
    assert md[3] == "| sre2l + DiRe | 55.00 ± 1.00 | – |"  # a missing cell is shown, not dropped
    flat = flat_rows(rows)
    assert flat[0] == {
        "method": "sre2l",
        "dire": False,
        "student": "convnet",
        "acc_final_mean": 50.0,
        "acc_final_std": 1.0,
    }
    assert rows_to_csv(rows).splitlines()[0] == "method,dire,student,acc_final_mean,acc_final_std"
    counted = [{**r, "acc_final": {**r["acc_final"], "n": 1}} for r in rows]  # run_seeds' rows carry n
    assert cross_architecture_markdown(counted).splitlines()[2] == "| sre2l | 50.00 | 40.00 |"
    assert rows_to_csv(counted) == rows_to_csv(rows)


def test_with_method_carries_shared_settings_and_applies_overrides():
    from dire.experiments.config import Experiment, with_method
    from dire.synthesis import SynthesisConfig

    base = Experiment(
        method="sre2l", method_kwargs={"r_bn": 1.0, "jitter": 4}, synthesis=SynthesisConfig(iterations=50)
    )
    dm = with_method(base, "dm", {"iterations": 7, "batch_real": 16, "protocol": "soft"})
    assert dm.method_kwargs == {"batch_real": 16}  # DM takes neither r_bn nor jitter
    assert dm.synthesis.iterations == 7 and dm.protocol == "soft" and base.synthesis.iterations == 50
    delt = with_method(base, "delt", {"jitter": 0, "round_iterations": 5})
    assert delt.method_kwargs == {"r_bn": 1.0, "jitter": 0, "round_iterations": 5}
    with pytest.raises(ValueError, match="unknown override 'rbn'"):
        with_method(base, "cda", {"rbn": 1})
