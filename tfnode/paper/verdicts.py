"""What the measured numbers say about the paper's claims (Chu et al. 2020).

`claims` judges the paper's two claims (ODE-Nets are more robust than ResNets; a smaller
step size h makes a ResNet more robust) from the gathered runs (`tfnode.paper.runs`),
naming the run behind every verdict; `clean_warnings` names the models whose robust
accuracies are not comparable with the others' for want of clean accuracy.
"""

import os

from tfnode import models
from tfnode.errors import TfnodeError
from tfnode.figures import pct
from tfnode.paper.runs import model_name, options_text, trained_info


def _is_ode(result):
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


def _step_size_families(evaluations):
    """Evaluated models that differ only in their step size h, evaluated alike
    (adversarially trained models excluded).

    Returns:
      ``{(model, other options, attacks, num_examples): [(h, [(worst case by eps key,
      run folder), ...]), ...]}`` sorted by h, only groups with at least two step sizes.
    """
    groups = {}
    for report in evaluations:
        for label, res in report["models"].items():
            trained = trained_info(res)
            options = {**_defaults(trained.get("model")), **(trained.get("model_options") or {})}
            wc = res.get("worst_case") or {}
            if options.get("step_size") is None or not wc or trained.get("defense"):
                continue
            h = options.pop("step_size")
            key = (model_name(res, label), options_text(options), tuple(res["attacks"]),
                   report["num_examples"])
            groups.setdefault(key, {}).setdefault(h, []).append(
                ({k: v["robust_accuracy"] for k, v in wc.items()},
                 os.path.dirname(report["_path"])))
    return {k: [(h, v[h]) for h in sorted(v)] for k, v in groups.items() if len(v) > 1}


def _verdict(support, contradict):
    """A claim's verdict from the cells that support it and those that contradict it."""
    return ("contradicted" if contradict and not support else "supported"
            if support and not contradict else "mixed" if support else
            "neither (equal everywhere)")


def _step_size_line(model, attacks, n, smaller, larger):
    """One claim-2 line: ``smaller``/``larger`` are (h, worst case by eps key, run)."""
    (hs, small, small_run), (hl, large, large_run) = smaller, larger
    keys = [k for k in small if k in large]
    verdict = _verdict([k for k in keys if small[k] > large[k]],
                       [k for k in keys if small[k] < large[k]])
    return (f"   - {model}, h {hs:g} (`{small_run}`) against h {hl:g} (`{large_run}`), "
            f"worst case over {', '.join(attacks)} on {n} images: **{verdict}** ("
            + "; ".join(f"eps {k}: {pct(small[k])} vs {pct(large[k])}" for k in keys)
            + ").")


def claims(gathered):
    """What the measured numbers say about the paper's two claims; a list of lines.

    1. ODE-Nets are more robust than ResNets (Chu et al. 2020, Sec. 4.2): in every
       evaluation with an ODE model and a model without ODE blocks, each attack's (and
       the worst case's) robust accuracy at each eps, ODE against the other.
    2. A smaller step size h makes a ResNet more robust (Sec. 4.1): in every sweep, the
       smallest h against h = 1 (or the largest h) at each eps.
    """
    lines = ["1. *ODE-Nets are more robust than ResNets* (Sec. 4.2)."]
    compared = False
    for report in gathered["evaluations"]:
        models = report["models"]
        odes = [(lb, r) for lb, r in models.items() if _is_ode(r)]
        others = [(lb, r) for lb, r in models.items() if not _is_ode(r)]
        for (ol, ode), (rl, res) in ((o, r) for o in odes for r in others):
            compared = True
            support, contradict = [], []
            rows = [(n, a.get("cells", {}), res["attacks"].get(n, {}).get("cells", {}))
                    for n, a in ode["attacks"].items()]
            rows.append(("worst case", ode.get("worst_case") or {}, res.get("worst_case") or {}))
            for name, mine, theirs in rows:
                for key in mine:
                    if key not in theirs or "robust_accuracy" not in mine[key]:
                        continue
                    a, b = mine[key]["robust_accuracy"], theirs[key]["robust_accuracy"]
                    if a != b:
                        (support if a > b else contradict).append(
                            f"{name} eps {key}: {pct(a)} vs {pct(b)}")
            verdict = _verdict(support, contradict)
            lines.append(f"   - `{os.path.dirname(report['_path'])}`, {model_name(ode, ol)} vs "
                         f"{model_name(res, rl)}: **{verdict}**; ODE-Net higher at "
                         f"{len(support)} cells, lower at {len(contradict)}"
                         + (f" (lower: {'; '.join(contradict[:6])}"
                            + (", ..." if len(contradict) > 6 else "") + ")"
                            if contradict else "") + ".")
    if not compared:
        lines.append("   - no run evaluates an ODE model beside a model without ODE blocks.")
    lines.append("2. *A smaller step size h makes a ResNet more robust* (Sec. 4.1).")
    families = _step_size_families(gathered["evaluations"])
    if not gathered["sweeps"] and not families:
        lines.append("   - no step-size sweep among the runs.")
    for (model, _, attacks, n), members in families.items():
        (hs, smalls), (hl, larges) = members[0], members[-1]
        for small in smalls:
            for large in larges:
                lines.append(_step_size_line(model, attacks, n, (hs, *small), (hl, *large)))
    for sweep in gathered["sweeps"]:
        rows = sorted(sweep["members"], key=lambda r: r["step_size"])
        if len(rows) < 2:
            continue
        small, large = rows[0], rows[-1]
        diffs = {k: small["robust_accuracy"][k] - large["robust_accuracy"][k]
                 for k in small["robust_accuracy"]}
        up = [k for k, d in diffs.items() if d > 0]
        verdict = ("supported" if len(up) == len(diffs) else "contradicted" if not up
                   else "mixed")
        lines.append(
            f"   - `{os.path.dirname(sweep['_path'])}`: h {small['step_size']:g} against h "
            f"{large['step_size']:g}: **{verdict}** ("
            + "; ".join(f"eps {k}: {pct(small['robust_accuracy'][k])} vs "
                        f"{pct(large['robust_accuracy'][k])}" for k in diffs)
            + f"; clean {pct(small['clean_accuracy'])} vs {pct(large['clean_accuracy'])}).")
    return lines
