"""tools.report on run folders the test writes: every number from its run, the paper's
beside it, the claims judged from the numbers."""

import json

import pytest
from absl import flags as absl_flags

from tfnode import paper
from tfnode.errors import TfnodeError


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def metrics(model, accuracy, **extra):
    return {"model": model, "dataset": "mnist", "model_options": {"width": 32},
            "clean_accuracy": accuracy, "mean_nfe_test": 26.5 if model == "node" else None,
            "num_params": 1234, "train_seconds": 90.0, "settings": {"epochs": 2},
            **extra}


def model_result(ode, clean, pgd, worst=None, masking=False):
    res = {"info": {"ode_blocks": [{"solver": "dopri5"}] if ode else [],
                    "trained": {"model": "node" if ode else "resnet"}},
           "clean_accuracy": clean,
           "attacks": {"pgd": {"cells": {k: {"robust_accuracy": v} for k, v in pgd.items()}}}}
    if worst:
        res["worst_case"] = {k: {"robust_accuracy": v} for k, v in worst.items()}
        res["verdict"] = {"masking_suspected": masking, "not_converged": []}
    return res


@pytest.fixture
def runs(tmp_path):
    write(tmp_path / "sm" / "node_mnist" / "1" / "metrics.json", metrics("node", 0.9885))
    write(tmp_path / "sm" / "resnet_mnist" / "1" / "metrics.json", metrics("resnet", 0.9913))
    # Today's export layout: metrics under assets.extra/.
    write(tmp_path / "sm" / "resnet_mnist_pgd_at" / "1" / "assets.extra" / "metrics.json",
          metrics("resnet", 0.97, defense="pgd_at"))
    write(tmp_path / "reports" / "pair" / "report.json", {
        "eps": [0.1, 0.3], "num_examples": 100, "dataset": "mnist", "split": "test",
        "batch_size": 50, "schedule": "fast", "audit": True,
        "models": {"node": model_result(True, 0.99, {"0.1": 0.2, "0.3": 0.0},
                                        worst={"0.1": 0.12, "0.3": 0.0}, masking=True),
                   "resnet": model_result(False, 0.99, {"0.1": 0.45, "0.3": 0.0},
                                          worst={"0.1": 0.44, "0.3": 0.0})}})
    write(tmp_path / "reports" / "sweep" / "sweep.json", {
        "config": {"model": "resnet", "dataset": "mnist", "eps": [0.1, 0.3],
                   "transfer_attack": "fgsm", "num_examples": 100},
        "source": {"model": "resnet", "options": {"num_blocks": 3}},
        "members": [{"step_size": h, "clean_accuracy": c,
                     "robust_accuracy": {"0.1": r1, "0.3": r3},
                     "report": f"{tmp_path}/reports/sweep/members/h_{h:g}/eval/report.json"}
                    for h, c, r1, r3 in ((1.0, 0.99, 0.60, 0.10), (1e-6, 0.98, 0.70, 0.05))]})
    return tmp_path


def test_the_page_names_each_run_and_puts_the_paper_beside(runs):
    gathered = paper.gather([str(runs / "sm" / "*" / "1"), str(runs / "reports" / "*")])
    assert len(gathered["training"]) == 3 and len(gathered["evaluations"]) == 1
    md = paper.document(gathered, output_path=str(runs / "docs" / "paper.md"))
    # The trained models, the paper's clean accuracy beside the undefended ones only.
    assert "| node | mnist | width=32 | - | 98.85 | 99.05 | 26.5 |" in md
    assert "| resnet | mnist | width=32 | - | 99.13 | 99.33 |" in md
    assert "| resnet | mnist | width=32 | pgd_at | 97.00 | - |" in md
    assert f"`{runs / 'sm' / 'node_mnist' / '1'}`" in md
    # The evaluation: its cells, the worst case, the audit's verdict.
    assert "| pgd | 20.00 | 0.00 |" in md and "| **worst case** | 12.00 | 0.00 |" in md
    assert "**gradient masking suspected**" in md
    # The sweep's rows.
    assert "| 1e-06 | 98.00 | 70.00 | 5.00 |" in md
    assert "Yan, Du, Tan & Feng" in md and "Huang, Yu, Zhang, Ma & Yao" in md


def test_claims_are_judged_from_the_numbers(runs):
    gathered = paper.gather([str(runs / "reports" / "*")])
    lines = "\n".join(paper.claims(gathered))
    # The ODE-Net is lower under PGD and in the worst case at eps 0.1, equal at 0.3.
    assert "node vs resnet: **contradicted**; ODE-Net higher at 0 cells, lower at 2" in lines
    assert "pgd eps 0.1: 20.00 vs 45.00" in lines
    # Smaller h: higher at eps 0.1, lower at eps 0.3.
    assert "h 1e-06 against h 1: **mixed**" in lines


def test_a_pattern_without_runs_is_a_one_line_error(runs):
    with pytest.raises(TfnodeError, match="names no run"):
        paper.gather([str(runs / "nowhere" / "*")])
    (runs / "bad").mkdir()
    (runs / "bad" / "report.json").write_text("{not json")
    with pytest.raises(TfnodeError, match="cannot read"):
        paper.gather([str(runs / "bad")])


def test_report_app_writes_the_page(runs, capsys):
    from tools import report as app

    fv = absl_flags.FLAGS
    fv.unparse_flags()
    out = runs / "docs" / "paper.md"
    fv(["report", f"--runs={runs / 'sm' / '*' / '1'},{runs / 'reports' / '*'}",
        f"--output={out}"])
    try:
        app.main(["report"])
    finally:
        fv.unparse_flags()
    assert "3 trained model(s), 1 evaluation(s), 1 sweep(s)" in capsys.readouterr().out
    assert out.read_text().startswith("# The paper's experiments, measured")


def test_plots_are_copied_beside_the_page_and_linked(runs):
    png = runs / "reports" / "pair" / "accuracy_vs_eps.png"
    png.write_bytes(b"\x89PNG not really")
    report = runs / "reports" / "pair" / "report.json"
    data = json.loads(report.read_text())
    data["paths"] = {"png": str(png)}
    report.write_text(json.dumps(data))
    out = runs / "docs" / "paper.md"
    paper.write([str(runs / "reports" / "pair")], str(out))
    link = out.read_text().split("![accuracy vs eps](")[1].split(")")[0]
    # The link resolves from the page to a copy inside docs/, not into reports/.
    copied = (out.parent / link).resolve()
    assert copied.parent == (runs / "docs" / "paper_figures").resolve()
    assert copied.read_bytes() == png.read_bytes()
    # Nothing else (no temporary) is left in the figures folder.
    assert [p.name for p in (runs / "docs" / "paper_figures").iterdir()] == [copied.name]
    # A page regenerated without that run drops its plot (and only plots).
    (runs / "docs" / "paper_figures" / "notes.txt").write_text("mine")
    paper.write([str(runs / "sm" / "*" / "1")], str(out))
    assert sorted(p.name for p in (runs / "docs" / "paper_figures").iterdir()) == ["notes.txt"]


def test_low_clean_accuracy_is_warned_and_the_summary_lists_the_worst_case(runs):
    write(runs / "sm" / "resnet_mnist_yopo" / "1" / "metrics.json",
          metrics("resnet", 0.77, defense="yopo"))
    gathered = paper.gather([str(runs / "sm" / "*" / "1"), str(runs / "reports" / "pair")])
    warnings = paper.clean_warnings(gathered)
    # 77% is more than 5 points below the best undefended 99.13%; 97% is not.
    assert len(warnings) == 1 and "resnet_mnist_yopo" in warnings[0], warnings
    md = paper.document(gathered, output_path=str(runs / "paper.md"))
    assert "## Warnings" in md
    assert "| node | - | 99.00 | 12.00 | 0.00 | pgd | 100 |" in md


def test_models_differing_only_in_h_are_judged_against_the_step_size_claim(runs):
    def one(name, options, worst, **trained):
        res = model_result(False, 0.99, {"0.1": worst}, worst={"0.1": worst})
        res["info"]["trained"] = {"model": "resnet", "model_options": options, **trained}
        write(runs / "family" / name / "report.json", {
            "eps": [0.1], "num_examples": 500, "dataset": "mnist", "split": "test",
            "batch_size": 100, "schedule": "fast", "models": {"resnet": res}})

    # h = 1 is the resnet's default: a run that did not pass it still has it.
    one("resnet_h1", {"width": 32}, 0.43)
    one("resnet_h0.1", {"width": 32, "step_size": 0.1}, 0.35)
    # Another width, or an adversarially trained model, is not the same family.
    one("wide_h0.01", {"width": 64, "step_size": 0.01}, 0.90)
    one("at_h0.01", {"width": 32, "step_size": 0.01}, 0.95, defense="pgd_at")
    # A report written before reports carried the defense: read from the model's metrics.
    model_dir = runs / "sm" / "trades_h0.01" / "1"
    write(model_dir / "metrics.json", metrics("resnet", 0.95, defense="trades"))
    one("old_trades", {"width": 32, "step_size": 0.01}, 0.95)
    old = runs / "family" / "old_trades" / "report.json"
    data = json.loads(old.read_text())
    data["models"]["resnet"]["info"]["path"] = str(model_dir)
    old.write_text(json.dumps(data))
    lines = "\n".join(paper.claims(paper.gather([str(runs / "family" / "*")])))
    assert ("resnet, h 0.1 (`" in lines and "against h 1 (`" in lines
            and "**contradicted** (eps 0.1: 35.00 vs 43.00)" in lines), lines
    assert "h 0.01" not in lines


def test_an_exports_row_names_its_version_folder_and_defense(runs):
    gathered = paper.gather([str(runs / "sm" / "*" / "1")])
    page = paper.document(gathered, output_path=str(runs / "docs" / "paper.md"))
    row = next(line for line in page.splitlines() if "| pgd_at |" in line)
    assert row.endswith(f"| `{runs / 'sm' / 'resnet_mnist_pgd_at' / '1'}` |")
