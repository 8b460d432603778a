"""The results document: many runs gathered into one page to hold against the paper.

`document` renders the gathered runs (`tfnode.paper.runs`) beside the paper's numbers
(Chu et al. 2020) and related published ones, with the verdicts on the paper's claims
(`tfnode.paper.verdicts`); `write` gathers, renders and writes the page with its plots.
Every number it prints comes from a run it names; none is typed in here except the
published ones in `PAPER` and `RELATED`, each with its source.
"""

import os
import re
import shutil

from tfnode import files
from tfnode.evaluation import outcomes
from tfnode.figures import pct
from tfnode.paper.runs import gather, model_name, options_text
from tfnode.paper.verdicts import claims, clean_warnings

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


def _training_rows(runs):
    lines = ["| model | dataset | options | defense | clean (%) | paper (%) | mean NFE | "
             "params | epochs | train min | run |", "| --- " * 11 + "|"]
    for m in runs:
        options = m.get("model_options") or {}
        paper = None
        if not m.get("defense") and options.get("step_size") in (None, 1.0):
            paper = PAPER.get((m["dataset"], m["model"]))
        settings = m.get("settings") or {}
        epochs = f"{settings.get('epochs')}" + (
            f" x {settings['steps_per_epoch']}" if settings.get("steps_per_epoch") else "")
        nfe = m.get("mean_nfe_test")
        lines.append(
            f"| {m['model']} | {m['dataset']} | {options_text(options)} | "
            f"{m.get('defense') or '-'} | {pct(m['clean_accuracy'])} | {pct(paper)} | "
            f"{'-' if nfe is None else f'{nfe:.1f}'} | {m.get('num_params', 0):,} | {epochs} "
            f"| {m.get('train_seconds', 0) / 60:.1f} | `{m['_run']}` |")
    return lines


def _figure_name(png):
    """The plot's file name in the page's figures folder: its run path, flattened."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.normpath(png).lstrip("./"))


def _plot(run):
    """The run's plot (report.json's or sweep.json's ``paths.png``), if it exists."""
    png = (run.get("paths") or {}).get("png")
    return png if png and os.path.isfile(png) else None


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
        lines += [f"**{model_name(res, label)}** (clean {pct(res['clean_accuracy'])}%)", "",
                  "| attack | " + " | ".join(f"eps {k}" for k in keys) + " |",
                  "| --- " * (len(keys) + 1) + "|"]
        for name, attack in res["attacks"].items():
            cells = attack.get("cells", {})
            lines.append(f"| {name} | " + " | ".join(
                pct(cells[k]["robust_accuracy"]) if k in cells else "-" for k in keys) + " |")
        wc = res.get("worst_case") or {}
        if wc:
            lines.append("| **worst case** | " + " | ".join(
                pct(wc[k]["robust_accuracy"]) if k in wc else "-" for k in keys) + " |")
        verdict = res.get("verdict")
        lines.append("")
        if verdict:
            lines.append("Audit verdict: " + (
                "**gradient masking suspected** (a masking check failed)"
                if verdict["masking_suspected"] else "no check flags gradient masking")
                + (f"; the standard attack is not converged at eps "
                   f"{', '.join(verdict['not_converged'])}" if verdict["not_converged"]
                   else "") + ".")
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


def _summary_rows(evaluations):
    eps = sorted({e for r in evaluations for e in r["eps"]})
    keys = [outcomes.eps_key(e) for e in eps]
    lines = ["| run | model | options | clean | " + " | ".join(f"eps {k}" for k in keys)
             + " | attacks | images |", "| --- " * (len(keys) + 6) + "|"]
    for report in evaluations:
        for label, res in report["models"].items():
            trained = (res.get("info") or {}).get("trained") or {}
            wc = res.get("worst_case") or {}
            lines.append(
                f"| `{os.path.dirname(report['_path'])}` | {model_name(res, label)} | "
                f"{options_text(trained.get('model_options') or {})} | "
                f"{pct(res['clean_accuracy'])} | "
                + " | ".join(pct(wc[k]["robust_accuracy"]) if k in wc else "-"
                             for k in keys)
                + f" | {', '.join(res['attacks'])} | {report['num_examples']} |")
    return lines


def document(gathered, *, output_path, command=None):
    """The results page (markdown) for ``gathered`` runs, to be written at
    ``output_path`` (image links are relative to it)."""
    lines = ["# The paper's experiments, measured", "",
             "Generated by `tools.report`" + (f": `{command}`" if command else "") + ". "
             "Every number below comes from the run folder named beside it; the published "
             "numbers are quoted with their sources. Training budgets are each run's own "
             "(epochs column): the paper's models were trained longer.", "",
             "## What the measurements say about the paper's claims", ""]
    lines += claims(gathered) + [""]
    warnings = clean_warnings(gathered)
    if warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    if gathered["evaluations"]:
        lines += ["## Summary: worst case per model", "",
                  "Robust accuracy (%) of each evaluated model: clean, and the per-example "
                  "worst case over the attacks its run used (listed), per Linf eps. Runs "
                  "with different attacks or images are not directly comparable.", ""]
        lines += _summary_rows(gathered["evaluations"]) + [""]
    if gathered["training"]:
        lines += ["## Trained models", "", f"Paper: {PAPER_SOURCE}.", ""]
        lines += _training_rows(gathered["training"]) + [""]
    if gathered["evaluations"]:
        lines += ["## Robustness", ""]
        for report in gathered["evaluations"]:
            lines += _evaluation_section(report, output_path)
    if gathered["sweeps"]:
        lines += ["## Step size", ""]
        for sweep in gathered["sweeps"]:
            lines += _sweep_section(sweep, output_path)
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
