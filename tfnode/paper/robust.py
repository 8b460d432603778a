"""The robust comparison (docs/robust.md): per training recipe, the ODE-Net beside the
ResNet, bracketed between a certificate and an attack.

A row is a model trained with a defense or a regularizer (its export's ``metrics.json``
among the gathered runs) and, once evaluated, the evaluation reports that hold it (a
model at the row's folder, or with the row's weights' fingerprint): its audited report
over the most images, and its unsharded report over the most images for the clean
predictions. A recipe is the defense and the regularizer with all their options; within
one recipe every ODE-Net is compared with every model without ODE blocks: on the first
images of the split both were evaluated on whole, the exact two-sided McNemar test of
the clean predictions; on the audited images both share (the same shard, or the
first images of the one audited on fewer), per eps below 0.5, that of the
per-example worst case over every attack of the audit (an upper bound of the true
robust accuracy) and of the interval-bound certificate (a lower bound). The p-values of
one pair, the clean test among them, are Holm-corrected together. A cell names a winner
only where the corrected p is below 0.05; otherwise it says no difference is measurable
at that n.
Each row is also checked against itself (`tfnode.paper.robust_checks`): its
full-settings spot check and its weights re-solved; and against the rows of its model
one setting away (`tfnode.paper.robust_changes`): what a stretch row's change buys.
"""

import os

from tfnode import stats
from tfnode.evaluation import outcomes
from tfnode.figures import pct_proportion, pvalue
from tfnode.paper import robust_changes as changes, robust_checks as checks
from tfnode.paper.runs import options_text
from tfnode.paper.verdicts import is_ode

# What each recipe is held against: published, larger models and budgets; reference
# points to report beside the rows, never a target to tune toward.
REFERENCES = (
    "Fast adversarial training (FGSM with a random start), MNIST, eps 0.3: about 83% "
    "robust accuracy at clean accuracy >= 98.5% (Wong, Rice & Kolter, \"Fast is better "
    "than free\", ICLR 2020; the figures as issue 29 quotes them).",
    "IBP certified training, MNIST: 90% and more certified at eps 0.1 (Gowal et al., \"On "
    "the Effectiveness of Interval Bound Propagation\", 2018; as issue 29 quotes it).",
)


def is_robust_row(metrics):
    """Whether a training run belongs to the comparison: trained with a defense or a
    regularizer."""
    return bool(metrics.get("defense") or metrics.get("regularizer"))


def recipe(metrics):
    """A row's recipe: ``"fgsm_rs, eps 0.3"``, ``"pgd_at, eps 0.1 + kinetic_jacobian"``."""
    defense = metrics.get("defense")
    text = defense or "no defense"
    eps = (metrics.get("defense_options") or {}).get("eps")
    if defense and eps is not None:
        text += f", eps {eps:g}"
    if metrics.get("regularizer"):
        text += f" + {metrics['regularizer']}"
    return text


def recipe_key(metrics):
    """What two rows must share to be paired: the defense and the regularizer with every
    option of each (``recipe`` shows the short form)."""
    return (metrics.get("defense"), sorted((metrics.get("defense_options") or {}).items()),
            metrics.get("regularizer"),
            sorted((metrics.get("regularizer_options") or {}).items()))


def _partners(ode, table):
    """The rows without ODE blocks an ODE-Net is paired with: those of its recipe; where
    there are none and its recipe adds a regularizer (a stretch row that regularizes the
    ODE function alone), those of its recipe without it, the comparison it is for."""
    others = [r for r in table if not r["ode"]]
    base = recipe_key({**ode["metrics"], "regularizer": None, "regularizer_options": None})
    return ([r for r in others if r["key"] == ode["key"]]
            or [r for r in others if r["key"] == base])


def _results_of(metrics, evaluations):
    """Every ``(report, model result)`` of the row's model: the report's model at the
    row's folder (the same file by any path) or with the row's weights' fingerprint (a
    copy evaluated elsewhere), as trained or re-solved with other solver options."""
    run, fingerprint = os.path.realpath(metrics["_run"]), metrics.get("fingerprint")
    found = []
    for report in evaluations:
        for res in report["models"].values():
            info = res.get("info") or {}
            if ((info.get("path") and os.path.realpath(info["path"]) == run)
                    or (fingerprint and info.get("fingerprint") == fingerprint)):
                found.append((report, res))
    return found


def _attacked(found):
    """The comparison's evaluation of a row: of those that ran the audit, the one over
    the most images (a merged report before its shards); None without one."""
    return checks.most_images([f for f in found if f[0].get("audit")])


def _clean(found):
    """The evaluation whose clean predictions pair a row's clean accuracy: the one over
    the most images, not a shard (a run over the whole test split); None without one."""
    return checks.most_images([f for f in found if not f[0].get("shard")])


def rows(gathered):
    """The comparison's rows, in the gathered order: ``{"recipe", "key", "name",
    "metrics", "report", "result", "ode", "clean_report", "clean_result",
    "spot_report", "spot_result", "resolved", "exhaustive"}`` (``report``/``result`` the
    audited evaluation, `_attacked`, ``clean_*`` the one whose clean predictions are
    paired, `_clean`, ``spot_*`` its full-settings spot check,
    `tfnode.paper.robust_checks.spot_check`; None where there is none; ``resolved``: the
    ``(report, result)`` of the same weights re-solved with other solver options on the
    first of the audited images; ``exhaustive``: its evaluations under the exhaustive
    schedule, which `tfnode.paper.robust_checks.monotone_lines` reads)."""
    out = []
    for metrics in gathered["training"]:
        if not is_robust_row(metrics):
            continue
        everything = _results_of(metrics, gathered["evaluations"])
        # A re-solved run is not the row's model as trained: only `resolved` reads it.
        found = [f for f in everything if not f[1]["info"].get("solver_options")]
        attacked = _attacked(found)
        report, result = attacked or (None, None)
        spot_report, spot_result = checks.spot_check(found, attacked) or (None, None)
        clean_report, clean_result = _clean(found) or (None, None)
        finer = [f for f in everything if f[1]["info"].get("solver_options")
                 and report and checks.first_images(f[0], report, fewer=False)]
        exhaustive = [f for f in found if f[0].get("schedule") == "exhaustive"]
        held = result or clean_result
        ode = is_ode(held) if held else metrics.get("mean_nfe_test") is not None
        out.append({"recipe": recipe(metrics), "key": recipe_key(metrics),
                    "metrics": metrics, "report": report, "result": result, "ode": ode,
                    "clean_report": clean_report, "clean_result": clean_result,
                    "spot_report": spot_report, "spot_result": spot_result,
                    "resolved": finer, "exhaustive": exhaustive})
    for row in out:
        row["name"] = _name(row, out)
    return out


def pairs(table):
    """Every ODE-Net against every model without ODE blocks it is paired with
    (`_partners`) where they can be: ``{"ode", "other", "n", "cells": [{"kind",
    "eps", "n", "ode", "other", "test", "p_holm", "verdict"}]}`` (``n``: the audited
    images both share, None if they share none; the cells are
    `tfnode.paper.robust_changes.paired_cells`)."""
    out = []
    for ode in (r for r in table if r["ode"]):
        for other in _partners(ode, table):
            cells, n = changes.paired_cells(ode, other)
            if not cells:
                continue
            for cell in cells:
                cell["verdict"] = _verdict(cell["p_holm"], cell, ode, other)
            out.append({"ode": ode, "other": other, "cells": cells,
                        "n": n or None})
    return out


def _name(row, table):
    """``"node (ODE-Net)"``, ``"resnet"``; where another row of the recipe has the same
    model, with the model options that tell them apart (``resnet [width=19]`` beside
    ``resnet [width=32]``; ``no lipschitz`` where the row lacks an option a twin has), or
    its export's folder where the options are the same too (two seeds)."""
    def short(r):
        return r["metrics"]["model"] + (" (ODE-Net)" if r["ode"] else "")

    def options(r):
        return r["metrics"].get("model_options") or {}

    twins = [r for r in table if r is not row and r["key"] == row["key"]
             and short(r) == short(row)]
    if not twins:
        return short(row)
    mine = options(row)
    if any(options(r) == mine for r in twins):
        folder = os.path.dirname(os.path.normpath(row["metrics"]["_run"]))
        return f"{short(row)} [{os.path.basename(folder)}]"
    differing = sorted({k for r in twins for k in {*options(r), *mine}
                        if options(r).get(k) != mine.get(k)})
    text = ", ".join(f"{k}={mine[k]}" if k in mine else f"no {k}" for k in differing)
    return f"{short(row)} [{text}]"


def _verdict(p_holm, cell, ode, other):
    test = cell["test"]
    if not stats.significant(p_holm, test["difference"]):
        return stats.no_difference(test["n"])
    better = "more accurate" if cell["kind"] == "clean" else "more robust"
    return f"{(ode if test['difference'] > 0 else other)['name']} {better}"


def _bound_text(cell, n):
    """A pair's cell kind, with its images where they are not the pair's."""
    return cell["kind"] + (f" ({cell['n']:,} images)" if cell["n"] != n else "")


def _n_text(report):
    """The images a report attacked: ``100``, or ``100 (shard 0 of 5)``, the first
    examples of that shard of the run's images."""
    shard = report.get("shard")
    return f"{report['num_examples']}" + (
        f" (shard {shard['index']} of {shard['count']})" if shard else "")


def _keys(table):
    keys = []
    for row in table:
        for e in (row["report"] or {}).get("eps", ()):
            key = outcomes.eps_key(e)
            if key not in keys:
                keys.append(key)
    return sorted(keys, key=float)


def _pair_lines(compared):
    """The page's lines of the paired tests (none without a pair)."""
    if not compared:
        return []
    return checks.markdown_table(
        "Paired on the same images (exact two-sided McNemar test, Holm-corrected over each "
        "pair's cells):",
        ["recipe", "pair", "bound", "eps", "ODE-Net (%)", "other (%)", "ODE-Net only",
         "other only", "p", "p (Holm)", "verdict"],
        [[pair["ode"]["recipe"], f"{pair['ode']['name']} vs {pair['other']['name']}",
          _bound_text(c, pair["n"]), c["eps"], pct_proportion(c["ode"]),
          pct_proportion(c["other"]), c["test"]["a_only"], c["test"]["b_only"],
          pvalue(c["test"]["p_value"]), pvalue(c["p_holm"]), c["verdict"]]
         for pair in compared for c in pair["cells"]])


def _costs(report, result):
    """``(evaluation minutes, certificate seconds)`` of an audited evaluation: its wall
    time, summed over the shards of a merged one, and its certificate's over every eps
    (None without one)."""
    wall = sum(s["wall_seconds"] for s in report["shards"]) if report.get("shards") \
        else report.get("wall_seconds", 0)
    certified = (result.get("certified") or {}).values()
    return wall / 60, (sum(c.get("seconds", 0) for c in certified) if certified else None)


def _row_lines(table, keys, fingerprints):
    """The page's table of rows: each model's training, bounds and audit."""
    columns = (["recipe", "model", "options", "params", "train min", "clean (%)", "n"]
               + [f"worst case eps {k}" for k in keys] + [f"certified eps {k}" for k in keys]
               + ["audit", "eval min", "certify s", "model file"])
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for row in sorted(table, key=lambda r: (r["recipe"], not r["ode"])):
        m, res = row["metrics"], row["result"]
        n = 10000  # tools.train tests on the whole test split
        clean = pct_proportion(stats.proportion(round(m["clean_accuracy"] * n), n))
        cells = []
        for kind in ("worst case", "certified"):
            cells += [pct_proportion(checks.proportion(checks.mask(res, kind, k)))
                      if res else "-" for k in keys]
        fp = (fingerprints or {}).get(os.path.normpath(m["_run"]))
        minutes, certify = _costs(row["report"], res) if res else (None, None)
        cost = "- | - | " if minutes is None else (
            f"{minutes:.1f} | " + ("- | " if certify is None else f"{certify:.1f} | "))
        lines.append(
            f"| {row['recipe']} | {row['name']} | {options_text(m.get('model_options') or {})} "
            f"| {m.get('num_params', 0):,} | {m.get('train_seconds', 0) / 60:.1f} | {clean} | "
            f"{_n_text(row['report']) if res else '-'} | "
            + "".join(f"{c} | " for c in cells)
            + f"{checks.audit_text(res) if res else 'no audited evaluation yet'} | "
            + cost + f"`{m['_run']}`"
            + (f" @{fp}" if fp else "") + " |")
    lines.append("")
    return lines


def section(gathered, fingerprints=None):
    """The comparison's markdown lines; empty without a robust row."""
    table = rows(gathered)
    if not table:
        return []
    keys = _keys(table)
    lines = ["## The robust comparison", "",
             "Per training recipe, each model's clean accuracy on the whole test split (as "
             "its training run measured it), then on the evaluation's images the "
             "per-example worst case over every attack of the audit (an upper bound of "
             "the true robust accuracy) and the examples certified by interval bound "
             "propagation (a lower bound): certified <= robust <= worst case (%, 95% "
             "Wilson intervals). Parameters and training time (minutes of wall time on "
             "the 2-core machine that trained it) beside each row, and what its audited "
             "evaluation cost: its wall time (summed over shards) and, of it, the "
             "certificate's (every eps).", ""]
    lines += _row_lines(table, keys, fingerprints)
    lines += _pair_lines(pairs(table)) + changes.change_lines(table)
    lines += (checks.spot_lines(table) + checks.resolved_lines(table)
              + checks.monotone_lines(table))
    flagged = [(row, f) for row in table if row["result"]
               for f in row["result"].get("checks", ()) if not f["passed"]]
    if flagged:
        lines += ["The audit's failed checks (the signs of gradient masking and of "
                  "unconverged attacks, each row's own):", ""]
        lines += [f"- {row['recipe']}, {row['name']}: {f['check']}"
                  + (f" (eps {f['eps']})" if f.get("eps") else "") + f": {f['detail']}"
                  for row, f in flagged] + [""]
    lines += ["Reference points (not targets):", ""] + [f"- {r}" for r in REFERENCES] + [""]
    return lines
