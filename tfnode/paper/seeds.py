"""The seed spread beside a claim's verdict: each training seed's models side by side.

A verdict rests on one pair of trained models; its seed runs (`tfnode.paper.claims`:
the same comparison with models trained from other seeds) say whether the direction is
the recipe's or one draw's. `spread` tabulates, per seed, both models' clean accuracy
on the whole test split (their training exports' ``metrics.json``) and their robust
accuracy in the claim's first primary cell on the images every seed run attacked (the
first ``n``; the main run is cut to them), with 95% Wilson intervals; `markdown`
writes it as the page's table.
"""

import os

from tfnode import figures, stats
from tfnode.paper.verdicts import pair, robust_mask


def _metrics_by_path(gathered):
    return {os.path.normpath(m["_run"]): m for m in gathered["training"]}


def _model_row(result, label, attack, key, n, metrics):
    info = result.get("info") or {}
    mask = robust_mask(result, attack, key)
    trained = metrics.get(os.path.normpath(info.get("path") or ""))
    settings = (trained or {}).get("settings") or {}
    seed = settings.get("seed", (info.get("trained") or {}).get("seed"))
    return {"label": label, "path": info.get("path", label), "seed": seed,
            "clean": None if trained is None else trained["clean_accuracy"],
            "robust": None if mask is None else stats.proportion(int(mask[:n].sum()),
                                                                 int(mask[:n].size))}


def spread(claim, by_name, gathered):
    """The seed spread of ``claim`` (`tfnode.paper.claims.Claim`) over the runs in
    ``by_name`` (run name -> report); None where it declares no seed runs or none of
    them is gathered.

    Returns:
      ``{"eps", "n", "rows": [{"run", "a": model row, "b": model row}]}``, the main run
      first; a model row has its ``label``, ``path``, training ``seed``, ``clean``
      accuracy (None without its metrics.json on the page) and ``robust`` proportion.
    """
    mains = [run for run, _ in claim.seed_runs if run in by_name]
    seeds = [seed for run, seed in claim.seed_runs if run in by_name and seed in by_name]
    if not mains or not seeds:
        return None
    reports = [by_name[mains[0]]] + [by_name[s] for s in seeds]
    names = [mains[0]] + seeds
    key = claim.primary_eps[0]
    n = min(r["num_examples"] for r in reports)
    metrics = _metrics_by_path(gathered)
    rows = []
    for name, report in zip(names, reports):
        labels = pair(report, claim.comparison)
        if labels is None:
            continue
        rows.append({"run": name, **{side: _model_row(report["models"][lb], lb, claim.attack,
                                                      key, n, metrics)
                                     for side, lb in zip("ab", labels)}})
    return {"eps": key, "n": n, "rows": rows}


def markdown(spread):
    """The seed spread (`spread`) as a table."""
    def clean(row):
        return "-" if row["clean"] is None else figures.pct(row["clean"])

    lines = [f"Seed spread: each training seed's pair, clean accuracy (%) on the whole test "
             f"split and robust accuracy (%) [95% Wilson interval] at eps {spread['eps']} on "
             f"the first {spread['n']} images:", "",
             "| run | seed | clean (a) | clean (b) | robust (a) | robust (b) | difference "
             "(points) |", "|---" * 7 + "|"]
    for row in spread["rows"]:
        a, b = row["a"], row["b"]
        seed = a["seed"] if a["seed"] == b["seed"] else f"{a['seed']} / {b['seed']}"
        difference = ("-" if a["robust"] is None or b["robust"] is None
                      else f"{100 * (a['robust']['p'] - b['robust']['p']):+.1f}")
        lines.append(f"| `{row['run']}` | {seed} | {clean(a)} | {clean(b)} | "
                     f"{figures.pct_proportion(a['robust'])} | "
                     f"{figures.pct_proportion(b['robust'])} | {difference} |")
    return lines + ["", "(a: " + ", ".join(dict.fromkeys(r["a"]["label"] for r in
                                                          spread["rows"]))
                    + "; b: " + ", ".join(dict.fromkeys(r["b"]["label"] for r in
                                                         spread["rows"])) + ".)", ""]
