"""tools.report on run folders the test writes: every number from its run, the paper's
beside it, the claims judged from the numbers."""

import functools
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
    assert "| node | mnist | width=32 | - | - | 98.85 [98.6, 99.0] | 99.05 | 26.5 |" in md
    assert "| resnet | mnist | width=32 | - | - | 99.13 [98.9, 99.3] | 99.33 |" in md
    assert "| resnet | mnist | width=32 | pgd_at | - | 97.00 [96.6, 97.3] | - |" in md
    assert f"`{runs / 'sm' / 'node_mnist' / '1'}`" in md
    # The evaluation: its cells, the worst case, the audit's verdict.
    assert "| pgd | 20.00 | 0.00 |" in md and "| **worst case** | 12.00 | 0.00 |" in md
    assert "**gradient masking suspected**" in md
    # The sweep's rows.
    assert "| 1e-06 | 98.00 | 70.00 | 5.00 |" in md
    assert "Yan, Du, Tan & Feng" in md and "Huang, Yu, Zhang, Ma & Yao" in md


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
    assert out.read_text().startswith("# The paper's claims, measured")


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


def test_a_report_moved_from_where_it_was_written_keeps_its_plot(runs):
    # A report evaluated in one folder and committed from another: its recorded path is
    # gone (or, worse, still exists on the machine that wrote it), so the page takes the
    # plot beside the report as given and names it by that folder.
    written = runs / "elsewhere" / "accuracy_vs_eps.png"
    written.parent.mkdir()
    written.write_bytes(b"\x89PNG where it was written")
    moved = runs / "reports" / "pair"
    (moved / "accuracy_vs_eps.png").write_bytes(b"\x89PNG committed")
    report = moved / "report.json"
    report.write_text(json.dumps({**json.loads(report.read_text()),
                                  "paths": {"png": str(written)}}))
    out = runs / "docs" / "paper.md"
    paper.write([str(moved)], str(out))
    link = out.read_text().split("![accuracy vs eps](")[1].split(")")[0]
    assert (out.parent / link).read_bytes() == b"\x89PNG committed"
    assert "elsewhere" not in link and "pair" in link


def test_low_clean_accuracy_is_warned(runs):
    write(runs / "sm" / "resnet_mnist_yopo" / "1" / "metrics.json",
          metrics("resnet", 0.77, defense="yopo"))
    gathered = paper.gather([str(runs / "sm" / "*" / "1"), str(runs / "reports" / "pair")])
    warnings = paper.clean_warnings(gathered)
    # 77% is more than 5 points below the best undefended 99.13%; 97% is not.
    assert len(warnings) == 1 and "resnet_mnist_yopo" in warnings[0], warnings
    md = paper.document(gathered, output_path=str(runs / "paper.md"))
    assert "## Warnings" in md


def test_an_exports_row_names_its_version_folder_and_defense(runs):
    gathered = paper.gather([str(runs / "sm" / "*" / "1")])
    page = paper.document(gathered, output_path=str(runs / "docs" / "paper.md"))
    row = next(line for line in page.splitlines() if "| pgd_at |" in line)
    assert row.endswith(f"| `{runs / 'sm' / 'resnet_mnist_pgd_at' / '1'}` |")


def masked_result(ode, robust_by_eps, *, step_size=None, n=None):
    """A model result with real per-example masks: ``robust_by_eps`` maps an eps key to
    the indices robust under the run's one attack (PGD) there; all examples clean-correct."""
    import numpy as np

    from tfnode.evaluation import outcomes

    n = n or 200
    cells = {}
    for key, robust in robust_by_eps.items():
        mask = np.zeros(n, bool)
        mask[list(robust)] = True
        cells[key] = {"robust": outcomes.encode(mask), "robust_accuracy": float(mask.mean())}
    res = {"info": {"ode_blocks": [{"solver": "dopri5"}] if ode else [],
                    "path": f"m/{'node' if ode else 'resnet'}", "fingerprint": "0123abcd4567",
                    "trained": {"model": "node" if ode else "resnet",
                                "model_options": {} if step_size is None
                                else {"step_size": step_size}}},
           "clean_accuracy": 1.0, "clean_correct": outcomes.encode(np.ones(n, bool)),
           "attacks": {"pgd": {"meta": {"kind": "white-box"}, "cells": cells}}}
    res["worst_case"] = outcomes.worst_case(res, list(robust_by_eps))
    return res


def pair_run(root, name, a, b, n=200, labels=("node", "resnet")):
    return write(root / name / "report.json", {
        "eps": [float(k) for k in a["worst_case"]], "num_examples": n, "dataset": "mnist", "split": "test",
        "batch_size": 100, "schedule": "fast", "models": {labels[0]: a, labels[1]: b}})


def verdict_of(root, key):
    judged = {j["claim"].key: j for j in paper.judge(paper.gather([str(root / "*")]))}
    return judged[key]


def test_a_claim_is_judged_by_mcnemar_holm_and_the_seeds_sign(tmp_path):
    """eps 0.1: the ResNet alone holds 40 images, the ODE-Net alone none (p ~ 2^-39):
    contradicted once the seed runs agree; eps 0.2: the same images robust under both:
    no difference; eps 0.3: 6 discordant pairs one way, p = 2/64 = 0.031 alone, but
    0.031 x 2 = 0.0625 after Holm over the two cells with a p below 1: no difference."""
    node = masked_result(True, {"0.1": range(20), "0.2": range(5), "0.3": []})
    resnet = masked_result(False, {"0.1": range(60), "0.2": range(5), "0.3": range(6)})
    pair_run(tmp_path, "mnist_gradient", node, resnet)
    judged = verdict_of(tmp_path, "natural_robustness")
    assert judged["missing"] == ["mnist_seed1", "mnist_seed2"]
    (run,) = judged["runs"]
    cells = {c["eps"]: c for c in run["cells"]}
    assert (cells["0.1"]["test"]["a_only"], cells["0.1"]["test"]["b_only"]) == (0, 40)
    assert cells["0.1"]["a"]["k"] == 20 and cells["0.1"]["b"]["n"] == 200
    assert cells["0.1"]["verdict"] == "contradicted"
    assert cells["0.2"]["verdict"] == "no difference measurable at n = 200"
    assert cells["0.3"]["test"]["p_value"] == pytest.approx(2 / 64)
    assert cells["0.3"]["p_holm"] == pytest.approx(2 * 2 / 64)  # second smallest of three
    assert cells["0.3"]["verdict"] == "no difference measurable at n = 200"
    assert run["verdict"] == "contradicted" and run["a_ref"] == "m/node @0123abcd4567"

    # A seed run whose ODE-Net is the more robust one at eps 0.1: the seeds disagree.
    pair_run(tmp_path, "mnist_seed1", masked_result(True, {"0.1": range(30)}),
             masked_result(False, {"0.1": range(10)}))
    pair_run(tmp_path, "mnist_seed2", masked_result(True, {"0.1": range(5)}),
             masked_result(False, {"0.1": range(50)}))
    (run,) = verdict_of(tmp_path, "natural_robustness")["runs"]
    cells = {c["eps"]: c for c in run["cells"]}
    assert cells["0.1"]["seeds"] == pytest.approx([0.1, -0.225])
    assert cells["0.1"]["verdict"] == "seeds disagree" and run["verdict"] == "seeds disagree"


def test_the_step_size_claim_pairs_the_smallest_h_with_the_largest(tmp_path):
    small = masked_result(False, {"0.1": range(80)}, step_size=0.1)
    large = masked_result(False, {"0.1": range(30)}, step_size=1.0)
    pair_run(tmp_path, "mnist_steps_heun", large, small, labels=("heun", "heun'"))
    (run,) = verdict_of(tmp_path, "step_size_theory")["runs"]
    assert (run["a"], run["b"]) == ("heun'", "heun")  # a: the smaller h
    assert run["cells"][0]["verdict"] == "supported"
    # Not declared as a seed-checked family: the page says the spread is not measured.
    md = paper.document(paper.gather([str(tmp_path / "*")]), output_path=str(tmp_path / "p.md"))
    assert "**supported** (one training seed: the seed spread is not measured)" in md
    assert "| 0.1 | 40.00 [33.5, 46.9] | 15.00 [10.7, 20.6] | 50 | 0 |" in md
    assert "Not judged here: the paper's comparison is PreAct-ResNet18 on CIFAR-10" in md


def test_two_attacks_on_the_ode_model_and_survivor_cells_are_not_judged_as_own(tmp_path):
    """The adjoint finding compares pgd_adjoint with pgd on the ODE model; an attack that
    ran on other attacks' survivors (fast schedule) has no cells of its own to judge."""
    import numpy as np

    from tfnode.evaluation import outcomes

    node = masked_result(True, {"0.1": range(10)})
    mask = np.zeros(200, bool)
    mask[:50] = True
    node["attacks"]["pgd_adjoint"] = {"meta": {"kind": "white-box", "crafted_on": "surrogate"},
                                      "cells": {"0.1": {"robust": outcomes.encode(mask)}}}
    pair_run(tmp_path, "mnist_adjoint", node, masked_result(False, {"0.1": range(60)}))
    (run,) = verdict_of(tmp_path, "adjoint_masking")["runs"]
    assert (run["a"], run["b"]) == ("node pgd_adjoint", "node pgd")
    assert run["cells"][0]["test"]["a_only"] == 40 and run["verdict"] == "supported"
    node["attacks"]["pgd"]["meta"]["survivors_of"] = ["fgsm"]
    assert paper.verdicts.robust_mask(node, "pgd", "0.1") is None


@pytest.mark.parametrize("page", ["paper", "robust"])
def test_a_fresh_clone_regenerates_the_results_pages_with_no_diff(tmp_path, monkeypatch, page):
    """docs/paper.md and docs/robust_results.md are what `python -m tools.report
    --flagfile=flags/<page>.cfg` writes from the models and reports committed under
    evidence/: nothing on them is typed in."""
    import os

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.chdir(repo)
    flags_file = {}
    for line in open(os.path.join("flags", f"{page}.cfg")):
        if line.startswith("--"):
            name, value = line.strip()[2:].split("=", 1)
            flags_file[name] = value
    name = os.path.basename(flags_file["output"])
    out = tmp_path / "docs" / name
    paper.write(flags_file["runs"].split(","), str(out),
                command=f"python -m tools.report --flagfile=flags/{page}.cfg")
    committed = open(flags_file["output"]).read()
    assert out.read_text() == committed, (
        f"{flags_file['output']} differs from what its runs give: run "
        f"python -m tools.report --flagfile=flags/{page}.cfg and commit the result")
    figures = tmp_path / "docs" / (os.path.splitext(name)[0] + "_figures")
    for png in figures.iterdir() if figures.is_dir() else []:
        assert png.read_bytes() == open(os.path.join("docs", figures.name, png.name),
                                        "rb").read()


def test_the_four_attacks_are_judged_together_on_the_images_both_runs_attacked(tmp_path):
    """Gradient run on 200 images, Boundary run on the first 100: an image is robust in
    the joint run only where both runs leave it robust, and only the first 100 count.
    Node: PGD leaves 0..59, Boundary 0..9 -> 10 of 100; ResNet: PGD 0..79, Boundary
    0..49 -> 50 of 100; every discordant pair goes the ResNet's way (40, p = 2^-39)."""
    import numpy as np

    from tfnode.evaluation import outcomes

    pair_run(tmp_path, "mnist_gradient", masked_result(True, {"0.1": range(60)}),
             masked_result(False, {"0.1": range(80)}))
    node_b = masked_result(True, {"0.1": range(10)}, n=100)
    resnet_b = masked_result(False, {"0.1": range(50)}, n=100)
    for res in (node_b, resnet_b):
        res["attacks"]["boundary"] = res["attacks"].pop("pgd")
    pair_run(tmp_path, "mnist_boundary", node_b, resnet_b, n=100)
    judged = verdict_of(tmp_path, "natural_robustness_all_attacks")
    (run,) = judged["runs"]
    assert judged["missing"] == ["mnist_seed1", "mnist_seed2"]
    assert run["name"] == "mnist_gradient+mnist_boundary" and run["n"] == 100
    assert run["attacks"] == ["pgd", "boundary"]
    (cell,) = run["cells"]
    assert (cell["a"]["k"], cell["b"]["k"], cell["a"]["n"]) == (10, 50, 100)
    assert (cell["test"]["a_only"], cell["test"]["b_only"]) == (0, 40)
    assert cell["verdict"] == "contradicted"
    # Joined by the models' paths: a Boundary run on another model is not joined.
    report = json.loads((tmp_path / "mnist_boundary" / "report.json").read_text())
    report["models"]["node"]["info"]["path"] = "m/other"
    write(tmp_path / "mnist_boundary" / "report.json", report)
    judged = verdict_of(tmp_path, "natural_robustness_all_attacks")
    assert judged["runs"] == [] and judged["unjoined"] == ["mnist_gradient+mnist_boundary"]
    md = paper.document(paper.gather([str(tmp_path / "*")]), output_path=str(tmp_path / "p.md"))
    assert ("`mnist_gradient+mnist_boundary` not judged: the runs do not hold the same "
            "models on the same dataset split") in md
    assert outcomes.decode(report["models"]["resnet"]["clean_correct"]).all()


def test_boundary_distances_get_a_verdict_from_the_paired_wilcoxon(tmp_path):
    """The ResNet's adversarials are twice as far on each of 12 images (both found one):
    every paired difference has the ODE-Net's sign, p = 2 / 2^12 (exact): contradicted."""
    import numpy as np

    from tfnode.evaluation import arrays as arrays_lib

    node = masked_result(True, {"0.1": []}, n=12)
    resnet = masked_result(False, {"0.1": []}, n=12)
    for res in (node, resnet):
        res["attacks"]["boundary"] = res["attacks"].pop("pgd")
    pair_run(tmp_path, "mnist_boundary", node, resnet, n=12)
    l2 = np.linspace(0.5, 2.0, 12)
    found = np.ones(12, bool)
    arrays_lib.save(str(tmp_path / "mnist_boundary" / arrays_lib.FILE), {
        "node": {("boundary", "summary"): {"found": found, "l2": l2}},
        "resnet": {("boundary", "summary"): {"found": found, "l2": 2 * l2}}})
    (run,) = verdict_of(tmp_path, "natural_robustness_boundary")["runs"]
    d = run["distances"]
    assert d["n"] == 12 and d["p_value"] == pytest.approx(2 / 2 ** 12)
    assert d["verdict"] == "contradicted"
    md = paper.document(paper.gather([str(tmp_path / "*")]), output_path=str(tmp_path / "p.md"))
    assert "Verdict on the distances (larger is more robust): **contradicted**." in md


def sweep_member(root, h, clean, robust_by_eps, n=200):
    """A sweep member's evaluation report: ``clean`` images clean-correct (the first
    ones), ``robust_by_eps`` under the transfer attack."""
    import numpy as np

    from tfnode.evaluation import outcomes

    res = masked_result(False, robust_by_eps, step_size=h, n=n)
    res["attacks"]["transfer"] = res["attacks"].pop("pgd")
    res["clean_correct"] = outcomes.encode(np.arange(n) < clean)
    res["info"]["path"] = f"sweep/h_{h:g}"
    write(root / "members" / f"h_{h:g}" / "eval" / "report.json",
          {"eps": [0.1, 0.3, 0.5], "num_examples": n, "dataset": "mnist", "split": "test",
           "models": {"resnet": res}})
    return {"name": f"h_{h:g}", "step_size": h, "clean_accuracy": clean / n,
            "robust_accuracy": {k: len(v) / n for k, v in robust_by_eps.items()},
            "report": str(root / "members" / f"h_{h:g}" / "eval" / "report.json")}


def test_the_sweep_is_held_against_sec_4_1_member_by_member(tmp_path):
    """h = 0.1 equals h = 1 everywhere; h = 1e-6 loses 70 / 30 / 0 robust images and 50
    clean ones, with no image going the other way (p = 2^-69, 2^-29, 2^-49): no gain in
    robustness (supported), and the smallest h trains worse (supported). Then h = 0.1
    gains 60 images at eps 0.1 (p = 2^-59): the no-gain claim is contradicted."""
    root = tmp_path / "mnist_resnet_step_sizes"
    same = {"0.1": range(100), "0.3": range(50), "0.5": range(10)}

    def write_sweep(h01):
        members = [sweep_member(root, 1.0, 200, same), sweep_member(root, 0.1, 200, h01),
                   sweep_member(root, 1e-6, 150, {"0.1": range(30), "0.3": range(20),
                                                  "0.5": range(10)})]
        write(root / "sweep.json", {
            "config": {"model": "resnet", "dataset": "mnist", "eps": [0.1, 0.3, 0.5],
                       "transfer_attack": "fgsm", "num_examples": 200},
            "source": {"model": "resnet", "options": {"num_blocks": 3}}, "members": members})

    write_sweep(same)
    judged = verdict_of(tmp_path, "step_size_experiment")
    assert judged["missing"] == []
    (run,) = judged["runs"]
    assert run["n"] == 200 and run["b_ref"] == "sweep/h_1 @0123abcd4567"
    cells = {(c["h"], c["eps"]): c for c in run["cells"]}
    assert len(cells) == 6
    assert cells[(0.1, "0.1")]["verdict"] == "no difference measurable at n = 200"
    assert (cells[(1e-6, "0.1")]["test"]["b_only"], cells[(1e-6, "0.3")]["test"]["b_only"]) == (
        70, 30)
    assert cells[(1e-6, "0.1")]["verdict"] == "less than at h = 1"
    assert cells[(1e-6, "0.5")]["verdict"] == "no difference measurable at n = 200"
    assert [c["test"]["b_only"] for c in run["clean"]] == [0, 50]
    assert run["robustness"] == "supported" and run["training"] == "supported"
    md = paper.document(paper.gather([str(root)]), output_path=str(tmp_path / "p.md"))
    assert "| 1e-06 | 0.1 | 15.00 [10.7, 20.6] | 50.00 [43.1, 56.9] | 0 | 70 |" in md
    assert ("no obvious gain in robustness: **supported**; a very small h trains badly "
            "(the smallest h's clean accuracy against h = 1's): **supported**") in md

    write_sweep({"0.1": range(160), "0.3": range(50), "0.5": range(10)})
    (run,) = verdict_of(tmp_path, "step_size_experiment")["runs"]
    assert run["robustness"] == "contradicted"


def test_the_page_leaves_the_gathered_runs_as_read(runs, tmp_path):
    """The page names each model by the fingerprint of its file; the runs it was given
    keep what they recorded."""
    import copy

    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.save(str(tmp_path / "m.keras"))
    gathered = paper.gather([str(runs / "reports" / "pair")])
    for res in gathered["evaluations"][0]["models"].values():
        res["info"] = {**(res.get("info") or {}), "path": str(tmp_path / "m.keras"),
                       "fingerprint": "recorded"}
    before = copy.deepcopy(gathered)
    md = paper.document(gathered, output_path=str(runs / "p.md"))
    assert gathered == before
    assert "@recorded" not in md and f"`{tmp_path / 'm.keras'}` @" in md


def test_the_seed_spread_stands_beside_the_verdict(tmp_path):
    """Seed 0's run on 200 images is cut to the seed runs' first 100: the node keeps
    0..19 of them robust (20 of 100), the ResNet 0..59 (60); seed 1: 30 vs 10; seed 2:
    5 vs 50. Clean accuracy comes from each model's metrics.json."""
    runs_dir = tmp_path / "runs"
    for seed, (node_r, resnet_r, n) in enumerate(((range(20), range(60), 200),
                                                   (range(30), range(10), 100),
                                                   (range(5), range(50), 100))):
        node, resnet = (masked_result(ode, {"0.1": r}, n=n)
                        for ode, r in ((True, node_r), (False, resnet_r)))
        for res, name in ((node, "node"), (resnet, "resnet")):
            path = tmp_path / "models" / f"{name}_seed{seed}"
            res["info"]["path"] = str(path)
            write(path / "metrics.json",
                  metrics(name, 0.99 - seed / 1000, settings={"epochs": 4, "seed": seed}))
        pair_run(runs_dir, "mnist_gradient" if seed == 0 else f"mnist_seed{seed}",
                 node, resnet, n=n)
    gathered = paper.gather([str(runs_dir / "*"), str(tmp_path / "models" / "*")])
    md = paper.document(gathered, output_path=str(tmp_path / "p.md"))
    assert "robust accuracy (%) [95% Wilson interval] at eps 0.1 on the first 100 images" in md
    assert ("| `mnist_gradient` | 0 | 99.00 | 99.00 | 20.00 [13.3, 28.9] | 60.00 [50.2, 69.1] "
            "| -40.0 |") in md
    assert "| `mnist_seed1` | 1 | 98.90 | 98.90 | 30.00 [21.9, 39.6] | 10.00 [5.5, 17.4] | +20.0 |" in md
    assert "| `mnist_seed2` | 2 | 98.80 | 98.80 |" in md


def test_the_robust_page_pairs_each_recipes_ode_net_with_its_resnet(tmp_path):
    """Two fast-AT rows evaluated alone (each report holds one model), a third row not
    evaluated yet. Worst case at eps 0.3: the ResNet alone holds 40 images (p ~ 2^-39,
    Holm keeps it far below 0.05): the ResNet is more robust; certified at 0.3: 2
    discordant images (p = 0.5): no difference measurable. The page is the robust page:
    no claims section."""
    import numpy as np

    from tfnode.evaluation import outcomes
    from tfnode.paper import robust

    def row(name, model, **extra):
        folder = tmp_path / "robust" / name / "1"
        write(folder / "assets.extra" / "metrics.json", metrics(model, 0.98, **extra))
        return str(folder)

    fast = {"defense": "fgsm_rs", "defense_options": {"eps": 0.3}}
    paths = {"node": row("node_fast", "node", **fast),
             "resnet": row("resnet_fast", "resnet", fingerprint="f00d", **fast)}
    row("resnet_pgd", "resnet", defense="pgd_at", defense_options={"eps": 0.1})
    # The same defense and eps with another option: a recipe of its own, never paired.
    row("resnet_fast2", "resnet", defense="fgsm_rs",
        defense_options={"eps": 0.3, "step_ratio": 1.0})
    certified = {"node": range(10), "resnet": range(12)}
    for label, robust_at in (("node", range(20)), ("resnet", range(60))):
        res = masked_result(label == "node", {"0.3": robust_at})
        # The ODE-Net's report names its folder; the ResNet's a copy elsewhere, found by
        # the fingerprint of its weights.
        res["info"]["path"] = paths[label] if label == "node" else "/elsewhere/1"
        res["info"]["fingerprint"] = "f00d" if label == "resnet" else "beef"
        mask = np.zeros(200, bool)
        mask[list(certified[label])] = True
        res["certified"] = {"0.3": {"certified": outcomes.encode(mask),
                                    "certified_accuracy": float(mask.mean()), "ci95": None}}
        if label == "node":  # clean-wrong on 10 images the ResNet gets right
            clean = np.ones(200, bool)
            clean[190:] = False
            res["clean_correct"] = outcomes.encode(clean)
        write(tmp_path / "reports" / label / "report.json", {
            "eps": [0.3], "num_examples": 200, "dataset": "mnist", "split": "test",
            "batch_size": 100, "schedule": "fast", "audit": True, "models": {label: res}})
    gathered = paper.gather([str(tmp_path / "robust" / "*" / "1"),
                             str(tmp_path / "reports" / "*")])
    table = robust.rows(gathered)
    assert [(r["recipe"], r["ode"], r["result"] is not None) for r in table] == [
        ("fgsm_rs, eps 0.3", True, True), ("fgsm_rs, eps 0.3", False, True),
        ("fgsm_rs, eps 0.3", False, False), ("pgd_at, eps 0.1", False, False)]
    (pair,) = robust.pairs(table)
    cells = {(c["kind"], c["eps"]): c for c in pair["cells"]}
    worst, cert = cells[("worst case", "0.3")], cells[("certified", "0.3")]
    # Both reports are over the whole 200 images: their clean predictions are paired
    # too (p = 2 * 2^-10, Holm's second smallest of three: times 2).
    clean = cells[("clean", "-")]
    assert (clean["test"]["a_only"], clean["test"]["b_only"]) == (0, 10)
    assert clean["p_holm"] == pytest.approx(2 * 2 * 0.5 ** 10)
    assert clean["verdict"] == "resnet more accurate"
    assert (worst["test"]["a_only"], worst["test"]["b_only"]) == (0, 40)
    assert worst["verdict"] == "resnet more robust"
    assert (cert["test"]["a_only"], cert["test"]["b_only"]) == (0, 2)
    assert cert["test"]["p_value"] == pytest.approx(0.5)
    assert cert["p_holm"] == pytest.approx(0.5)  # Holm: the largest of three p times 1
    assert worst["p_holm"] == pytest.approx(3 * worst["test"]["p_value"])
    assert cert["verdict"] == "no difference measurable at n = 200"
    page = paper.document(gathered, output_path=str(tmp_path / "robust.md"))
    assert page.startswith("# Robust ODE-Nets against ResNets, measured")
    assert "## The claims" not in page and "## The robust comparison" in page
    assert "no audited evaluation yet" in page and "resnet more robust" in page
    # Each row: the worst case (10.00%, 30.00%) and the certified share (5.00%, 6.00%).
    assert "| 10.00 [" in page and "| 30.00 [" in page and "| 5.00 [" in page


def test_a_robust_row_is_attacked_by_its_audit_and_paired_clean_over_the_most_images():
    """A row's model in four reports: an unaudited run over all 10,000 images, an
    audited shard of 100, its merged audited 500, another audited 500. The comparison's
    cells come from the first audited 500 (never an unaudited run, whatever the
    order); the clean test from the 10,000 images (a shard never: its images are not
    the first of the split)."""
    from tfnode.paper import robust

    whole = ({"num_examples": 10000}, "whole")
    shard = ({"num_examples": 100, "audit": True, "shard": {"index": 0}}, "shard")
    merged = ({"num_examples": 500, "audit": True}, "merged")
    again = ({"num_examples": 500, "audit": True}, "again")
    assert robust._attacked([whole, shard, merged, again]) == merged
    assert robust._attacked([again, shard, merged]) == again
    assert robust._attacked([whole]) is None and robust._attacked([]) is None
    assert robust._clean([merged, shard, whole]) == whole
    assert robust._clean([shard]) is None


def test_a_spot_check_counts_the_robustness_its_stronger_settings_break():
    """The ODE-Net's audited run over 500 images calls images 0..99 robust at eps 0.1
    (and 0..9 at 0.5, the grey image's eps, left out); its spot check over the first 200,
    with more restarts, 0..89 and image 150: 10 images overstated, one the spot check
    alone holds (its own rerun's luck), McNemar on 10 against 1 discordant. A shard and
    a rerun with the run's own settings are no spot check, and the model re-solved is no
    evaluation of the row."""
    from tfnode.paper import robust, robust_checks

    run = "robust/node/1"

    def report(n, robust_at, restarts, **extra):
        res = masked_result(True, {"0.1": robust_at, "0.5": range(10)}, n=n)
        res["info"]["path"] = run
        return {"eps": [0.1, 0.5], "num_examples": n, "dataset": "mnist", "split": "test",
                "audit": True, "models": {"node": res},
                "attack_options": {"pgd_strong": {"restarts": restarts, "num_steps": 100},
                                   "square": {"max_queries": 1000}}, **extra}

    audited = report(500, range(100), 2)
    shard = report(300, range(50), 5, shard={"index": 0, "count": 5})  # more than 200
    same = report(200, range(100), 2)
    checked = report(200, [*range(90), 150], 5)
    # The same weights re-solved at a finer step (`--model_option=step_size=`): not the
    # row's model as trained, whatever its images.
    finer = report(1000, range(5), 2)
    finer["models"]["node"]["info"]["solver_options"] = {"step_size": 0.1}
    node = {**metrics("node", 0.99, defense="pgd_at", defense_options={"eps": 0.1}),
            "_run": run}
    (row,) = robust.rows({"training": [node],
                          "evaluations": [shard, same, checked, audited, finer]})
    assert row["report"] is audited and row["spot_report"] is checked
    check = robust_checks.spot(row)
    assert check["n"] == 200 and check["settings"] == "pgd_strong.restarts 2 -> 5"
    (cell,) = check["cells"]
    assert (cell["eps"], cell["overstated"], cell["spot_only"]) == ("0.1", 10, 1)
    assert (cell["run"]["k"], cell["spot"]["k"], cell["both"]["k"]) == (100, 91, 90)
    assert cell["test"]["p_value"] == pytest.approx(2 * 12 / 2 ** 11)  # 2 P(X <= 1), X ~ B(11, 1/2)
    assert cell["verdict"] == "overstated by 10 of 200 images"
    assert robust_checks.spot({**row, "spot_result": None}) is None
    held = robust_checks.spot({**row, "spot_report": same, "spot_result": same["models"]["node"]})
    assert held["cells"][0]["verdict"] == "held: nothing more broken at n = 200"
    lines = robust.section({"training": [node],
                            "evaluations": [shard, same, checked, audited]})
    assert ("| pgd_at, eps 0.1 | node (ODE-Net) | 200 | pgd_strong.restarts 2 -> 5 | 0.1 "
            "| 50.00 [") in "\n".join(lines)
    assert robust_checks.settings_changed({"a": {"x": 1}}, {"a": {"x": 1}, "b": {"y": 2}}) == (
        "b.y - -> 2")
    assert robust_checks.settings_changed(
        {"transfer": {"attack": "fgsm"}},
        {"transfer": {"attack": "apgd_ce", "num_steps": 100}}) == (
        "transfer.attack fgsm -> apgd_ce")


def test_a_gain_that_vanishes_when_the_weights_are_re_solved_is_named():
    """As trained, PGD leaves images 0..99 of 500 robust at eps 0.1 and 0..9 at 0.2; the
    same weights at a finer step, on the same 500: 0..59 and 0..9. At 0.1 40 images are
    robust only as trained (p ~ 2^-39 after Holm): the gain vanishes; at 0.2 none
    differ. A re-solved run over more images than the audited one is left out."""
    from tfnode.paper import robust, robust_checks

    run = "robust/node/1"

    def report(n, robust_by_eps, solver_options=None):
        res = masked_result(True, robust_by_eps, n=n)
        res["info"]["path"] = run
        if solver_options:
            res["info"]["solver_options"] = solver_options
        return {"eps": [float(k) for k in robust_by_eps], "num_examples": n,
                "dataset": "mnist", "split": "test", "audit": not solver_options,
                "models": {"node": res}}

    audited = report(500, {"0.1": range(100), "0.2": range(10)})
    finer = report(500, {"0.1": range(60), "0.2": range(10)}, {"step_size": 0.1})
    more = report(1000, {"0.1": range(5)}, {"step_size": 0.05})
    reseeded = {**report(500, {"0.1": range(5)}, {"step_size": 0.2}), "seed": 1}
    node = {**metrics("node", 0.99, defense="pgd_at", defense_options={"eps": 0.1}),
            "_run": run}
    (row,) = robust.rows({"training": [node], "evaluations": [finer, audited, more,
                                                              reseeded]})
    assert row["report"] is audited
    assert [r for r, _ in row["resolved"]] == [finer, reseeded]
    # Another seed: its attacks are not the run's, so no cell compares them.
    assert robust_checks.resolved(row)[1]["cells"] == []
    row["resolved"] = row["resolved"][:1]
    (check,) = robust_checks.resolved(row)
    assert check["options"] == "step_size=0.1" and check["n"] == 500
    first, second = check["cells"]
    assert (first["attack"], first["eps"], first["test"]["a_only"]) == ("pgd", "0.1", 40)
    assert first["verdict"] == "less robust re-solved: the gain vanishes"
    assert first["p_holm"] == pytest.approx(2 * 2 * 0.5 ** 40)
    assert second["test"]["a_only"] + second["test"]["b_only"] == 0
    assert second["verdict"] == "no difference measurable at n = 500"
    page = "\n".join(robust.section({"training": [node],
                                     "evaluations": [finer, audited, more]}))
    assert "| pgd_at, eps 0.1 | node (ODE-Net) | step_size=0.1 | 500 | pgd | 0.1 |" in page


def test_the_exhaustive_schedules_monotonicity_check_is_listed_per_row():
    """A row evaluated under the exhaustive schedule, where PGD's robust accuracy rises
    from eps 0.2 to 0.3 (the report's own check, run for real on its cells): the page
    lists the failed check; a fast-schedule run of the row is not listed."""
    from tfnode.evaluation import checks
    from tfnode.paper import robust, robust_checks

    run = "robust/node/1"
    res = masked_result(True, {"0.1": range(100), "0.2": range(10), "0.3": range(30)},
                        n=500)
    res["info"]["path"] = run
    res["checks"] = checks.monotone_in_eps(res, eps_keys=["0.1", "0.2", "0.3"])
    exhaustive = {"eps": [0.1, 0.2, 0.3], "num_examples": 500, "dataset": "mnist",
                  "split": "test", "schedule": "exhaustive", "models": {"node": res}}
    fast = {**exhaustive, "schedule": "fast"}
    node = {**metrics("node", 0.99, defense="pgd_at", defense_options={"eps": 0.1}),
            "_run": run}
    table = robust.rows({"training": [node], "evaluations": [fast, exhaustive]})
    assert [r for r, _ in table[0]["exhaustive"]] == [exhaustive]
    (line,) = [x for x in robust_checks.monotone_lines(table) if x.startswith("- ")]
    assert line.startswith("- pgd_at, eps 0.1, node (ODE-Net) (500 images): FAIL: pgd: "
                           "robust accuracy does not rise with eps (0.1: 0.200, 0.2: 0.020, "
                           "0.3: 0.060)"), line


def test_clean_predictions_pair_without_an_audit_on_the_first_images_of_both():
    """The ODE-Net evaluated unaudited on 1,000 images, the ResNet audited on the first
    500 (of which it gets image 0 wrong, the ODE-Net images 1 and 2): no attack cell
    (no shared audited images), one clean cell on the first 500 images."""
    import numpy as np

    from tfnode.evaluation import outcomes
    from tfnode.paper import robust

    def evaluated(model, n, wrong, audit):
        run = f"robust/{model}/1"
        res = masked_result(model == "node", {"0.1": range(n // 2)}, n=n)
        res["info"]["path"] = run
        clean = np.ones(n, bool)
        clean[list(wrong)] = False
        res["clean_correct"] = outcomes.encode(clean)
        report = {"eps": [0.1], "num_examples": n, "dataset": "mnist", "split": "test",
                  "audit": audit, "models": {model: res}}
        return {**metrics(model, 0.99, defense="pgd_at", defense_options={"eps": 0.1}),
                "_run": run}, report

    node, node_report = evaluated("node", 1000, [1, 2, 700], audit=False)
    resnet, resnet_report = evaluated("resnet", 500, [0], audit=True)
    table = robust.rows({"training": [node, resnet],
                         "evaluations": [node_report, resnet_report]})
    assert [r["result"] is None for r in table] == [True, False]
    (pair,) = robust.pairs(table)
    (cell,) = pair["cells"]
    assert pair["n"] is None and cell["kind"] == "clean" and cell["n"] == 500
    assert (cell["test"]["a_only"], cell["test"]["b_only"]) == (1, 2)
    assert robust._bound_text(cell, pair["n"]) == "clean (500 images)"


def audited_row(name, model, robust_at, *, n, shard=None, **recipe):
    """A robust row's training metrics and its audited report over the first ``n`` test
    images (robust at eps 0.1 on ``robust_at``), the report naming the row's folder."""
    run = f"robust/{name}/1"
    res = masked_result(model == "node", {"0.1": robust_at}, n=n)
    res["info"]["path"] = run
    report = {"eps": [0.1], "num_examples": n, "dataset": "mnist", "split": "test",
              "audit": True, "shard": shard, "models": {name: res}}
    return {**metrics(model, 0.99, **recipe), "_run": run}, report


def test_an_odenet_audited_on_fewer_images_is_paired_on_the_first_of_both():
    """A stretch row audited on the first 200 images (robust at eps 0.1 on images
    0-49), the ResNet on 500 (robust on 0-19 and 300-499): the worst-case cell pairs the
    first 200 of each, 30 images the ODE-Net's only and none the ResNet's, the ResNet's
    later 200 never counted. Two shards pair only when they are the same one."""
    from tfnode.paper import robust, robust_changes

    pgd = {"defense": "pgd_at", "defense_options": {"eps": 0.1}}
    node, node_report = audited_row("node", "node", range(50), n=200, **pgd)
    resnet, resnet_report = audited_row("resnet", "resnet", [*range(20), *range(300, 500)],
                                        n=500, **pgd)
    table = robust.rows({"training": [node, resnet],
                         "evaluations": [node_report, resnet_report]})
    (pair,) = robust.pairs(table)
    (cell,) = [c for c in pair["cells"] if c["kind"] == "worst case"]
    assert pair["n"] == 200 and cell["n"] == 200
    assert (cell["test"]["a_only"], cell["test"]["b_only"]) == (30, 0)
    assert (cell["other"]["k"], cell["other"]["n"]) == (20, 200)
    first, second = ({"num_examples": 100, "shard": {"index": i, "count": 5}} for i in (0, 1))
    shared = robust_changes.shared_images
    assert shared({"report": first}, {"report": dict(first)}) == 100
    assert shared({"report": first}, {"report": second}) == 0
    assert shared({"report": first}, {"report": {"num_examples": 500}}) == 0


def test_a_regularized_odenet_is_paired_with_the_resnets_of_its_recipe_without_it():
    """A stretch row adds a regularizer of the ODE function to the PGD-AT ODE-Net: with no
    ResNet of that recipe it is paired with the PGD-AT ResNet (robust on images 0-9
    against the ResNet's 0-39: 30 discordant, all the ResNet's), never with the fast-AT
    one; once a ResNet of its own recipe exists, with that one alone."""
    from tfnode.paper import robust

    pgd = {"defense": "pgd_at", "defense_options": {"eps": 0.1}}
    fast = {"defense": "fgsm_rs", "defense_options": {"eps": 0.3}}
    contr = {"regularizer": "contractivity", "regularizer_options": {"weight": 0.1}}
    evaluated = functools.partial(audited_row, n=100)
    rows = [evaluated("node", "node", range(20), **pgd),
            evaluated("node_contr", "node", range(10), **pgd, **contr),
            evaluated("resnet", "resnet", range(40), **pgd),
            evaluated("resnet_fast", "resnet", range(60), **fast)]

    def partners(rows):
        table = robust.rows({"training": [m for m, _ in rows],
                             "evaluations": [r for _, r in rows]})
        return {(p["ode"]["recipe"], p["other"]["metrics"]["_run"]): p for p in robust.pairs(table)}

    found = partners(rows)
    assert sorted(found) == [("pgd_at, eps 0.1", "robust/resnet/1"),
                             ("pgd_at, eps 0.1 + contractivity", "robust/resnet/1")]
    (cell,) = [c for c in found[("pgd_at, eps 0.1 + contractivity", "robust/resnet/1")]["cells"]
               if c["kind"] == "worst case"]
    assert (cell["test"]["a_only"], cell["test"]["b_only"]) == (0, 30)
    found = partners(rows + [evaluated("resnet_contr", "resnet", range(5), **pgd, **contr)])
    assert sorted(found) == [("pgd_at, eps 0.1", "robust/resnet/1"),
                             ("pgd_at, eps 0.1 + contractivity", "robust/resnet_contr/1")]


def test_each_row_is_paired_with_the_rows_of_its_model_one_setting_away():
    """One change at a time: the PGD-AT ODE-Net (robust at eps 0.1 on images 0-19) is the
    base of the row that adds a regularizer (0-9: 10 images the base's only), of the row
    with a model option added (0-4) and of the TRADES row at the same eps (0-24: 5 the
    TRADES row's only), whichever comes first in the table; never of a row two settings
    away (TRADES + the regularizer: the base of that one is each row one setting from it),
    of a row at another eps alone (PGD-AT at 0.3, paired with fast AT at 0.3 instead) or
    of another model."""
    from tfnode.paper import robust, robust_changes

    pgd = {"defense": "pgd_at", "defense_options": {"eps": 0.1}}
    trades = {"defense": "trades", "defense_options": {"eps": 0.1, "beta": 1.0}}
    contr = {"regularizer": "contractivity", "regularizer_options": {"weight": 0.1}}
    evaluated = functools.partial(audited_row, n=100)
    spectral = evaluated("node_spectral", "node", range(5), **pgd)
    spectral[0]["model_options"] = {"width": 32, "lipschitz": "spectral"}
    rows = [evaluated("node_contr", "node", range(10), **pgd, **contr),
            evaluated("node", "node", range(20), **pgd), spectral,
            evaluated("node_trades", "node", range(25), **trades),
            evaluated("node_trades_contr", "node", range(3), **trades, **contr),
            evaluated("node_fast", "node", range(50), defense="fgsm_rs",
                      defense_options={"eps": 0.3}),
            evaluated("node_pgd3", "node", range(30), defense="pgd_at",
                      defense_options={"eps": 0.3}),
            evaluated("resnet", "resnet", range(40), **pgd)]
    table = robust.rows({"training": [m for m, _ in rows], "evaluations": [r for _, r in rows]})
    found = {(p["changed"]["metrics"]["_run"], p["base"]["metrics"]["_run"]): p
             for p in robust_changes.changes(table)}
    assert sorted(found) == [("robust/node_contr/1", "robust/node/1"),
                             ("robust/node_pgd3/1", "robust/node_fast/1"),
                             ("robust/node_spectral/1", "robust/node/1"),
                             ("robust/node_trades/1", "robust/node/1"),
                             ("robust/node_trades_contr/1", "robust/node_contr/1"),
                             ("robust/node_trades_contr/1", "robust/node_trades/1")]
    words = {k: p["change"] for k, p in found.items()}
    assert words[("robust/node_contr/1", "robust/node/1")] == "+ contractivity"
    assert words[("robust/node_spectral/1", "robust/node/1")] == "lipschitz=spectral"
    assert words[("robust/node_trades/1", "robust/node/1")] == "trades for pgd_at"
    discordant = {}
    for key, pair in found.items():
        (cell,) = [c for c in pair["cells"] if c["kind"] == "worst case"]
        discordant[key] = (cell["test"]["a_only"], cell["test"]["b_only"], cell["verdict"])
    assert discordant[("robust/node_contr/1", "robust/node/1")] == (
        0, 10, "less robust with the change")
    assert discordant[("robust/node_trades/1", "robust/node/1")][:2] == (5, 0)
    lines = robust_changes.change_lines(table)
    assert any("| node (ODE-Net) [no lipschitz] | pgd_at, eps 0.1 | + contractivity | worst "
               "case | 0.1 |" in line for line in lines)
    # A setting changed in its options alone is named with them; no regularizer options
    # written as None or {} are the same options.
    beta6 = {"defense": "trades", "defense_options": {"eps": 0.1, "beta": 6.0}}
    pair = [evaluated("node_trades", "node", range(25), **trades),
            evaluated("node_beta6", "node", range(25), **beta6)]
    table = robust.rows({"training": [m for m, _ in pair], "evaluations": [r for _, r in pair]})
    (found,) = robust_changes.changes(table)
    assert found["change"] == "trades (beta=6.0) for trades (beta=1.0)"
    a, b = ({"ode": True, "metrics": metrics("node", 0.99, regularizer=None,
                                             regularizer_options=o)} for o in (None, {}))
    assert robust_changes.differences(a, b) == []


def test_two_resnets_of_one_recipe_are_told_apart_by_their_options():
    """The parameter-matched pair: the ODE-Net beside a width-32 and a width-19 ResNet of
    one recipe. The ResNets are named with the options that tell them apart; the
    ODE-Net, alone of its kind, is not, until a stretch row adds an option to it."""
    from tfnode.paper import robust

    pgd = {"defense": "pgd_at", "defense_options": {"eps": 0.1}}

    def row(model, width, **recipe):
        return {**metrics(model, 0.99, **recipe), "model_options": {"width": width},
                "_run": f"robust/{model}{width}/1"}

    fast = {"defense": "fgsm_rs", "defense_options": {"eps": 0.3}}
    seed1 = {**row("resnet", 32, **fast), "_run": "robust/resnet_seed1/1/"}
    table = robust.rows({"training": [
        row("node", 32, **pgd), row("resnet", 32, **pgd), row("resnet", 19, **pgd),
        row("resnet", 32, **fast), seed1], "evaluations": []})
    # Two of one recipe with the same options too (two seeds): their folders.
    assert [r["name"] for r in table] == [
        "node (ODE-Net)", "resnet [width=32]", "resnet [width=19]", "resnet [resnet32]",
        "resnet [resnet_seed1]"]
    spectral = {**row("node", 32, **pgd), "_run": "robust/node_spectral/1"}
    spectral["model_options"] = {"width": 32, "lipschitz": "spectral"}
    table = robust.rows({"training": [row("node", 32, **pgd), spectral, row("resnet", 32, **pgd)],
                         "evaluations": []})
    assert [r["name"] for r in table] == [
        "node (ODE-Net) [no lipschitz]", "node (ODE-Net) [lipschitz=spectral]", "resnet"]
