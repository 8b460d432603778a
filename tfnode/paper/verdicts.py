"""What the measured numbers say about the paper's claims (Chu et al. 2020).

`judge` holds every declared claim (`tfnode.paper.claims`) against the runs it names,
by one rule: per primary cell (eps) the exact McNemar test of the two models on the same
images, Holm-corrected across the claim's eps; a cell is "supported" or "contradicted"
only where the corrected p is below 0.05 and every seed run's difference has the same
sign, otherwise "no difference measurable at n = ..."; a run's verdict is its cells'
(one direction, else "mixed"). `clean_warnings` names the models whose robust
accuracies are not comparable with the others' for want of clean accuracy.
"""

import os

import numpy as np

from tfnode import models, stats
from tfnode.errors import TfnodeError
from tfnode.evaluation import outcomes
from tfnode.figures import pct
from tfnode.paper import claims as claims_lib
from tfnode.paper.runs import joint_report, run_name, trained_info


def is_ode(result):
    """Whether a report's model has ODE blocks (its info lists them)."""
    return bool((result.get("info") or {}).get("ode_blocks"))


def clean_warnings(gathered, *, margin=0.05):
    """Models whose clean accuracy is more than ``margin`` below the best undefended
    model of the same dataset on the page: robustness compared at a lower clean accuracy
    says little (a model that did not learn is "robust" to nothing)."""
    best = {}
    for m in gathered["training"]:
        if not m.get("defense"):
            best[m["dataset"]] = max(best.get(m["dataset"], 0.0), m["clean_accuracy"])
    out = []
    for m in gathered["training"]:
        top = best.get(m["dataset"])
        if top is not None and m["clean_accuracy"] < top - margin:
            out.append(f"`{os.path.dirname(m['_path'])}` ({m['model']}"
                       + (f", {m['defense']}" if m.get("defense") else "")
                       + f"): clean {pct(m['clean_accuracy'])}%, more than "
                       f"{100 * margin:g} points below the best undefended {m['dataset']} "
                       f"model here ({pct(top)}%); its robust accuracies are not comparable "
                       "with the others'.")
    return out


def _defaults(model):
    """Model ``model``'s default options (a run records only the options it was given)."""
    try:
        return models.model_options(model) if model else {}
    except TfnodeError:  # A model registered by a user's code this process lacks.
        return {}


def _step_size(result):
    trained = trained_info(result)
    return {**_defaults(trained.get("model")),
            **(trained.get("model_options") or {})}.get("step_size")


def pair(report, comparison):
    """``(label_a, label_b)``: the model the claim says is more robust, and the other;
    None if the report does not hold such a pair.

    ``"ode_vs_other"``: the first ODE model and the first model without ODE blocks;
    ``"small_h_vs_large_h"``: the models with the smallest and the largest step size.
    """
    labels = list(report["models"])
    if comparison == "ode_vs_other":
        odes = [lb for lb in labels if is_ode(report["models"][lb])]
        others = [lb for lb in labels if not is_ode(report["models"][lb])]
        return (odes[0], others[0]) if odes and others else None
    sized = [(h, lb) for lb in labels
             for h in [_step_size(report["models"][lb])] if h is not None]
    if len({h for h, _ in sized}) < 2:
        return None
    return min(sized)[1], max(sized)[1]


def robust_mask(result, attack, key):
    """The examples robust in ``attack``'s cell at eps ``key`` (``"worst case"``: under
    every attack of the run); None where the run has no such cell."""
    if attack == "worst case":
        wc = (result.get("worst_case") or {}).get(key)
        return None if wc is None else outcomes.worst_case_mask(result, wc["attacks"], key)
    entry = result["attacks"].get(attack) or {}
    if (entry.get("meta") or {}).get("survivors_of"):
        return None  # run on other attacks' survivors: its cells are not its own
    cell = (entry.get("cells") or {}).get(key)
    return None if cell is None else outcomes.decode(cell["robust"])


def model_ref(report, label):
    """A model's path and weights' fingerprint: the name no other model can share."""
    info = report["models"][label].get("info") or {}
    return f"{info.get('path', label)} @{info.get('fingerprint', '?')}"


def _differences(report, comparison, attack, keys):
    """``{eps key: robust accuracy of a - of b}`` of a seed run (None: no such pair)."""
    labels = pair(report, comparison)
    if labels is None:
        return None
    out = {}
    for key in keys:
        a, b = (robust_mask(report["models"][lb], attack, key) for lb in labels)
        if a is not None and b is not None:
            out[key] = float(a.mean() - b.mean())
    return out


def _cell_verdict(p_holm, difference, seeds, n):
    """One primary cell's verdict (see the module docstring)."""
    if not stats.significant(p_holm, difference):
        return stats.no_difference(n)
    sign = np.sign(difference)
    if any(np.sign(d) != sign for d in seeds):
        return "seeds disagree"
    return "supported" if sign > 0 else "contradicted"


def _overall(verdicts, n):
    directions = {v for v in verdicts if v in ("supported", "contradicted", "seeds disagree")}
    if not directions:
        return stats.no_difference(n)
    return directions.pop() if len(directions) == 1 else "mixed"


def _judge_run(claim, report, seed_reports):
    if claim.attacks_compared:  # two attacks on the run's ODE model
        odes = [lb for lb, res in report["models"].items() if is_ode(res)]
        if not odes:
            return None
        labels = (odes[0], odes[0])
        attack_a, attack_b = claim.attacks_compared
    else:
        labels = pair(report, claim.comparison)
        attack_a = attack_b = claim.attack
    if labels is None:
        return None
    a_label, b_label = labels
    a_res, b_res = report["models"][a_label], report["models"][b_label]
    cells = []
    for key in claim.primary_eps:
        a, b = robust_mask(a_res, attack_a, key), robust_mask(b_res, attack_b, key)
        if a is None or b is None:
            continue
        cells.append({"eps": key, "a": stats.proportion(int(a.sum()), a.size),
                      "b": stats.proportion(int(b.sum()), b.size), "test": stats.mcnemar(a, b)})
    for cell, p in zip(cells, stats.holm([c["test"]["p_value"] for c in cells])):
        cell["p_holm"] = p
        cell["seeds"] = [d[cell["eps"]] for d in (
            _differences(r, claim.comparison, claim.attack, [cell["eps"]]) or {}
            for r in seed_reports) if cell["eps"] in d]
        cell["verdict"] = _cell_verdict(p, cell["test"]["difference"], cell["seeds"],
                                        cell["test"]["n"])
    n = report["num_examples"]
    if claim.attacks_compared:
        a_label, b_label = (f"{a_label} {attack_a}", f"{b_label} {attack_b}")
    out = {"run": os.path.dirname(report["_path"]), "a": a_label, "b": b_label,
           "a_ref": model_ref(report, labels[0]), "b_ref": model_ref(report, labels[1]),
           "n": n, "attacks": outcomes.budget_attacks(a_res), "cells": cells,
           "seed_runs": [os.path.dirname(r["_path"]) for r in seed_reports],
           "verdict": _overall([c["verdict"] for c in cells], n)}
    if claim.distances:
        d = _distance_test(report, claim.attack, *labels)
        if d:  # farther adversarials: more robust, the direction the claim predicts
            d["verdict"] = _cell_verdict(d["p_value"], d["median_difference"] or 0.0, [],
                                         d["n"])
        out["distances"] = d
    return out


def _distance_test(report, attack, a_label, b_label):
    """The paired Wilcoxon test of the attack's per-example L2 distances, over the
    examples clean-correct for both where both have an adversarial (from the report's
    per-example arrays)."""
    from tfnode.evaluation import arrays as arrays_lib

    path = os.path.join(os.path.dirname(report["_path"]), arrays_lib.FILE)
    if not os.path.isfile(path):
        return None
    arrays = arrays_lib.load(path)
    found = {lb: arrays[lb][(attack, "summary")] for lb in (a_label, b_label)}
    both = found[a_label]["found"] & found[b_label]["found"]
    return {**stats.wilcoxon(found[a_label]["l2"][both], found[b_label]["l2"][both]),
            "found_a": int(found[a_label]["found"].sum()),
            "found_b": int(found[b_label]["found"].sum())}


def _load_json(path):
    import json

    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _no_gain_verdict(cells, n):
    """A "no gain" claim: contradicted by any cell where the smaller h is significantly
    more robust; supported where some are significantly less robust and none more."""
    signs = {np.sign(c["test"]["difference"]) for c in cells
             if stats.significant(c["p_holm"], c["test"]["difference"])}
    if 1 in signs:
        return "contradicted"
    return "supported" if -1 in signs else stats.no_difference(n)


def _judge_sweep(claim, sweep):
    """Sec. 4.1's claim on a step-size sweep (`tfnode.paper.step_sizes`): every member
    against the h = 1 member on the same images, by exact McNemar tests, robustness per
    eps (``claim.attack``'s cells) and clean accuracy, each family Holm-corrected.

    Robustness ("no obvious gain"): `_no_gain_verdict`. Training ("a very small h trains
    badly"): supported where the smallest h's clean accuracy is significantly below
    h = 1's, contradicted where above.
    """
    rows = []
    for row in sweep["members"]:
        report = _load_json(os.path.join(sweep["_run"], "members", row["name"], "eval",
                                         "report.json"))
        if report is None:
            return None
        ((label, result),) = report["models"].items()
        rows.append({"h": float(row["step_size"]), "result": result,
                     "ref": f"{(result.get('info') or {}).get('path', label)} "
                            f"@{(result.get('info') or {}).get('fingerprint', '?')}",
                     "n": report["num_examples"]})
    rows.sort(key=lambda r: -r["h"])
    if not rows or rows[0]["h"] != 1.0 or len(rows) < 2:
        return None
    base, others = rows[0], rows[1:]
    base_clean = outcomes.decode(base["result"]["clean_correct"])
    cells, clean = [], []
    for row in others:
        correct = outcomes.decode(row["result"]["clean_correct"])
        clean.append({"h": row["h"], "ref": row["ref"],
                      "a": stats.proportion(int(correct.sum()), correct.size),
                      "test": stats.mcnemar(correct, base_clean)})
        for key in claim.primary_eps:
            a = robust_mask(row["result"], claim.attack, key)
            b = robust_mask(base["result"], claim.attack, key)
            if a is not None and b is not None:
                cells.append({"h": row["h"], "eps": key,
                              "a": stats.proportion(int(a.sum()), a.size),
                              "b": stats.proportion(int(b.sum()), b.size),
                              "test": stats.mcnemar(a, b)})
    for family in (cells, clean):
        for entry, p in zip(family, stats.holm([e["test"]["p_value"] for e in family])):
            entry["p_holm"] = p
            difference = entry["test"]["difference"]
            entry["verdict"] = (("more" if difference > 0 else "less") + " than at h = 1"
                                if stats.significant(p, difference) else
                                stats.no_difference(entry["test"]["n"]))
    n = base["n"]
    smallest = clean[-1]
    if stats.significant(smallest["p_holm"], smallest["test"]["difference"]):
        training = "supported" if smallest["test"]["difference"] < 0 else "contradicted"
    else:
        training = stats.no_difference(n)
    base_correct = stats.proportion(int(base_clean.sum()), base_clean.size)
    return {"sweep": True, "run": sweep["_run"], "n": n, "attack": claim.attack,
            "b_ref": base["ref"], "b_clean": base_correct, "cells": cells, "clean": clean,
            "robustness": _no_gain_verdict(cells, n), "training": training,
            "seed_runs": [], "verdict": None}


def runs_by_name(gathered):
    """``({run name: report}, {joint run names that do not join})``: the gathered
    evaluations by the names claims declare (the first of a name wins), with every
    declared joint run ``"a+b"`` whose parts are gathered (`joint_report`)."""
    by_name = {}
    for report in gathered["evaluations"]:
        by_name.setdefault(run_name(report), report)
    unjoined = set()
    for claim in claims_lib.CLAIMS:  # "a+b": the worst case over runs a and b together
        for name in claim.runs:
            parts = name.split(claims_lib.JOINT)
            if len(parts) > 1 and all(p in by_name for p in parts):
                joint = joint_report([by_name[p] for p in parts])
                if joint is None:
                    unjoined.add(name)
                else:
                    by_name[name] = joint
    return by_name, unjoined


def judge(gathered):
    """Every declared claim held against the gathered runs it names.

    Returns:
      ``[{"claim": Claim, "runs": [run result], "missing": [run names not gathered]}]``
      in the order of `tfnode.paper.claims.CLAIMS`; a run result has its declared
      ``name`` (``"a+b"`` for a joint run, `joint_report`), the two models
      (``a``: the one the claim says is more robust), their references, ``n``, the
      primary ``cells`` (each with both proportions, the McNemar test, the Holm-
      corrected p, the seed runs' differences and its verdict) and the run's
      ``verdict``; ``unjoined`` names the joint runs whose parts do not hold the same
      models on the same dataset split.
    """
    by_name, unjoined = runs_by_name(gathered)
    sweeps = {}
    for sweep in gathered.get("sweeps", ()):
        sweeps.setdefault(os.path.basename(os.path.normpath(sweep["_run"])), sweep)
    out = []
    for claim in claims_lib.CLAIMS:
        judged = []
        for name in claim.runs:
            if claim.comparison == "sweep":
                result = name in sweeps and _judge_sweep(claim, sweeps[name])
                if result:
                    judged.append({**result, "name": name})
                continue
            result = name in by_name and _judge_run(
                claim, by_name[name], [by_name[seed] for run, seed in claim.seed_runs
                                       if run == name and seed in by_name])
            if result:
                judged.append({**result, "name": name})
        declared = [part for name in claim.runs for part in name.split(claims_lib.JOINT)]
        declared += [seed for _, seed in claim.seed_runs]
        known = sweeps if claim.comparison == "sweep" else by_name
        out.append({"claim": claim, "runs": judged,
                    "unjoined": [name for name in claim.runs if name in unjoined],
                    "missing": [name for name in dict.fromkeys(declared)
                                if name not in known]})
    return out
