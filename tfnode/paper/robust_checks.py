"""The robust comparison's checks of a row against itself (`tfnode.paper.robust`): the
full-settings spot check and the same weights re-solved.

A row's full-settings spot check (`spot`) is another audited report of its model over
fewer of the same first images, with stronger attack settings (more restarts, more
queries, a stronger transfer attack): per eps, the examples the comparison's own run
calls robust that the spot check breaks are robustness the cheaper settings
overstated. A row's model re-solved with other solver options (`resolved`: a finer
step, say; ``tools.evaluate --model_option=step_size=...``) is set beside the model as
trained, attack by attack: a gain that vanishes when the same weights are solved more
accurately is a sign of gradient masking. And a row's evaluations under the exhaustive
schedule (`monotone_lines`) show whether robust accuracy ever rises with eps, the sign
the fast schedule cannot show (it attacks each eps on the survivors of the one below).
"""

from tfnode import stats
from tfnode.evaluation import grey, outcomes
from tfnode.figures import pct_proportion, pvalue
from tfnode.paper.runs import options_text
from tfnode.paper.verdicts import robust_mask


def most_images(found):
    """The entry over the most images (the first of equals), or None."""
    return max(found, key=lambda f: f[0]["num_examples"]) if found else None


def mask(result, kind, key):
    """The examples of a model result robust under every attack (``kind`` ``"worst
    case"``) or certified (``"certified"``) at eps ``key``; None without the cell."""
    if kind == "certified":
        cell = (result.get("certified") or {}).get(key)
        return None if cell is None else outcomes.decode(cell["certified"])
    return robust_mask(result, "worst case", key)


def proportion(values):
    """`tfnode.stats.proportion` of a bool array; None for None."""
    return None if values is None else stats.proportion(int(values.sum()), values.size)


def first_images(report, of, *, fewer=True):
    """Whether ``report``'s images are the first of ``of``'s (both over the first
    images of one split, unsharded or merged, ``report`` over fewer, or as many where
    not ``fewer``)."""
    n, total = report["num_examples"], of["num_examples"]
    return (not report.get("shard") and not of.get("shard")
            and (n < total if fewer else n <= total)
            and all(report.get(k) == of.get(k) for k in ("dataset", "split", "eps_scale")))


def spot_check(found, attacked):
    """A row's spot check: of its other audited reports over the first images of the
    audited one's (`first_images`), with other attack settings, the one over the most
    images; None without one. Other, not necessarily stronger: the page prints the
    settings that changed (`settings_changed`) beside the result."""
    if attacked is None:
        return None
    report = attacked[0]
    return most_images([f for f in found if f[0] is not report and f[0].get("audit")
                         and f[0].get("attack_options") != report.get("attack_options")
                         and first_images(f[0], report)])


def spot(row):
    """A row's spot check against its audited run on the spot check's images: ``{"n",
    "settings", "cells": [{"eps", "run", "spot", "both", "overstated", "spot_only",
    "test", "verdict"}]}`` per eps below the grey image's (``run``/``spot``: the worst
    case of each, ``both``: robust under both, the tighter upper bound; ``overstated``:
    robust in the run, broken by the spot check), or None without a spot check."""
    if row.get("spot_result") is None:
        return None
    report, n = row["spot_report"], row["spot_report"]["num_examples"]
    cells = []
    for e in (e for e in report["eps"] if float(e) < grey.PIXEL):
        key = outcomes.eps_key(e)
        run, full = mask(row["result"], "worst case", key), mask(
            row["spot_result"], "worst case", key)
        if run is None or full is None:
            continue
        run = run[:n]
        test = stats.mcnemar(run, full)
        overstated = int((run & ~full).sum())
        verdict = (f"held: nothing more broken at n = {n}" if not overstated else
                   f"overstated by {overstated} of {n} images")
        cells.append({"eps": key, "run": proportion(run), "spot": proportion(full),
                      "both": proportion(run & full), "overstated": overstated,
                      "spot_only": int((full & ~run).sum()), "test": test,
                      "verdict": verdict})
    return {"n": n, "settings": settings_changed(row["report"].get("attack_options"),
                                                 report.get("attack_options")),
            "cells": cells}


def resolved(row):
    """The row's model as trained against its weights re-solved (``--model_option`` of
    ``tools.evaluate``: a finer step, a tighter tolerance), per re-solved report: ``{"n",
    "options", "cells": [{"attack", "eps", "trained", "resolved", "test", "p_holm",
    "verdict"}]}``, on the first ``n`` audited images, for every attack and eps below
    the grey image's the two runs share (an attack's own cells only, never one run on
    another's survivors), Holm-corrected per report. A robustness gain that vanishes
    when the same weights are solved more accurately is a sign of gradient masking
    (issue 29's list)."""
    out = []
    run = row["report"]
    for report, res in row.get("resolved") or ():
        n = report["num_examples"]
        cells = []
        # Only attacks run alike (options and seed): any other difference is not the solver's.
        for attack in (a for a in res["attacks"] if a in row["result"]["attacks"]
                       and report.get("seed") == run.get("seed")
                       and (report.get("attack_options") or {}).get(a)
                       == (run.get("attack_options") or {}).get(a)):
            for e in (e for e in report["eps"] if float(e) < grey.PIXEL):
                key = outcomes.eps_key(e)
                trained = robust_mask(row["result"], attack, key)
                again = robust_mask(res, attack, key)
                if trained is None or again is None:
                    continue
                trained = trained[:n]
                cells.append({"attack": attack, "eps": key, "trained": proportion(trained),
                              "resolved": proportion(again),
                              "test": stats.mcnemar(trained, again)})
        for cell, p in zip(cells, stats.holm([c["test"]["p_value"] for c in cells])):
            cell["p_holm"] = p
            diff = cell["test"]["difference"]
            cell["verdict"] = (stats.no_difference(n) if not stats.significant(p, diff)
                               else "less robust re-solved: the gain vanishes" if diff > 0
                               else "more robust re-solved")
        out.append({"n": n, "options": options_text(res["info"]["solver_options"]),
                    "cells": cells})
    return out


def settings_changed(before, after):
    """The attack options two runs set differently: ``"pgd_strong.restarts 2 -> 5,
    square.max_queries 1000 -> 5000"`` (``"-"`` for an option one run lacks; where the
    transfer attack itself changed, only that: its options are the new attack's)."""
    before, after = before or {}, after or {}
    changed = []
    for attack in sorted(set(before) | set(after)):
        a, b = before.get(attack) or {}, after.get(attack) or {}
        keys = sorted(set(a) | set(b))
        if a.get("attack") != b.get("attack"):
            keys = ["attack"]
        changed += [f"{attack}.{k} {a.get(k, '-')} -> {b.get(k, '-')}"
                    for k in keys if a.get(k) != b.get(k)]
    return ", ".join(changed) or "the same settings"


def audit_text(result):
    verdict = result.get("verdict")
    if not verdict:
        return "not audited"
    failed = sorted({f["check"] for f in result.get("checks", ()) if not f["passed"]})
    head = "masking suspected" if verdict["masking_suspected"] else "no masking flag"
    if verdict.get("not_converged"):
        head += f"; not converged at eps {', '.join(verdict['not_converged'])}"
    return head + (f" ({len(failed)} check(s) failed)" if failed else "")


def markdown_table(intro, columns, rows):
    """A paragraph and a markdown table of ``rows`` (lists of cell values) below it."""
    return ([intro, "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
            + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows] + [""])


def spot_lines(table):
    """The page's lines of every row's spot check (none without one)."""
    checked = [(row, spot(row)) for row in table if row.get("spot_result")]
    if not checked:
        return []
    cells = [[row["recipe"], row["name"], check["n"], check["settings"], c["eps"],
              pct_proportion(c["run"]), pct_proportion(c["spot"]), pct_proportion(c["both"]),
              c["overstated"], c["spot_only"], pvalue(c["test"]["p_value"]), c["verdict"]]
             for row, check in checked for c in check["cells"]]
    return markdown_table(
        "The full-settings spot checks: each model's audit rerun with stronger settings on "
        "the first images of its run; per eps the worst case of each on those images, the "
        "examples the run calls robust that the spot check breaks (robustness the cheaper "
        "settings overstated), and the exact McNemar p of the two:",
        ["recipe", "model", "n", "settings", "eps", "run (%)", "spot check (%)", "both (%)",
         "run only", "spot only", "p", "verdict"], cells) + [
        f"- {row['recipe']}, {row['name']}, the spot check's own audit: "
        f"{audit_text(row['spot_result'])}" for row, _ in checked] + [""]


def resolved_lines(table):
    """The page's lines of every row's re-solved runs (none without one)."""
    solved = [(row, check) for row in table for check in resolved(row)]
    if not solved:
        return []
    cells = [[row["recipe"], row["name"], check["options"], check["n"], c["attack"], c["eps"],
              pct_proportion(c["trained"]), pct_proportion(c["resolved"]),
              c["test"]["a_only"], c["test"]["b_only"], pvalue(c["p_holm"]), c["verdict"]]
             for row, check in solved for c in check["cells"]]
    return markdown_table(
        "The same weights re-solved (`tools.evaluate --model_option=...`, e.g. a finer "
        "step): per attack both runs share, the examples robust as trained and as "
        "re-solved, on the same images (exact McNemar, Holm-corrected per re-solved run); "
        "a gain that vanishes when solved more accurately is a sign of gradient masking:",
        ["recipe", "model", "re-solved with", "n", "attack", "eps", "as trained (%)",
         "re-solved (%)", "trained only", "re-solved only", "p (Holm)", "verdict"], cells)


def monotone_lines(table):
    """The page's lines of every row's exhaustive-schedule evaluations: per attack, the
    check `robust accuracy does not rise with eps` (none without such a run)."""
    found = [(row, report, f) for row in table for report, res in row.get("exhaustive") or ()
             for f in res.get("checks", ()) if f["check"].endswith("does not rise with eps")]
    if not found:
        return []
    return ["Robust accuracy against eps under the exhaustive schedule (every attack on "
            "every image at every eps; rising with eps is a sign of gradient masking or of "
            "an attack that does not converge):", ""] + [
        f"- {row['recipe']}, {row['name']} ({report['num_examples']} images): "
        f"{'PASS' if f['passed'] else 'FAIL'}: {f['check']} ({f['detail']})"
        for row, report, f in found] + [""]
