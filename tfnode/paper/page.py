"""The results document: many runs gathered into one page to hold against the paper.

`document` renders the gathered runs (`tfnode.paper.runs`) beside the paper's numbers
(Chu et al. 2020) and related published ones, with the verdicts on the paper's claims
(`tfnode.paper.verdicts`); `write` gathers, renders and writes the page with its plots.
Every number it prints comes from a run it names; none is typed in here except the
published ones in `PAPER` and `RELATED`, each with its source.
"""

import copy
import os
import re
import shutil

from tfnode import files, stats
from tfnode.evaluation import outcomes
from tfnode.figures import pct, pct_interval, pct_proportion, pvalue
from tfnode.paper import claims as claims_lib, robust, seeds as seeds_lib
from tfnode.paper.runs import fingerprints_of, gather, model_name, options_text
from tfnode.paper.verdicts import clean_warnings, judge, runs_by_name

PAPER_SOURCE = ("Chu, Wei & Zhao, \"Towards Natural Robustness Against Adversarial "
                "Examples\", arXiv 2012.02452, clean test accuracy")
# (dataset, model) -> clean test accuracy reported by Chu et al. 2020.
PAPER = {("mnist", "node"): 0.9905, ("mnist", "resnet"): 0.9933,
         ("cifar10", "node"): 0.6994, ("cifar10", "resnet"): 0.8960}

RELATED = (
    ("Yan, Du, Tan & Feng, \"On Robustness of Neural Ordinary Differential Equations\" "
     "(TisODE), ICLR 2020: MNIST, FGSM at eps 0.15 / 0.3 / 0.5, models trained with "
     "Gaussian noise: ODE-Net about 94 / 71 / 20%, CNN about 86 / 53 / 15%."),
    ("Huang, Yu, Zhang, Ma & Yao, \"Adversarial Robustness of Stabilized NeuralODEs "
     "Might be from Obfuscated Gradients\", 2020: CIFAR-10, an ODE-Net at 61.6% under "
     "PGD-20 falls to 24.3% under PGD-1000 (gradient masking by the solver)."),
)


def _training_rows(runs, fingerprints=None):
    lines = ["| model | dataset | options | defense | seed | clean (%) [95% CI] | paper (%) | "
             "mean NFE | params | epochs | train min | run |", "| --- " * 12 + "|"]
    for m in runs:
        options = m.get("model_options") or {}
        paper = None
        if not m.get("defense") and options.get("step_size") in (None, 1.0):
            paper = PAPER.get((m["dataset"], m["model"]))
        settings = m.get("settings") or {}
        epochs = f"{settings.get('epochs')}" + (
            f" x {settings['steps_per_epoch']}" if settings.get("steps_per_epoch") else "")
        nfe = m.get("mean_nfe_test")
        fp = (fingerprints or {}).get(os.path.normpath(m["_run"]))
        n = 10000  # tools.train tests on the whole test split (10,000 images here)
        clean = _interval(stats.proportion(round(m["clean_accuracy"] * n), n))
        lines.append(
            f"| {m['model']} | {m['dataset']} | {options_text(options)} | "
            f"{m.get('defense') or '-'} | {settings.get('seed', '-')} | {clean} | "
            f"{pct(paper)} | {'-' if nfe is None else f'{nfe:.1f}'} | "
            f"{m.get('num_params', 0):,} | {epochs} | {m.get('train_seconds', 0) / 60:.1f} | "
            f"`{m['_run']}`" + (f" @{fp}" if fp else "") + " |")
    return lines


def _figure_name(png):
    """The plot's file name in the page's figures folder: its run path, flattened."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.normpath(png).lstrip("./"))


def _plot(run):
    """The run's plot (report.json's or sweep.json's ``paths.png``), if it exists, found
    beside the run's file as given: the recorded path is where the run was written, which
    a report committed from another folder or machine no longer is."""
    png = (run.get("paths") or {}).get("png")
    here = png and os.path.join(run["_run"], os.path.basename(png))
    return here if here and os.path.isfile(here) else None


def _figures(gathered):
    """Every plot the page shows, as paths (they are copied beside the page)."""
    return [png for run in gathered["evaluations"] + gathered["sweeps"]
            for png in [_plot(run)] if png]


def _figures_dir(output_path):
    return os.path.splitext(os.path.abspath(output_path))[0] + "_figures"


def _figure_link(png, output_path):
    """Markdown link target for ``png`` as copied by `write`, relative to the page
    (run folders such as ``reports/`` are usually not committed; the page's figures are)."""
    return os.path.relpath(os.path.join(_figures_dir(output_path), _figure_name(png)),
                           os.path.dirname(os.path.abspath(output_path)))


def _evaluation_section(report, output_path):
    folder = os.path.dirname(report["_path"])
    keys = [outcomes.eps_key(e) for e in report["eps"]]
    lines = [f"### `{folder}`", "",
             f"{report['num_examples']} {report['dataset']} {report['split']} images, "
             f"{report.get('schedule', 'exhaustive')} schedule, batch {report['batch_size']}"
             f"; robust accuracy (%) per attack and eps (Linf)."
             + (" The worst case is per example over every attack run (the audit)."
                if report.get("audit") else ""), ""]
    for label, res in report["models"].items():
        info = res.get("info") or {}
        lines += [f"**{model_name(res, label)}** `{info.get('path', label)}`"
                  + (f" @{info['fingerprint']}" if info.get("fingerprint") else "")
                  + f" (clean {pct(res['clean_accuracy'])}%)", "",
                  "| attack | " + " | ".join(f"eps {k}" for k in keys) + " |",
                  "| --- " * (len(keys) + 1) + "|"]
        for name, attack in res["attacks"].items():
            if (attack.get("meta") or {}).get("role") == "sanity":
                continue  # PGD at eps 1 checks the attack, it is no robustness number
            cells = attack.get("cells", {})
            lines.append(f"| {name} | " + " | ".join(
                _cell_text(cells[k]) if k in cells else "-" for k in keys) + " |")
        wc = res.get("worst_case") or {}
        if wc:
            lines.append("| **worst case** | " + " | ".join(
                _cell_text(wc[k]) if k in wc else "-" for k in keys) + " |")
        cert = res.get("certified") or {}
        if cert:  # --certify: the lower end of the bracket
            lines.append("| **certified (IBP)** | " + " | ".join(
                pct_interval(cert[k]["certified_accuracy"], cert[k]["ci95"]) if k in cert
                else "-" for k in keys) + " |")
        verdict = res.get("verdict")
        lines.append("")
        if verdict:
            lines.append("Audit verdict: " + (
                "**gradient masking suspected** (a masking check failed)"
                if verdict["masking_suspected"] else "no check flags gradient masking")
                + (f"; the standard attack is not converged at eps "
                   f"{', '.join(verdict['not_converged'])}" if verdict["not_converged"]
                   else "") + ".")
            # Which checks failed, in the audit's words: a reader judges a flag by its cells.
            lines += [f"- failed: {c['check']}" + (f" (eps {c['eps']})" if c.get("eps") else "")
                      + f": {c['detail']}" for c in res.get("checks", ()) if not c["passed"]]
            lines.append("")
    png = _plot(report)
    if png:
        lines += [f"![accuracy vs eps]({_figure_link(png, output_path)})", ""]
    return lines


def _sweep_section(sweep, output_path):
    config = sweep["config"]
    keys = [outcomes.eps_key(e) for e in config["eps"]]
    folder = os.path.dirname(sweep["_path"])
    lines = [f"### `{folder}`: {config['model']} on {config['dataset']}, step size h", "",
             f"Clean accuracy and robust accuracy (%) under "
             f"{config['transfer_attack'].upper()} crafted on `{sweep['source']['model']}` "
             f"{sweep['source']['options']} and transferred, first {config['num_examples']}"
             f" test images (Chu et al. 2020, Fig. 1).", "",
             "| h | clean | " + " | ".join(f"eps {k}" for k in keys) + " | run |",
             "| --- " * (len(keys) + 3) + "|"]
    for row in sweep["members"]:
        lines.append(f"| {row['step_size']:g} | {pct(row['clean_accuracy'])} | "
                     + " | ".join(pct(row["robust_accuracy"][k]) for k in keys)
                     + f" | `{os.path.dirname(row['report'])}` |")
    png = _plot(sweep)
    if png:
        lines += ["", f"![accuracy vs h]({_figure_link(png, output_path)})"]
    return lines + [""]


def _cell_text(cell):
    """A report cell's robust accuracy (%) and its 95% Wilson interval."""
    return pct_interval(cell["robust_accuracy"], cell.get("ci95"))


def _interval(prop):
    """``17.00 [10.9, 25.6]``: a stored proportion with its 95% Wilson interval."""
    return pct_proportion(prop)


RULE = ("Each claim's primary cells are declared before its runs "
        "(`tfnode/paper/claims.py`): the per-example worst case over the run's attacks (or "
        "the one attack named) at eps 0.1, 0.2 and 0.3. Per cell the two models are "
        "compared on the same images by the exact two-sided McNemar test, and the p-values "
        "of one claim's cells are Holm-corrected. A cell is **supported** or "
        "**contradicted** only where the corrected p is below 0.05 and every seed run's "
        "difference has the same sign; otherwise it shows no difference measurable at that "
        "n. An image counts as robust only if it is classified correctly clean and under "
        "every attack (a clean-wrong image is not robust); n counts every image attacked.")


def _sweep_claim_lines(run):
    """A step-size sweep held against Sec. 4.1 (`tfnode.paper.verdicts._judge_sweep`)."""
    lines = [f"`{run['run']}`: every member against h = 1 `{run['b_ref']}` on the same "
             f"{run['n']} images, under {run['attack']} (robust accuracy, %, [95% Wilson "
             "interval]; exact McNemar, Holm over the table's rows):", "",
             "| h | eps | robust (h) | robust (h = 1) | robust at h only | at h = 1 only | "
             "p (McNemar) | p (Holm) | |", "|---" * 9 + "|"]
    def tested(c):  # the paired test's columns, then the row's verdict
        return (f"{c['test']['a_only']} | {c['test']['b_only']} | {pvalue(c['test']['p_value'])} "
                f"| {pvalue(c['p_holm'])} | {c['verdict']} |")

    for c in run["cells"]:
        lines.append(f"| {c['h']:g} | {c['eps']} | {_interval(c['a'])} | {_interval(c['b'])} "
                     f"| {tested(c)}")
    lines += ["", f"Clean accuracy (%) against h = 1's {_interval(run['b_clean'])}:", "",
              "| h | clean | correct at h only | at h = 1 only | p (McNemar) | p (Holm) | "
              "| model |", "|---" * 8 + "|"]
    for c in run["clean"]:
        lines.append(f"| {c['h']:g} | {_interval(c['a'])} | {tested(c)} `{c['ref']}` |")
    return lines + ["", f"Verdict on `{run['run']}`: no obvious gain in robustness: "
                        f"**{run['robustness']}**; a very small h trains badly (the smallest "
                        f"h's clean accuracy against h = 1's): **{run['training']}** (one "
                        "training seed: the seed spread is not measured).", ""]


def _claim_section(judged):
    claim = judged["claim"]
    words = (f"> {claim.words}" + (f"\n\n({claim.note})" if claim.note else "")
             if claim.verbatim else
             f"> {claim.words}\n\n(" + (claim.note or "The section as read for this "
                                          "project, not a quotation: the paper's body is "
                                          "not reachable from the machines tfnode is built "
                                          "on; check it against the PDF.") + ")")
    lines = [f"### {claim.title} ({claim.section})", "", words, ""]
    if claim.quote:
        lines += ["The abstract on the same point (verbatim):", "", f"> {claim.quote}", ""]
    if claim.not_run:
        return lines + [f"Not judged here: {claim.not_run}.", ""]
    for run in judged["runs"]:
        if run.get("sweep"):
            lines += _sweep_claim_lines(run)
            continue
        lines += [f"`{run['run']}`: {run['a']} `{run['a_ref']}` against {run['b']} "
                  f"`{run['b_ref']}`, {run['n']} images, "
                  + ("the per-example worst case over " + ", ".join(run["attacks"])
                     if claim.attack == "worst case" else claim.attack)
                  + ". Robust accuracy (%) [95% Wilson interval]:", "",
                  f"| eps | {run['a']} | {run['b']} | robust under {run['a']} only | under "
                  f"{run['b']} only | p (McNemar) | p (Holm) | seed runs (difference, points) "
                  "| verdict |", "|---" * 9 + "|"]
        for c in run["cells"]:
            seeds = ", ".join(f"{100 * d:+.1f}" for d in c["seeds"]) or "-"
            lines.append(f"| {c['eps']} | {_interval(c['a'])} | {_interval(c['b'])} | "
                         f"{c['test']['a_only']} | {c['test']['b_only']} | "
                         f"{pvalue(c['test']['p_value'])} | {pvalue(c['p_holm'])} | {seeds} | "
                         f"{c['verdict']} |")
        declared = [seed for r, seed in claim.seed_runs if r == run["name"]]
        seeds_note = (f"seed runs {', '.join(f'`{r}`' for r in run['seed_runs'])}"
                      if run["seed_runs"] else "its seed runs are not run yet" if declared
                      else "one training seed: the seed spread is not measured")
        lines += ["", f"Verdict on `{run['run']}`: **{run['verdict']}** ({seeds_note}).", ""]
        d = run.get("distances")
        if d:
            lines += [f"{claim.attack} L2 distance to the nearest adversarial found, on the "
                      f"{d['n']} images clean-correct for both where it found one for both "
                      f"({d['found_a']} and {d['found_b']} found): median {d['median_a']:.3f} "
                      f"({run['a']}) against {d['median_b']:.3f} ({run['b']}), paired "
                      f"Wilcoxon signed-rank p = {pvalue(d['p_value'])}. Verdict on the "
                      f"distances (larger is more robust): **{d['verdict']}**.", ""]
    if judged.get("spread") and judged["spread"]["rows"]:
        lines += seeds_lib.markdown(judged["spread"])
    for name in judged.get("unjoined", ()):
        lines += [f"`{name}` not judged: the runs do not hold the same models on the same "
                  "dataset split.", ""]
    if judged["missing"]:
        lines += ["Not run yet: " + ", ".join(f"`{m}`" for m in judged["missing"]) + ".", ""]
    return lines


def document(gathered, *, output_path, command=None):
    """The results page (markdown) for ``gathered`` runs, to be written at
    ``output_path`` (image links are relative to it)."""
    gathered = copy.deepcopy(gathered)  # the caller's runs stay as read
    fingerprints = fingerprints_of(gathered)
    for report in gathered["evaluations"]:  # the page names each model by its file
        for res in report["models"].values():
            path = os.path.normpath((res.get("info") or {}).get("path") or "")
            if path in fingerprints:
                res["info"] = {**res["info"], "fingerprint": fingerprints[path]}
    judged_all = judge(gathered)
    robust_lines = robust.section(gathered, fingerprints)
    # A page of robust rows alone (docs/robust_results.md) is not about the paper's
    # claims: it leaves out their sections rather than listing every claim "not run yet".
    paper_page = (any(j["runs"] for j in judged_all) or not robust_lines
                  or not all(robust.is_robust_row(m) for m in gathered["training"]))
    title = ("# The paper's claims, measured" if paper_page
             else "# Robust ODE-Nets against ResNets, measured")
    lines = [title, "",
             "Generated by `tools.report`" + (f": `{command}`" if command else "") + ". "
             "Every number below comes from the run folder named beside it; every model is "
             "named by its path and the fingerprint of its weights (`@` sha256 over each "
             "weight's name, shape and float32 bytes). Training budgets are each run's own "
             "(epochs column)" + (": the paper's models were trained longer." if paper_page
                                  else "."), ""]
    if paper_page:
        lines += [f"Paper: {claims_lib.SOURCE}.", "", "## The claims", "", RULE, ""]
        by_name, _ = runs_by_name(gathered)
        for judged in judged_all:
            lines += _claim_section({**judged, "spread": seeds_lib.spread(
                judged["claim"], by_name, gathered)})
    lines += robust_lines
    warnings = clean_warnings(gathered)
    if warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    if gathered["training"]:
        lines += ["## Trained models", ""] + (
            [f"Paper: {PAPER_SOURCE}.", ""] if paper_page else [])
        lines += _training_rows(gathered["training"], fingerprints) + [""]
    if gathered["evaluations"]:
        lines += ["## Every run", ""]
        for report in gathered["evaluations"]:
            lines += _evaluation_section(report, output_path)
    if gathered["sweeps"]:
        lines += ["## Step size", ""]
        for sweep in gathered["sweeps"]:
            lines += _sweep_section(sweep, output_path)
    if paper_page:
        lines += ["## What we could not run", ""] + [f"- {r}" for r in claims_lib.NOT_RUN]
        lines += [f"- {j['claim'].title}: {j['claim'].not_run}." for j in judged_all
                  if j["claim"].not_run] + [""]
        lines += ["## Related published numbers", ""] + [f"- {r}" for r in RELATED] + [""]
    return "\n".join(lines)


def write(patterns, output_path, *, command=None):
    """Gathers ``patterns`` and writes the page atomically, its plots copied into
    ``<page>_figures/`` beside it (plots of runs no longer on the page are removed from
    it); returns ``(path, gathered)``."""
    gathered = gather(patterns)
    figures = _figures(gathered)
    if figures:
        folder = _figures_dir(output_path)
        os.makedirs(folder, exist_ok=True)
        for png in figures:
            with files.atomic_path(os.path.join(folder, _figure_name(png))) as tmp:
                shutil.copyfile(png, tmp)
    files.write_text(output_path, document(gathered, output_path=output_path,
                                           command=command))
    # The figures folder is the page's own: a plot of a run no longer on the page goes.
    folder = _figures_dir(output_path)
    keep = {_figure_name(png) for png in figures}
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if name.endswith(".png") and name not in keep:
            os.remove(os.path.join(folder, name))
    return output_path, gathered
