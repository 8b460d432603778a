"""The results document: many runs gathered into one page to hold against the paper.

`gather` reads the runs' files (a training export's ``metrics.json``, an evaluation's
``report.json``, a sweep's ``sweep.json``); `document` renders them beside the paper's
numbers (Chu et al. 2020) and related published ones, and states which of the paper's
claims the measured numbers support and which they contradict. Every number it prints
comes from a run it names; none is typed in here except the published ones in `PAPER`
and `RELATED`, each with its source.
"""

import glob
import json
import os
import re
import shutil

from tfnode import export, files, models, outcomes
from tfnode.errors import TfnodeError

RUN_FILES = ("sweep.json", "report.json", "metrics.json")

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


def _run_files(path):
    """The run files at ``path`` (a file itself, or those in a folder)."""
    if os.path.isfile(path):
        return [path] if os.path.basename(path) in RUN_FILES else []
    # An export's metrics.json is under assets.extra/ (beside saved_model.pb in older
    # ones); the report.json an export carries there is not a run of its own.
    found = [os.path.join(path, f) for f in RUN_FILES[:2] if os.path.isfile(os.path.join(path, f))]
    metrics = export.extra_file(path, "metrics.json")
    return found + ([metrics] if metrics else [])


def gather(patterns):
    """Reads every run named by ``patterns`` (folders, files or globs).

    Returns:
      ``{"training": [...], "evaluations": [...], "sweeps": [...]}``, each entry the
      file's dict with ``"_path"``, the file it came from, and ``"_run"``, the run's
      folder (an export's version folder); in the order given.

    Raises:
      TfnodeError: a pattern that names no run, or a file that is not valid JSON.
    """
    out = {"training": [], "evaluations": [], "sweeps": []}
    kinds = {"metrics.json": "training", "report.json": "evaluations",
             "sweep.json": "sweeps"}
    seen = set()
    for pattern in patterns:
        found = [f for p in sorted(glob.glob(pattern)) or [pattern] for f in _run_files(p)]
        if not found:
            raise TfnodeError(f"--runs {pattern!r} names no run: expected folders or files "
                              f"with one of {list(RUN_FILES)}")
        for path in found:
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            try:
                with open(path) as f:
                    entry = json.load(f)
            except (OSError, ValueError) as err:
                raise TfnodeError(f"--runs: cannot read {path!r} ({err}); delete or "
                                  "re-create that run") from None
            folder = os.path.dirname(path)
            if os.path.basename(folder) == export.ASSETS_EXTRA:  # an export's metrics
                folder = os.path.dirname(folder)
            out[kinds[os.path.basename(path)]].append({**entry, "_path": path,
                                                       "_run": folder})
    return out


def _pct(v):
    return "-" if v is None else f"{100 * v:.2f}"


def _is_ode(result):
    return bool((result.get("info") or {}).get("ode_blocks"))


def _name(result, label):
    """The model's registered name, and its defense if it was adversarially trained."""
    trained = _trained(result)
    name = trained.get("model") or label
    return f"{name} ({trained['defense']})" if trained.get("defense") else name


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
            f"| {m['model']} | {m['dataset']} | {_options(options)} | "
            f"{m.get('defense') or '-'} | {_pct(m['clean_accuracy'])} | {_pct(paper)} | "
            f"{'-' if nfe is None else f'{nfe:.1f}'} | {m.get('num_params', 0):,} | {epochs} "
            f"| {m.get('train_seconds', 0) / 60:.1f} | `{m['_run']}` |")
    return lines


def _options(options):
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items())) or "-"


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
        lines += [f"**{_name(res, label)}** (clean {_pct(res['clean_accuracy'])}%)", "",
                  "| attack | " + " | ".join(f"eps {k}" for k in keys) + " |",
                  "| --- " * (len(keys) + 1) + "|"]
        for name, attack in res["attacks"].items():
            cells = attack.get("cells", {})
            lines.append(f"| {name} | " + " | ".join(
                _pct(cells[k]["robust_accuracy"]) if k in cells else "-" for k in keys) + " |")
        wc = res.get("worst_case") or {}
        if wc:
            lines.append("| **worst case** | " + " | ".join(
                _pct(wc[k]["robust_accuracy"]) if k in wc else "-" for k in keys) + " |")
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
        lines.append(f"| {row['step_size']:g} | {_pct(row['clean_accuracy'])} | "
                     + " | ".join(_pct(row["robust_accuracy"][k]) for k in keys)
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
                f"| `{os.path.dirname(report['_path'])}` | {_name(res, label)} | "
                f"{_options(trained.get('model_options') or {})} | "
                f"{_pct(res['clean_accuracy'])} | "
                + " | ".join(_pct(wc[k]["robust_accuracy"]) if k in wc else "-"
                             for k in keys)
                + f" | {', '.join(res['attacks'])} | {report['num_examples']} |")
    return lines


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
                       + f"): clean {_pct(m['clean_accuracy'])}%, more than "
                       f"{100 * margin:g} points below the best undefended {m['dataset']} "
                       f"model here ({_pct(top)}%); its robust accuracies are not comparable "
                       "with the others'.")
    return out


def _defaults(model):
    """Model ``model``'s default options (a run records only the options it was given)."""
    try:
        return models.model_options(model) if model else {}
    except TfnodeError:  # A model registered by a user's code this process lacks.
        return {}


def _trained(res):
    """What a report says of its model's training; ``defense`` read from the model's
    ``metrics.json`` for reports written before the report carried it."""
    info = res.get("info") or {}
    trained = dict(info.get("trained") or {})
    metrics = export.extra_file(info.get("path") or "", "metrics.json")
    if "defense" not in trained and metrics:
        try:
            with open(metrics) as f:
                trained["defense"] = json.load(f).get("defense")
        except (OSError, ValueError):
            pass  # Unknown; the model stays in its family as before.
    return trained


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
            trained = _trained(res)
            options = {**_defaults(trained.get("model")), **(trained.get("model_options") or {})}
            wc = res.get("worst_case") or {}
            if options.get("step_size") is None or not wc or trained.get("defense"):
                continue
            h = options.pop("step_size")
            key = (_name(res, label), _options(options), tuple(res["attacks"]),
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
            + "; ".join(f"eps {k}: {_pct(small[k])} vs {_pct(large[k])}" for k in keys)
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
                            f"{name} eps {key}: {_pct(a)} vs {_pct(b)}")
            verdict = _verdict(support, contradict)
            lines.append(f"   - `{os.path.dirname(report['_path'])}`, {_name(ode, ol)} vs "
                         f"{_name(res, rl)}: **{verdict}**; ODE-Net higher at "
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
            + "; ".join(f"eps {k}: {_pct(small['robust_accuracy'][k])} vs "
                        f"{_pct(large['robust_accuracy'][k])}" for k in diffs)
            + f"; clean {_pct(small['clean_accuracy'])} vs {_pct(large['clean_accuracy'])}).")
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
