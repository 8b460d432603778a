"""Two rows of the robust comparison paired on the same images (`paired_cells`), and the
pairs a stretch row is for: each row against the rows of the same model that differ from
it in exactly one setting (`changes`).

A stretch row (docs/robust.md) is a row with one change: a regularizer added, a model
option (``lipschitz=spectral``), another defense at the same eps (TRADES for PGD-AT). Its
question is whether the change buys anything over the row it changes, on the same images:
the exact McNemar test of the clean predictions and, per eps below 0.5, of the per-example
worst case and of the certificate, Holm-corrected over the pair's cells, as the ODE-Net
against the ResNet of its recipe (`tfnode.paper.robust.pairs`).
"""

from tfnode import stats
from tfnode.evaluation import grey, outcomes
from tfnode.figures import pct_proportion, pvalue
from tfnode.paper import robust_checks as checks
from tfnode.paper.runs import options_text


def shared_images(a, b):
    """How many images the two rows' audited reports share, 0 for none: the same shard
    of one split's first images, or, unsharded or merged, the first images of the one
    over fewer (a stretch row evaluated on fewer images than the row it is paired
    with)."""
    x, y = a["report"], b["report"]
    if not (x and y):
        return 0
    if checks.first_images(x, y, fewer=False) or checks.first_images(y, x, fewer=False):
        return min(x["num_examples"], y["num_examples"])
    same_shard = x.get("shard") and all(
        x.get(k) == y.get(k)
        for k in ("dataset", "split", "eps_scale", "shard", "num_examples"))
    return x["num_examples"] if same_shard else 0


def _clean_cell(a, b):
    """The pair's clean predictions paired (a ``"clean"`` cell), or None: an unsharded
    report holds the first ``num_examples`` images of its split, so two of one split
    are paired on the first images of the smaller."""
    a_report, b_report = a["clean_report"], b["clean_report"]
    if not (a_report and b_report) or any(a_report.get(k) != b_report.get(k)
                                          for k in ("dataset", "split")):
        return None
    n = min(a_report["num_examples"], b_report["num_examples"])
    x, y = (outcomes.decode(r["clean_result"]["clean_correct"])[:n] for r in (a, b))
    return {"kind": "clean", "eps": "-", "n": x.size, "ode": checks.proportion(x),
            "other": checks.proportion(y), "test": stats.mcnemar(x, y)}


def paired_cells(a, b):
    """``(cells, n)``: rows ``a`` and ``b`` paired, each cell ``{"kind", "eps", "n",
    "ode", "other", "test", "p_holm"}`` (``ode`` is ``a``'s proportion, ``other``
    ``b``'s), the clean cell first where both have clean predictions of one split;
    ``n`` the audited images both share (`shared_images`). The eps from the grey image's
    on (0.5: a sanity budget, `tfnode.evaluation.grey`) are left out of the tests, so
    that they do not dilute the Holm correction of the budgets that matter."""
    cells = [c for c in (_clean_cell(a, b),) if c]
    n = shared_images(a, b)
    for kind in ("worst case", "certified") if n else ():
        for e in (e for e in a["report"]["eps"] if float(e) < grey.PIXEL):
            key = outcomes.eps_key(e)
            x, y = checks.mask(a["result"], kind, key), checks.mask(b["result"], kind, key)
            if x is not None and y is not None:
                x, y = x[:n], y[:n]
                cells.append({"kind": kind, "eps": key, "n": x.size,
                              "ode": checks.proportion(x), "other": checks.proportion(y),
                              "test": stats.mcnemar(x, y)})
    for cell, p in zip(cells, stats.holm([c["test"]["p_value"] for c in cells])):
        cell["p_holm"] = p
    return cells, n


def differences(a, b):
    """What two rows' trainings differ in: ``"regularizer"`` (with its options),
    ``"eps"`` (the defense's), ``"defense"`` (with its other options), each model option
    by name; ``["model"]`` for different models or datasets."""
    ma, mb = a["metrics"], b["metrics"]
    if (ma["model"], ma.get("dataset"), a["ode"]) != (mb["model"], mb.get("dataset"), b["ode"]):
        return ["model"]
    out = []
    if (ma.get("regularizer"), ma.get("regularizer_options") or {}) != (
            mb.get("regularizer"), mb.get("regularizer_options") or {}):
        out.append("regularizer")
    da, db = dict(ma.get("defense_options") or {}), dict(mb.get("defense_options") or {})
    if da.pop("eps", None) != db.pop("eps", None):
        out.append("eps")
    if (ma.get("defense"), da) != (mb.get("defense"), db):
        out.append("defense")
    oa, ob = ma.get("model_options") or {}, mb.get("model_options") or {}
    return out + sorted(k for k in {*oa, *ob} if oa.get(k) != ob.get(k))


def _change(changed, base, what):
    """The change in words: ``+ contractivity``, ``lipschitz=spectral``, ``trades for
    pgd_at``, ``width=32 for 19``; a setting changed in its options alone, with them
    (``trades (beta=6.0) for trades (beta=1.0)``)."""
    mc, mb = changed["metrics"], base["metrics"]
    if what in ("regularizer", "defense"):
        if what == "regularizer" and not mb.get("regularizer"):
            return f"+ {mc['regularizer']}"
        key = what + "_options"
        a, b = ({k: v for k, v in (m.get(key) or {}).items() if k != "eps"} for m in (mc, mb))
        if mc[what] != mb[what]:
            return f"{mc[what]} for {mb[what]}"
        return f"{mc[what]} ({options_text(a)}) for {mb[what]} ({options_text(b)})"
    oc, ob = mc.get("model_options") or {}, mb.get("model_options") or {}
    return f"{what}={oc[what]}" + (f" for {ob[what]}" if what in ob else "")


def changes(table):
    """Every two rows of one model that differ in exactly one setting other than the
    defense's eps, paired (`paired_cells`): ``{"changed", "base", "change", "n",
    "cells"}``, each cell with a ``verdict``. ``changed`` is the row with the setting
    its base lacks (the regularizer, the model option), else the later in the table;
    pairs without a shared cell are left out."""
    out = []
    for i, first in enumerate(table):
        for second in table[i + 1:]:
            what = differences(second, first)
            if len(what) != 1 or what[0] in ("model", "eps"):
                continue
            what = what[0]
            has = [(r["metrics"].get("regularizer") if what == "regularizer" else
                    what in (r["metrics"].get("model_options") or {})) for r in (first, second)]
            changed, base = (first, second) if has[0] and not has[1] else (second, first)
            cells, n = paired_cells(changed, base)
            for cell in cells:
                cell["verdict"] = _verdict(cell)
            if cells:
                out.append({"changed": changed, "base": base, "n": n or None,
                            "change": _change(changed, base, what), "cells": cells})
    return out


def _verdict(cell):
    test = cell["test"]
    if not stats.significant(cell["p_holm"], test["difference"]):
        return stats.no_difference(test["n"])
    word = ("more " if test["difference"] > 0 else "less ") + (
        "accurate" if cell["kind"] == "clean" else "robust")
    return f"{word} with the change"


def change_lines(table):
    """The page's lines of `changes` (none without a pair)."""
    found = changes(table)
    if not found:
        return []
    return checks.markdown_table(
        "One change at a time: each row against the rows of the same model that differ "
        "from it in one training setting, on the same images (a stretch row against the "
        "row it changes; two rows that change one base in the same setting, the later "
        "gathered against the earlier; exact two-sided McNemar test, Holm-corrected over "
        "each pair's cells):",
        ["model", "base recipe", "change", "bound", "eps", "with the change (%)",
         "base (%)", "change only", "base only", "p", "p (Holm)", "verdict"],
        [[pair["base"]["name"], pair["base"]["recipe"], pair["change"],
          c["kind"] + (f" ({c['n']:,} images)" if c["n"] != pair["n"] else ""), c["eps"],
          pct_proportion(c["ode"]), pct_proportion(c["other"]), c["test"]["a_only"],
          c["test"]["b_only"], pvalue(c["test"]["p_value"]), pvalue(c["p_holm"]),
          c["verdict"]]
         for pair in found for c in pair["cells"]])
