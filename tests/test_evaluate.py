"""tools.evaluate end to end on generated data and tiny models: report files, bad input."""

import json

import keras
import pytest
from absl import flags as absl_flags

from tfnode import export, models

STEPS = ["--pgd_steps=2", "--di2_steps=2", "--boundary_queries=30", "--square_queries=20",
         "--num_examples=12", "--batch_size=6"]


def run_app(argv):
    from tools import evaluate as app

    absl_flags.FLAGS.unparse_flags()
    absl_flags.FLAGS(["evaluate"] + argv)
    app.main(["evaluate"])


def tiny_cnn(input_shape=(28, 28, 1), seed=0, name="tiny"):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input(input_shape),
                             keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
                             keras.layers.Flatten(), keras.layers.Dense(10)], name=name)


@pytest.fixture
def saved(tmp_path):
    """An exported tiny CNN (SavedModel + model.keras) and a tiny ODE-Net .keras file."""
    path = export.export(tiny_cnn(), str(tmp_path / "savedmodels"), "tiny_mnist",
                         extra_files={"model.keras": tiny_cnn().save})
    keras.utils.set_random_seed(0)
    node = models.get_model("node", dataset="mnist", width=4)
    node_file = str(tmp_path / "node.keras")
    node.save(node_file)
    return {"cnn": path, "node": node_file, "tmp": tmp_path}


def test_evaluate_app_writes_the_three_report_files(mnist_dir, saved, capsys):
    out_dir = saved["tmp"] / "report"
    run_app(STEPS + [f"--data_dir={mnist_dir}", f"--model_path={saved['node']}",
                     f"--compare_model_path={saved['cnn']}",
                     f"--source_model_path={saved['cnn']}",
                     "--attacks=fgsm,pgd,di2_fgsm,square,boundary,transfer", "--eps=25.5,76.5",
                     "--eps_scale=255", f"--output_dir={out_dir}"])
    assert "report" in capsys.readouterr().out
    report = json.loads((out_dir / "report.json").read_text())
    assert (out_dir / "report.md").read_text().startswith("# Robustness report")
    assert (out_dir / "accuracy_vs_eps.png").read_bytes()[:4] == b"\x89PNG"
    assert report["eps"] == pytest.approx([0.1, 0.3]) and report["batch_size"] == 6
    assert set(report["models"]) == {"node", "tiny"}
    node = report["models"]["node"]
    assert node["info"]["ode_blocks"][0]["solver"] == "dopri5"
    # ODE models are evaluated with per-sample steps: no logit depends on the batch.
    assert node["info"]["per_sample_steps"] == "applied"
    assert node["info"]["ode_blocks"][0]["per_sample_steps"] is True
    assert node["checks"]["logits_max_diff_alone_vs_batch"] < 1e-4
    assert report["models"]["tiny"]["info"]["per_sample_steps"].startswith("not applicable")
    for name in ("fgsm", "pgd", "di2_fgsm", "square", "boundary", "transfer"):
        for eps in ("0.1", "0.3"):
            cell = node["attacks"][name][eps]
            assert cell["num_clean_correct"] == round(12 * node["clean_accuracy"])
            if name != "boundary" and cell["linf_median"] is not None:
                assert cell["linf_median"] <= float(eps) + 1e-6
    boundary = node["attacks"]["boundary"]["all"]
    assert 0 < boundary["queries_max"] <= 30
    assert "source_accuracy" in node["attacks"]["transfer"]["0.1"]
    assert "checks" in node and "logits_max_diff_alone_vs_batch" in node["checks"]
    # The SavedModel-only path (no model.keras) also evaluates.
    (saved["tmp"] / "savedmodels" / "tiny_mnist" / "1" / "model.keras").unlink()
    run_app(STEPS + [f"--data_dir={mnist_dir}", f"--model_path={saved['cnn']}",
                     "--attacks=fgsm", "--eps=0.1", f"--output_dir={out_dir}2"])
    report2 = json.loads((saved["tmp"] / "report2" / "report.json").read_text())
    cnn = report["models"]["tiny"]
    only = report2["models"]["tiny_mnist/1"]
    assert only["info"]["format"] == "saved_model"
    assert only["info"]["per_sample_steps"].startswith("not applied")
    assert only["clean_accuracy"] == cnn["clean_accuracy"]
    assert only["attacks"]["fgsm"]["0.1"]["robust_accuracy"] == pytest.approx(
        cnn["attacks"]["fgsm"]["0.1"]["robust_accuracy"], abs=1 / 12)


@pytest.mark.parametrize("args,message", [
    (["--attacks=fgsm,cw"], "unknown attack 'cw'"),
    (["--eps=300", "--eps_scale=255"], "outside [0, 1]"),
    (["--eps=-0.1"], "outside [0, 1]"),
    (["--attacks=transfer"], "needs --source_model_path"),
    (["--num_examples=0"], "--num_examples must be"),
])
def test_bad_evaluate_input_is_one_line_and_exit_2(mnist_dir, saved, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        run_app([f"--data_dir={mnist_dir}", f"--model_path={saved['cnn']}",
                 f"--output_dir={saved['tmp'] / 'bad'}"] + args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not (saved["tmp"] / "bad" / "report.json").exists()


def test_not_a_model_and_wrong_shape_are_one_line_errors(mnist_dir, saved, capsys):
    junk = saved["tmp"] / "junk.txt"
    junk.write_text("not a model")
    cifar_model = saved["tmp"] / "cifar.keras"
    tiny_cnn((32, 32, 3)).save(cifar_model)
    for path, message in ((junk, "is not a model"), (saved["tmp"], "is not a model"),
                          (cifar_model, "takes inputs of shape (32, 32, 3)")):
        with pytest.raises(SystemExit):
            run_app([f"--data_dir={mnist_dir}", f"--model_path={path}"])
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and "\n" not in err, err


def test_audit_adds_adaptive_attacks_checks_and_a_verdict(mnist_dir, saved):
    out_dir = saved["tmp"] / "audit"
    run_app(STEPS + [f"--data_dir={mnist_dir}", f"--model_path={saved['node']}",
                     f"--source_model_path={saved['cnn']}", "--attacks=fgsm,pgd",
                     "--eps=0.1", "--audit", "--audit_pgd_steps=3", "--audit_pgd_restarts=2",
                     f"--output_dir={out_dir}"])
    report = json.loads((out_dir / "report.json").read_text())
    node = report["models"]["node"]
    for name in ("pgd_adjoint", "pgd_tight", "pgd_rk4", "pgd_strong", "square", "boundary",
                 "transfer"):
        assert "0.1" in node["attacks"][name], name
    assert "1" in node["attacks"]["pgd_unbounded"]
    verdict = node["verdict"]
    # The verdict is the minimum over every attack at that eps (not the unbounded one).
    cells = {n: c["0.1"]["robust_accuracy"] for n, c in node["attacks"].items() if "0.1" in c}
    assert verdict["minimum"]["0.1"]["robust_accuracy"] == min(cells.values())
    assert verdict["minimum"]["0.1"]["attack"] in cells
    names = [c["check"] for c in verdict["checks"]]
    assert "accuracy goes to ~0 as eps grows" in names
    assert any(n.startswith("white-box >= black-box") for n in names)
    md = (out_dir / "report.md").read_text()
    assert "## Verdict: node" in md and ("PASS" in md or "FAIL" in md)
    # A model without ODE blocks gets no solver surrogates.
    from tfnode import audit

    assert "pgd_adjoint" not in audit.audit_attacks({"format": "keras", "ode_blocks": []},
                                                    has_source=False)


def test_tolerance_grid_and_trajectories_in_the_report(mnist_dir, saved):
    out_dir = saved["tmp"] / "grid"
    run_app(STEPS + [f"--data_dir={mnist_dir}", f"--model_path={saved['node']}",
                     f"--compare_model_path={saved['cnn']}", "--attacks=fgsm", "--eps=0.1,0.3",
                     "--tolerance_grid=1e-2,1e-4", "--trajectories", f"--output_dir={out_dir}"])
    report = json.loads((out_dir / "report.json").read_text())
    grid = report["models"]["node"]["tolerance_grid"]
    assert grid["tolerances"] == [1e-2, 1e-4] and set(grid["eps"]) == {"0.1", "0.3"}
    for rows in grid["eps"].values():
        assert len(rows) == 2 and all(len(r) == 2 and all(0 <= v <= 1 for v in r) for r in rows)
    # Robust accuracy cannot exceed the clean accuracy of the classifying tolerance.
    for rows in grid["eps"].values():
        for row in rows:
            assert all(v <= c for v, c in zip(row, grid["clean_accuracy"]))
    traj = report["models"]["node"]["trajectories"]
    for k in ("0.1", "0.3"):
        for kind in ("random", "pgd"):
            summary = traj[k][kind]
            assert summary["kind"] == "ode" and len(summary["positions"]) == 11
            assert summary["growth_median"][0] == 1.0
    # The CNN has neither an ODE block nor residual blocks: said, not faked.
    tiny = report["models"]["tiny"]
    assert "skipped" in tiny["trajectories"] and "skipped" in tiny["tolerance_grid"]
    md = (out_dir / "report.md").read_text()
    assert "attack-time vs inference-time tolerance" in md and "perturbation growth" in md
    assert (out_dir / "trajectories.png").stat().st_size > 0


def test_bad_tolerance_grid_is_a_one_line_error(mnist_dir, saved, capsys):
    for value, message in (("1e-3,abc", "--tolerance_grid must be"),
                           ("0,1e-3", "--tolerance_grid takes tolerances > 0")):
        with pytest.raises(SystemExit):
            run_app([f"--data_dir={mnist_dir}", f"--model_path={saved['node']}",
                     f"--tolerance_grid={value}"])
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and "\n" not in err, err
