"""Evaluation invariants that a mutation review found untested: Boundary's per-eps cells
count only the adversarials within eps, report.md shows the per-example worst case of
report.json, and the audit's variants keep their option overrides."""

import json
import pathlib
import re

import keras
import numpy as np
import pytest

from tfnode import attacks, evaluation, stats
from tfnode.evaluation import audit, outcomes
from tfnode.evaluation import render
from tfnode.evaluation import EvalConfig, plan, schedule


def _tiny_cnn(seed=0):
    """A random 28x28x1 -> 10 classifier, small enough to attack in a second."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((28, 28, 1)),
                             keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
                             keras.layers.Flatten(), keras.layers.Dense(10)])


def test_boundary_cells_count_as_broken_only_the_adversarials_within_eps():
    """One unbounded Boundary run answers every eps: a cell counts an example as broken
    exactly when the adversarial found for it lies within eps (Linf); one found farther
    away leaves the example robust in that cell."""
    model = _tiny_cnn()
    x = np.random.default_rng(0).random((6, 28, 28, 1)).astype(np.float32)
    y = attacks.predict(model, x)  # every example clean-correct by construction
    target = schedule.Target(model, x, y, np.arange(6), np.ones(6, bool), 6, 0, False,
                           lambda *_: None, 0)
    spec = attacks.get("boundary")
    options = spec.options({"max_queries": 60})
    # eps 0: an adversarial differs from its clean-correct image, so none is within it.
    eps = [0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
    job = plan.Job("boundary", spec, options, model, {"kind": spec.kind}, eps)
    out = schedule.run_job(target, job, {})
    summary = target.arrays[("boundary", "summary")]
    found, linf = summary["found"], summary["linf"]
    # The case the eps-0 cell tests: adversarials found, none of them within eps 0.
    assert (found & (linf > 1e-6)).any()
    assert out["summary"]["num_adversarial_found"] == found.sum()
    num_robust = []
    for e in eps:
        key = outcomes.eps_key(e)
        cell = out["cells"][key]
        robust = outcomes.decode(cell["robust"])
        per_example = target.arrays[("boundary", key)]
        np.testing.assert_array_equal(per_example["linf"], linf)
        broken = target.correct & ~robust
        within = found & (linf <= e + 1e-6)
        np.testing.assert_array_equal(broken, within, err_msg=f"eps {key}")
        np.testing.assert_array_equal(per_example["own"], within, err_msg=f"eps {key}")
        assert np.all(linf[broken] <= e + 1e-6), key
        assert cell["num_fooled"] == within.sum()
        assert cell["robust_accuracy"] == robust.mean()
        if cell["linf_median"] is not None:  # over the adversarials this cell counts
            assert cell["linf_median"] <= e + 1e-6, key
        num_robust.append(int(robust.sum()))
    # A larger ball holds every adversarial of a smaller one.
    assert num_robust == sorted(num_robust, reverse=True)
    assert num_robust[0] == target.correct.sum()           # eps 0: nothing is within
    assert num_robust[-1] == target.correct.sum() - found.sum()  # eps 1: everything is


def _mask(n, indices):
    out = np.zeros(n, bool)
    out[list(indices)] = True
    return out


def _hand_built_report():
    """A report of one model under two attacks that break different examples, so that
    the per-example worst case is strictly below the strongest single attack's robust
    accuracy at every eps (8 examples: every percentage is exact in two decimals)."""
    n, eps = 8, [0.1, 0.3]
    keys = [outcomes.eps_key(e) for e in eps]
    clean = _mask(n, range(6))
    broken = {"pgd": {keys[0]: {0, 1, 2}, keys[1]: {0, 1, 2, 3}},
              "square": {keys[0]: {3, 4}, keys[1]: {3, 4, 5}}}
    kinds = {"pgd": "white-box", "square": "score-based"}
    result = {"info": {"path": "tiny.keras", "format": "keras"},
              "clean_accuracy": float(clean.mean()), "clean_correct": outcomes.encode(clean),
              "checks": [], "attacks": {}}
    for name, by_eps in broken.items():
        cells = {}
        for k, indices in by_eps.items():
            robust = clean & ~_mask(n, indices)
            cells[k] = {"eps": float(k), "robust": outcomes.encode(robust),
                        "robust_accuracy": float(robust.mean())}
        result["attacks"][name] = {"meta": {"attack": name, "kind": kinds[name],
                                            "crafted_on": "model"}, "cells": cells}
    result["worst_case"] = outcomes.worst_case(result, keys)
    result["verdict"] = audit.verdict(result, [], keys)
    report = {"dataset": "mnist", "split": "test", "num_examples": n, "batch_size": 4,
              "seed": 0, "eps": eps, "eps_scale": 1.0, "models": {"tiny": result},
              "warnings": [], "attack_options": {}, "versions": {}}
    return report, keys


def _md_table(md, header):
    """The rows of the table of ``md`` whose header line starts with ``header``, each
    as its list of cells."""
    lines = md.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(header)]
    assert len(starts) == 1, (header, md)
    rows = []
    for line in lines[starts[0] + 2:]:  # past the header and its |---| line
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def test_report_md_shows_the_per_example_worst_case_of_report_json(tmp_path):
    """Every number of report.md's worst-case table, verdict lines and attack table is
    report.json's: the worst case is the per-example one, not the best single attack."""
    report, keys = _hand_built_report()
    paths = render.write_report(report, str(tmp_path))
    saved = json.loads(pathlib.Path(paths["json"]).read_text())["models"]["tiny"]
    md = pathlib.Path(paths["md"]).read_text()
    attacks_ = saved["attacks"]
    for k in keys:
        survive = np.logical_and.reduce([outcomes.decode(a["cells"][k]["robust"])
                                         for a in attacks_.values()])
        strongest = min(a["cells"][k]["robust_accuracy"] for a in attacks_.values())
        # The case this test is for: the worst case is below every single attack.
        assert saved["worst_case"][k]["robust_accuracy"] == survive.mean() < strongest
    # The summary table: clean, then the worst case per eps.
    [row] = _md_table(md, "| model | clean |")
    assert row[0] == "tiny" and len(row) == 2 + len(keys)
    assert float(row[1]) == pytest.approx(100 * saved["clean_accuracy"], abs=5e-3)
    for k, value in zip(keys, row[2:]):
        assert _number(value) == pytest.approx(
            100 * saved["worst_case"][k]["robust_accuracy"], abs=5e-3), k
        assert _interval(value) == pytest.approx(
            [100 * v for v in stats.wilson(saved["worst_case"][k]["num_robust"],
                                           saved["worst_case"][k]["num_examples"])],
            abs=0.051), k  # the interval to one decimal (a half-way case may round either way)
    # The verdict's line per eps: the worst case, then the strongest single attack.
    for k in keys:
        wc = saved["verdict"]["worst_case"][k]
        line = re.search(rf"^- eps {re.escape(k)}: worst case \*\*([\d.]+)%\*\* "
                         rf"\((\d+)/(\d+)\).*strongest single attack (\w+) ([\d.]+)%",
                         md, re.M)
        assert line, (k, md)
        assert float(line[1]) == pytest.approx(100 * wc["robust_accuracy"], abs=5e-3)
        assert (int(line[2]), int(line[3])) == (wc["num_robust"], wc["num_examples"])
        best = wc["strongest_single"]
        assert line[4] == best["attack"]
        assert float(line[5]) == pytest.approx(100 * best["robust_accuracy"], abs=5e-3)
    # Per attack: its own cells.
    rows = {row[1]: row for row in _md_table(md, "| model | attack |")}
    assert set(rows) == set(attacks_)
    for name, attack in attacks_.items():
        row = rows[name]
        assert len(row) == 4 + len(keys)
        for k, value in zip(keys, row[4:]):
            assert _number(value) == pytest.approx(
                100 * attack["cells"][k]["robust_accuracy"], abs=5e-3), (name, k)


def _number(cell):
    """``"12.50 [2.2, 47.1]"`` -> 12.5 (a report.md cell: the value, its interval)."""
    return float(cell.split(" [")[0])


def _interval(cell):
    """``"12.50 [2.2, 47.1]"`` -> [2.2, 47.1]."""
    return [float(v) for v in cell.split(" [")[1].rstrip("]").split(", ")]


def _audit_jobs(attack_options):
    """The audit's jobs for a model without ODE blocks (no surrogate applies), as the
    evaluation builds them: resolved options, nothing run."""
    config = EvalConfig(model_path="unused", attacks=("fgsm",), eps=(0.1,), audit=True,
                        attack_options=attack_options)
    options = evaluation.resolve_options(config)
    run = plan.Run(config, options, None, None, None, [0.1], None, lambda *_: None, 0)
    jobs, _ = plan.jobs(run, model=None, info={"format": "saved_model"})
    return options, {job.name: job for job in jobs}


def test_audit_variants_run_with_their_own_overrides_not_the_base_attack():
    """pgd_strong is the larger search its description states (at PGD's step size) and
    pgd_unbounded can cross the whole [0, 1] range; with lost overrides either would be
    plain PGD, which neither is."""
    options, jobs = _audit_jobs({})
    pgd = attacks.get("pgd").options(dataset="mnist")
    assert options["pgd"] == pgd  # the base they are compared with: the defaults
    strong = audit.variant("pgd_strong")
    steps, restarts = map(int, re.fullmatch(r"PGD with (\d+) steps and (\d+) restarts",
                                            strong.why).groups())
    for got in (options["pgd_strong"], jobs["pgd_strong"].options,
                jobs["pgd_strong"].meta["options"]):
        assert (got["num_steps"], got["restarts"]) == (steps, restarts)
        assert got["step_size"] == pgd["step_size"]
        assert got["num_steps"] * got["restarts"] > pgd["num_steps"] * pgd["restarts"]
        assert got != pgd
    unbounded = audit.variant("pgd_unbounded")
    assert unbounded.role == "sanity" and jobs["pgd_unbounded"].eps == [audit.UNBOUNDED_EPS]
    # Plain PGD moves at most num_steps * step_size per pixel: too little to reach
    # every image in the unit box, which its sanity check needs.
    assert pgd["num_steps"] * pgd["step_size"] < audit.UNBOUNDED_EPS
    for got in (options["pgd_unbounded"], jobs["pgd_unbounded"].options):
        assert got["num_steps"] * got["step_size"] >= audit.UNBOUNDED_EPS
        assert got != pgd


def test_audit_variant_overrides_beat_the_base_attacks_options_and_yield_to_their_own():
    """``--attack_option=pgd...`` reaches the variants except where they override it;
    ``--attack_option=pgd_strong...`` wins over the variant's override."""
    pgd = attacks.get("pgd").options(dataset="mnist")
    options, jobs = _audit_jobs({"pgd": {"num_steps": 7, "step_size": 0.02},
                                 "pgd_strong": {"restarts": 2}})
    assert options["pgd"]["num_steps"] == 7
    strong = options["pgd_strong"]
    assert strong["restarts"] == 2                   # its own option
    assert strong["num_steps"] > pgd["num_steps"]    # its override, not the user's 7
    assert strong["step_size"] == 0.02               # the user's PGD step size
    assert jobs["pgd_strong"].options == strong
    unbounded = options["pgd_unbounded"]
    assert unbounded["num_steps"] * unbounded["step_size"] >= audit.UNBOUNDED_EPS
