"""The report's definitions and checks on hand-written results: worst case, each check at
pass, fail and exactly the threshold, the verdict, the warnings."""

import numpy as np
import pytest

from tfnode.evaluation import audit, certify, checks, grey, outcomes
from tfnode.evaluation import cells as cells_lib

N = 10
PROBES = {"logits_max_diff_repeat": 0.0, "logits_max_diff_alone_vs_batch": 0.0,
          "zero_gradient_fraction": 0.0, "nonfinite_gradient_fraction": 0.0}


def mask(indices):
    m = np.zeros(N, bool)
    m[list(indices)] = True
    return m


def attack(kind="white-box", *, cells, crafted_on="model", iterations=40, **meta):
    """An attack entry; ``cells`` maps eps keys to robust masks or to accuracies (then
    ``robust_accuracy`` is exactly that number, so the checks' thresholds are met exactly,
    and the mask holds the nearest count of robust examples)."""
    out = {}
    for k, v in cells.items():
        robust = v if isinstance(v, np.ndarray) else mask(range(round(v * N)))
        acc = float(robust.mean()) if isinstance(v, np.ndarray) else float(v)
        out[k] = {"robust": outcomes.encode(robust), "robust_accuracy": acc}
    return {"meta": {"kind": kind, "crafted_on": crafted_on, "iterations": iterations, **meta},
            "cells": out}


def result(attacks, probes=None, clean=range(N)):
    return {"probes": {**PROBES, **(probes or {})}, "attacks": attacks,
            "clean_correct": outcomes.encode(mask(clean))}


def failed(findings, check_prefix):
    hits = [f for f in findings if f["check"].startswith(check_prefix)]
    assert hits, f"no finding {check_prefix!r} in {[f['check'] for f in findings]}"
    return [f for f in hits if not f["passed"]]


def test_the_threshold_cases_really_sit_at_the_threshold(monkeypatch):
    """Without the tolerance, the exactly-at-threshold cases above must fail: they test
    the threshold, not equal numbers."""
    monkeypatch.setattr(checks, "TOLERANCE", 0.0)
    res = result({"pgd": attack(cells={"0.1": 0.28}),
                  "pgd_strong": attack(cells={"0.1": 0.3}, role="stronger",
                                       compares_with="pgd")})
    assert failed(checks.stronger_attack_converged(res, eps_keys=["0.1"]), "more steps")


def test_masks_round_trip_compactly():
    m = np.random.default_rng(0).random(1001) < 0.3
    enc = outcomes.encode(m)
    np.testing.assert_array_equal(outcomes.decode(enc), m)
    assert len(enc["bits"]) < 200  # 1001 examples in about 170 characters


def test_worst_case_is_per_example_not_the_minimum_over_attacks():
    # PGD fools examples 0-4, Square fools 5-9: each alone leaves 50%, together 0%.
    res = result({"pgd": attack(cells={"0.1": mask(range(5, 10))}),
                  "square": attack("score-based", cells={"0.1": mask(range(5))}, iterations=None),
                  "pgd_unbounded": attack(cells={"0.1": mask([])}, role="sanity")})
    wc = outcomes.worst_case(res, ["0.1", "0.3"])
    assert set(wc) == {"0.1"}  # no attack ran at 0.3
    assert wc["0.1"]["robust_accuracy"] == 0.0 and wc["0.1"]["num_robust"] == 0
    assert wc["0.1"]["strongest_single"]["robust_accuracy"] == 0.5
    # The sanity attack never counts; each of the other two broke 5 examples alone.
    assert wc["0.1"]["attacks"] == ["pgd", "square"]
    assert wc["0.1"]["decisive"] == {"pgd": 5, "square": 5}
    # Overlapping successes: the worst case is the intersection of the survivors.
    res["attacks"]["square"] = attack("score-based", cells={"0.1": mask(range(3, 10))})
    assert outcomes.worst_case(res, ["0.1"])["0.1"]["num_robust"] == 5


def test_worst_case_never_exceeds_any_attack_or_clean_accuracy():
    rng = np.random.default_rng(1)
    clean = mask(range(8))
    attacks = {f"a{i}": attack(cells={"0.2": clean & (rng.random(N) < 0.6)}) for i in range(4)}
    wc = outcomes.worst_case(result(attacks, clean=range(8)), ["0.2"])["0.2"]
    assert wc["robust_accuracy"] <= min(a["cells"]["0.2"]["robust_accuracy"]
                                        for a in attacks.values()) <= clean.mean()


@pytest.mark.parametrize("strong,weak,masking_fails,not_converged_fails", [
    (0.4, 0.4, False, False),
    (0.3, 0.28, False, False),   # exactly at the threshold: passes
    (0.28, 0.3, False, False),   # exactly at the threshold the other way: passes
    (0.5, 0.3, True, False),     # the larger search is weaker: masking
    (0.1, 0.2, False, True),     # the larger search finds many more: not converged
])
def test_stronger_attack_check_looks_both_ways(strong, weak, masking_fails,
                                               not_converged_fails):
    res = result({"pgd": attack(cells={"0.1": weak}),
                  "pgd_strong": attack(cells={"0.1": strong}, role="stronger",
                                       compares_with="pgd")})
    findings = checks.stronger_attack_converged(res, eps_keys=["0.1"])
    assert bool(failed(findings, "more steps/restarts")) == masking_fails
    assert bool(failed(findings, "standard attack converged")) == not_converged_fails
    v = audit.verdict(res, findings, ["0.1"])
    assert v["masking_suspected"] == masking_fails
    assert v["not_converged"] == (["0.1"] if not_converged_fails else [])


@pytest.mark.parametrize("white,black,fails", [(0.2, 0.3, False), (0.3, 0.28, False),
                                               (0.5, 0.2, True)])
def test_white_box_must_beat_black_box(white, black, fails):
    res = result({"pgd": attack(cells={"0.1": white}),
                  # A surrogate's cell is not the model's own white-box attack.
                  "pgd_rk4": attack(cells={"0.1": 0.0}, crafted_on="surrogate",
                                    role="surrogate", compares_with="pgd"),
                  "boundary": attack("decision-based", cells={"0.1": black})})
    findings = checks.white_box_beats_black_box(res, eps_keys=["0.1"])
    assert bool(failed(findings, "white-box >= black-box")) == fails
    assert all(f["flag"] == "masking" for f in findings)


@pytest.mark.parametrize("own,surrogate,fails", [(0.2, 0.3, False), (0.22, 0.2, False),
                                                 (0.4, 0.2, True)])
def test_own_gradient_must_beat_surrogates(own, surrogate, fails):
    res = result({"pgd": attack(cells={"0.1": own}),
                  "pgd_adjoint": attack(cells={"0.1": surrogate}, crafted_on="surrogate",
                                        role="surrogate", compares_with="pgd")})
    findings = checks.own_gradient_beats_surrogates(res, eps_keys=["0.1"])
    assert bool(failed(findings, "the model's own gradient")) == fails


@pytest.mark.parametrize("iterative,single,fails", [(0.1, 0.5, False), (0.52, 0.5, False),
                                                    (0.7, 0.5, True)])
def test_iterative_must_beat_single_step(iterative, single, fails):
    res = result({"fgsm": attack(cells={"0.1": single}, iterations=1),
                  "apgd_ce": attack(cells={"0.1": iterative}, iterations=100)})
    findings = checks.iterative_beats_single_step(res, eps_keys=["0.1"])
    assert bool(failed(findings, "iterative apgd_ce")) == fails


@pytest.mark.parametrize("acc,fails", [(0.0, False), (0.01, False), (0.2, True)])
def test_unbounded_attack_must_reach_zero(acc, fails):
    res = result({"pgd_unbounded": attack(cells={"1": acc}, role="sanity")})
    assert bool(failed(checks.unbounded_attack_succeeds(res), "accuracy goes to ~0")) == fails


@pytest.mark.parametrize("accs,fails", [((0.5, 0.3, 0.1), False), ((0.3, 0.32, 0.1), False),
                                        ((0.3, 0.5, 0.1), True)])
def test_robust_accuracy_must_not_rise_with_eps(accs, fails):
    res = result({"pgd": attack(cells=dict(zip(("0.1", "0.2", "0.3"), accs)))})
    findings = checks.monotone_in_eps(res, eps_keys=["0.3", "0.1", "0.2"])
    assert bool(failed(findings, "pgd: robust accuracy does not rise")) == fails


@pytest.mark.parametrize("probes,check,fails", [
    ({}, "gradients are finite", False),
    ({"zero_gradient_fraction": 0.1}, "gradients are finite", True),
    ({"nonfinite_gradient_fraction": 0.01}, "gradients are finite", True),
    ({"logits_max_diff_repeat": 1e-6}, "logits are deterministic", False),
    ({"logits_max_diff_repeat": 1e-3}, "logits are deterministic", True),
    ({"logits_max_diff_alone_vs_batch": 1e-4}, "a sample's logits do not depend", False),
    ({"logits_max_diff_alone_vs_batch": 2e-3}, "a sample's logits do not depend", True),
])
def test_model_probe_checks(probes, check, fails):
    findings = checks.run_all(result({}, probes), eps_keys=["0.1"], batch_size=100)
    assert bool(failed(findings, check)) == fails


def test_every_failed_check_is_a_warning_and_sets_the_verdict():
    res = result({"fgsm": attack(cells={"0.1": 0.3}, iterations=1),
                  "pgd": attack(cells={"0.1": 0.6}),          # weaker than FGSM
                  "square": attack("score-based", cells={"0.1": 0.1})},
                 {"logits_max_diff_alone_vs_batch": 1e-2})
    findings = checks.run_all(res, eps_keys=["0.1"], batch_size=100)
    warnings = checks.warnings("node", findings)
    assert len(warnings) == sum(not f["passed"] for f in findings) == 3
    assert all(w.startswith("node: ") and "\n" not in w for w in warnings)
    assert any("depend on its batch" in w and "batch of 100" in w for w in warnings)
    v = audit.verdict(res, findings, ["0.1"])
    assert v["masking_suspected"] and v["not_converged"] == []
    assert v["worst_case"]["0.1"]["robust_accuracy"] == 0.1
    clean = result({"pgd": attack(cells={"0.1": 0.2})})
    assert not checks.warnings("x", checks.run_all(clean, eps_keys=["0.1"]))


def test_cell_definitions_on_crafted_masks():
    """Robust accuracy over all examples, success rate over the clean-correct ones,
    distances over the fooled ones only."""
    # L2 = Linf = i / 100 for example i
    correct = mask(range(8))                # 8 of 10 right on the clean images
    adv_correct = mask([0, 1, 2, 3, 8, 9])  # the attack fools 4, 5, 6, 7
    l2, linf = np.arange(N) / 100, np.arange(N) / 100
    robust = correct & adv_correct

    def per_example(own):
        return {"own": own, "attacked": correct, "l2": l2, "linf": linf}

    cell = cells_lib.cell(0.1, correct, robust, per_example(correct & ~robust))
    assert cell["robust_accuracy"] == 0.4                 # 4 of all 10
    assert cell["attack_success_rate"] == 0.5             # 4 of the 8 clean-correct
    assert cell["num_clean_correct"] == 8 and cell["num_fooled"] == 4
    assert cell["l2_median"] == pytest.approx(0.055) and cell["linf_mean"] == pytest.approx(
        0.055)                                            # over examples 4..7 only
    assert cell["max_linf_all"] == pytest.approx(0.09)
    np.testing.assert_array_equal(outcomes.decode(cell["robust"]), mask(range(4)))
    none = cells_lib.cell(0.1, correct, correct, per_example(np.zeros(N, bool)))
    assert none["num_fooled"] == 0 and none["l2_median"] is None


def blocks(**block):
    return {"format": "keras", "ode_blocks": [{
        "name": "ode_block", "solver": "dopri5", "rtol": 1e-3, "atol": 1e-3, "t1": 1.0,
        "step_size": None, "gradient": "backprop", "first_step_size": None,
        "max_num_steps": 1000, "per_sample_steps": True, **block}]}


@pytest.mark.parametrize("info,offered", [
    (blocks(), {"pgd_adjoint", "pgd_tight", "pgd_rk4"}),
    (blocks(gradient="adjoint", per_sample_steps=False), {"pgd_tight", "pgd_rk4"}),
    (blocks(rtol=1e-6, atol=1e-5), {"pgd_adjoint", "pgd_rk4"}),    # tight already
    (blocks(solver="euler", step_size=0.5, gradient=None), {"pgd_rk4"}),
    (blocks(solver="rk4", step_size=0.5, gradient=None), {"pgd_rk4"}),
    (blocks(solver="rk4", step_size=0.1, gradient=None), set()),   # is the surrogate
    ({"format": "saved_model"}, set()),
    ({"format": "keras", "ode_blocks": []}, set()),
])
def test_audit_offers_only_surrogates_that_differ_and_apply(info, offered):
    variants, registered, skipped = audit.plan(info, has_source=False)
    surrogates = {v.name for v in variants if v.role == "surrogate"}
    assert surrogates == offered
    assert set(skipped) == {"pgd_adjoint", "pgd_tight", "pgd_rk4", "transfer"} - offered
    assert all(isinstance(why, str) and why for why in skipped.values())
    # What the variants are compared with always runs, and the registered audit attacks.
    assert {"pgd_strong", "pgd_unbounded"} <= {v.name for v in variants}
    assert registered[0] == "pgd" and {"apgd_ce", "square", "boundary"} <= set(registered)


def test_attacks_on_the_survivors_of_others_are_judged_by_what_they_added():
    """Fast schedule: Boundary ran on what FGSM and PGD left robust; its mask holds theirs."""
    fgsm, pgd = mask(range(6)), mask([0, 1, 2, 3, 4, 8])  # PGD alone broke 5; FGSM alone 8
    left = fgsm & pgd                                       # 0..4 robust after both
    boundary = left & ~mask([4])                            # it broke 4 on top
    res = result({"fgsm": attack(cells={"0.1": fgsm}, iterations=1),
                  "pgd": attack(cells={"0.1": pgd}),
                  "boundary": attack("decision-based", cells={"0.1": boundary},
                                     survivors_of=["fgsm", "pgd"])})
    wc = outcomes.worst_case(res, ["0.1"])["0.1"]
    assert wc["decisive"] == {"fgsm": 1, "pgd": 1, "boundary": 1}
    # Boundary has no number of its own (its 40% is after FGSM and PGD).
    assert wc["strongest_single"]["attack"] != "boundary"

    def verdict(boundary_mask):
        res["attacks"]["boundary"] = attack("decision-based", cells={"0.1": boundary_mask},
                                            survivors_of=["fgsm", "pgd"])
        (f,) = [f for f in checks.white_box_beats_black_box(res, eps_keys=["0.1"])
                if f["check"].startswith("boundary finds little")]
        return f["passed"]

    assert not verdict(boundary)  # 1 in 10 that both gradient attacks missed: masking
    assert verdict(left)          # nothing beyond them


def test_the_models_are_compared_per_example_on_the_worst_case_and_each_attack():
    """Model A survives PGD on 0-5 and Square on 0-3 (worst case 0-3); model B survives
    both on 3-9 (worst case 3-9): on the worst case A alone holds 0-2 and B alone 4-9,
    by hand: McNemar's exact p = 2 P(X <= 3), X ~ Bin(9, 1/2) = 2 * 130 / 512."""
    a = result({"pgd": attack(cells={"0.1": mask(range(6))}),
                "square": attack("score-based", cells={"0.1": mask(range(4))}),
                "pgd_unbounded": attack(cells={"0.1": mask([])}, role="sanity")})
    b = result({"pgd": attack(cells={"0.1": mask(range(3, 10))}),
                "square": attack("score-based", cells={"0.1": mask(range(3, 10))})},
               clean=range(1, N))  # clean-wrong on example 0 alone
    for res in (a, b):
        res["worst_case"] = outcomes.worst_case(res, ["0.1"])
    rows = {r["attack"]: r for r in cells_lib.comparisons({"A": a, "B": b}, ["0.1", "0.3"])}
    assert set(rows) == {"clean", "pgd", "square", "worst case"}  # not the sanity attack
    assert rows["clean"]["eps"] is None
    assert (rows["clean"]["a_only"], rows["clean"]["b_only"]) == (1, 0)
    wc = rows["worst case"]
    assert (wc["a"], wc["b"], wc["eps"]) == ("A", "B", "0.1")
    assert (wc["a_only"], wc["b_only"], wc["both"], wc["neither"]) == (3, 6, 1, 0)
    assert wc["p_value"] == pytest.approx(2 * 130 / 512)
    assert (rows["pgd"]["a_only"], rows["pgd"]["b_only"]) == (3, 4)
    assert a["worst_case"]["0.1"]["ci95"][0] < 0.4 < a["worst_case"]["0.1"]["ci95"][1]
    assert cells_lib.comparisons({"A": a}, ["0.1"]) == []


def test_apgd_ce_far_above_a_margin_attack_is_flagged_at_the_tolerance():
    res = result({"apgd_ce": attack(cells={"0.1": 0.5, "0.3": 0.32}),
                  "apgd_dlr": attack(cells={"0.1": 0.2, "0.3": 0.3}),
                  "apgd_t": attack(cells={"0.1": 0.5, "0.3": 0.3})})
    findings = checks.cross_entropy_not_beaten_by_margin(res, eps_keys=["0.1", "0.3"])
    bad = failed(findings, "apgd_ce is not far above")
    # 0.5 vs 0.2 fails; 0.32 vs 0.3 sits exactly at the 2-point tolerance and passes.
    assert [(f["check"], f["eps"]) for f in bad] == [("apgd_ce is not far above apgd_dlr", "0.1")]
    assert len(findings) == 4 and all(f["flag"] == "masking" for f in bad)
    # Without APGD-CE in the run there is nothing to compare.
    del res["attacks"]["apgd_ce"]
    assert checks.cross_entropy_not_beaten_by_margin(res, eps_keys=["0.1"]) == []


@pytest.mark.parametrize("robust, eps, fails", [
    ({0, 1}, "0.5", False),     # both labelled the grey image's class: may be robust
    ({0, 1, 5}, "0.5", True),   # 5 has another label: the grey image breaks it
    ({0, 1, 5}, "0.6", True),   # beyond 0.5 the grey image stays inside the ball
    ({0, 1, 5}, "0.3", False),  # below 0.5 the grey image is not an allowed perturbation
])
def test_no_example_of_another_label_survives_the_grey_image(robust, eps, fails):
    res = result({"pgd": attack(cells={eps: mask(robust)})})
    res["grey_image"] = {"pixel": 0.5, "label": 7,
                         "possible": outcomes.encode(mask({0, 1, 2}))}
    res["worst_case"] = outcomes.worst_case(res, [eps])
    findings = checks.grey_image_bound(res, eps_keys=[eps])
    if eps == "0.3":
        assert findings == []
        return
    assert bool(failed(findings, "no more robust than the grey image")) == fails
    assert not fails or findings[0]["flag"] == "masking"
    # A report written before the grey image was measured has nothing to judge.
    del res["grey_image"]
    assert checks.grey_image_bound(res, eps_keys=[eps]) == []


def test_the_grey_image_judges_certificates_and_nothing_at_a_near_tie():
    res = result({"pgd": attack(cells={"0.5": mask({0})})})
    res["grey_image"] = {"pixel": 0.5, "label": 7, "margin": 1.0,
                         "possible": outcomes.encode(mask({0, 1, 2}))}
    res["worst_case"] = outcomes.worst_case(res, ["0.5"])
    res["certified"] = {"0.5": {"certified": outcomes.encode(mask({0, 4}))}}
    (wrong,) = failed(checks.grey_image_bound(res, eps_keys=["0.5"]), "no certificate")
    assert wrong["flag"] == "unsound" and "1 of them" in wrong["detail"]
    res["grey_image"]["margin"] = 0.5 * grey.MIN_MARGIN  # its class is float noise
    assert checks.grey_image_bound(res, eps_keys=["0.5"]) == []


def test_the_grey_image_check_reads_the_exact_eps_not_its_rounded_key():
    # 0.4999996 is keyed "0.5": the grey image is then just outside the ball of an image
    # with a black pixel, and an example of another label may survive.
    res = result({"pgd": attack(cells={"0.5": mask({0, 5})})})
    res["attacks"]["pgd"]["cells"]["0.5"]["eps"] = 0.4999996
    res["grey_image"] = {"pixel": 0.5, "label": 7, "margin": 1.0,
                         "possible": outcomes.encode(mask({0, 1, 2}))}
    res["worst_case"] = outcomes.worst_case(res, ["0.5"])
    res["certified"] = {"0.5": certify.cell(mask({0, 5}), 0.0, 0.4999996)}
    assert outcomes.eps_key(0.4999996) == "0.5"
    assert checks.grey_image_bound(res, eps_keys=["0.5"]) == []
    # A certified cell alone (no attack cell at that key) carries the budget too.
    assert outcomes.exact_eps({"certified": res["certified"]}, "0.5") == 0.4999996
    assert outcomes.exact_eps({"attacks": {}}, "0.5") == 0.5  # an older report: the key
    for cell in (res["attacks"]["pgd"]["cells"]["0.5"], res["certified"]["0.5"]):
        cell["eps"] = 0.5
    assert len(failed(checks.grey_image_bound(res, eps_keys=["0.5"]), "")) == 2


def test_shards_grey_images_join_only_when_every_shard_saw_the_same_class():
    def entry(label, possible, margin=1.0):
        return {"grey_image": {"pixel": 0.5, "label": label, "margin": margin,
                               "possible": outcomes.encode(np.array(possible, bool))}}

    joined = grey.merged([entry(3, [1, 0], 0.2), entry(3, [0, 1, 1], 0.1)])
    np.testing.assert_array_equal(outcomes.decode(joined["possible"]), [1, 0, 0, 1, 1])
    assert joined["label"] == 3 and joined["margin"] == 0.1
    assert grey.merged([entry(3, [1]), entry(4, [1])]) is None
    assert grey.merged([entry(3, [1]), {}]) is None


def test_the_grey_image_class_is_the_models_and_marks_its_label():
    """A model whose logits ignore the input (zero weights, the bias favouring class 3)
    calls the grey image 3: exactly the examples labelled 3 may be robust at eps 0.5."""
    import keras

    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10, kernel_initializer="zeros")])
    model.layers[-1].bias.assign(np.eye(10, dtype=np.float32)[3])
    y = np.array([3, 1, 3, 0, 9])
    x = np.random.default_rng(0).random((5, 4, 4, 1)).astype(np.float32)
    measured = grey.measure(model, x, y)
    assert measured["label"] == 3 and measured["pixel"] == 0.5
    assert measured["margin"] == pytest.approx(1.0)
    np.testing.assert_array_equal(outcomes.decode(measured["possible"]), y == 3)
