"""Report files from report dicts: ``report.md``, the plots, ``report.json``.

Pure functions of the report dict that `tfnode.evaluate` builds (no model, no attack),
so an old ``report.json`` renders again.
"""

import contextlib
import json
import os

import numpy as np

from tfnode import files, loading, outcomes


def _pct(v):
    return "-" if v is None else f"{100 * v:.2f}"


def _headers(report):
    scale = report["eps_scale"]
    return [f"{e:g}" if scale == 1 else f"{e * scale:g}/{scale:g}" for e in report["eps"]]


def _eps_label(report, key):
    """An eps key as the user gave it (``8/255`` with ``--eps_scale=255``)."""
    labels = dict(zip((outcomes.eps_key(e) for e in report["eps"]), _headers(report)))
    return labels.get(key, key)


def markdown(report):
    """``report.md``: per model the worst case and verdict, then robust accuracy (%) per
    attack and eps, warnings, the Boundary Attack's distances, settings and versions."""
    keys = [outcomes.eps_key(e) for e in report["eps"]]
    head = _headers(report)
    scale = report["eps_scale"]
    lines = [f"# Robustness report: {report['dataset']} {report['split']}", "",
             f"{report['num_examples']} examples (the first of the split), batch "
             f"{report['batch_size']}, seed {report['seed']}. Robust accuracy (%): correct "
             "on the clean image and under the attack; Linf budgets eps on the [0, 1] scale"
             + (f" (given as x/{scale:g})" if scale != 1 else "") + ". Worst case: an "
             "example counts as robust only if it survives every attack at that eps.", ""]
    if report.get("conventions"):  # reports before the schedules have none
        lines += [f"Schedule {report['conventions']}.", ""]
    lines += ["| model | clean | " + " | ".join(f"worst case, eps {h}" for h in head) + " |",
              "|---|---|" + "---|" * len(head)]
    for label, res in report["models"].items():
        wc = res.get("worst_case", {})
        not_conv = set((res.get("verdict") or {}).get("not_converged", []))
        lines.append(f"| {label} | {_pct(res['clean_accuracy'])} | " + " | ".join(
            (_pct(wc[k]["robust_accuracy"]) + (" (standard attack not converged)"
                                              if k in not_conv else "")) if k in wc else "-"
            for k in keys) + " |")
    lines.append("")
    for label, res in report["models"].items():
        lines += _verdict_markdown(report, label, res, keys)
    if report["warnings"]:
        lines += ["**Warnings**", ""] + [f"- {w}" for w in report["warnings"]] + [""]
    lines += ["| model | attack | kind | clean | " + " | ".join(f"eps {h}" for h in head)
              + " |", "|---|---|---|---|" + "---|" * len(head)]
    for label, res in report["models"].items():
        for name, attack in res["attacks"].items():
            if attack["meta"].get("role") == "sanity":
                continue  # one cell at eps 1, shown in the checks
            lines.append(f"| {label} | {name} | {attack['meta']['kind']}"
                         + (f" ({attack['meta']['crafted_on']})"
                            if attack["meta"]["crafted_on"] != "model" else "")
                         + (" (on the survivors of the attacks above)"
                            if attack["meta"].get("survivors_of") else "")
                         + f" | {_pct(res['clean_accuracy'])} | " + " | ".join(
                             _pct(attack["cells"][k]["robust_accuracy"])
                             if k in attack["cells"] else "-" for k in keys) + " |")
    lines.append("")
    lines += _model_notes(report)
    lines += _grid_markdown(report) + _trajectory_markdown(report)
    lines += ["", "Attack settings: `" + json.dumps(report["attack_options"], sort_keys=True)
              + "`", "", f"Versions: `{json.dumps(report['versions'], sort_keys=True)}`", ""]
    return "\n".join(lines)


def _verdict_markdown(report, label, res, keys):
    v = res.get("verdict")
    if not v:
        return []

    def eps(key):
        return _eps_label(report, key)

    lines = [f"## Verdict: {label}", ""]
    for k in keys:
        wc = v["worst_case"].get(k)
        if wc:
            best = wc["strongest_single"]
            decisive = ", ".join(f"{n} {c}" for n, c in wc["decisive"].items() if c)
            lines.append(f"- eps {eps(k)}: worst case **{_pct(wc['robust_accuracy'])}%** "
                         f"({wc['num_robust']}/{wc['num_examples']}) over "
                         f"{len(wc['attacks'])} attacks; strongest single attack "
                         f"{best['attack']} {_pct(best['robust_accuracy'])}%"
                         + (f"; examples only one attack broke: {decisive}" if decisive else ""))
    lines += ["", "**Gradient masking suspected**: a masking check failed."
              if v["masking_suspected"] else "No check flags gradient masking."]
    if v["not_converged"]:
        lines.append("**Standard attack not converged** at eps "
                     f"{', '.join(eps(k) for k in v['not_converged'])}"
                     ": a stronger run of it found more adversarials than the checks' "
                     "tolerance allows, so its own numbers overstate robustness.")
    lines.append("")
    lines += [f"- {'PASS' if f['passed'] else 'FAIL'}: {f['check']}"
              + (f" (eps {eps(f['eps'])})" if f["eps"] else "") + f": {f['detail']}"
              for f in res["checks"]]
    lines += [f"- not run: {name}: {why}" for name, why in res.get("audit_skipped", {}).items()]
    return lines + [""]


def _model_notes(report):
    lines = []
    for label, res in report["models"].items():
        for name, attack in res["attacks"].items():
            s = attack.get("summary")
            if s:
                med = "n/a" if s["l2_median"] is None else f"{s['l2_median']:.3f}"
                lines.append(f"- {label}: {name}: median L2 {med} over the "
                             f"{s['num_adversarial_found']} adversarials found among "
                             f"{s.get('over', 'the clean-correct examples')} "
                             f"({s.get('attacked', s['num_clean_correct'])} run), "
                             f"{s['queries_mean']:.0f} queries on average (max "
                             f"{s['queries_max']})")
        rates = [f"{name} {t['examples_x_eps_per_second']:.1f}" for name, t in
                 ((n, a.get("throughput")) for n, a in res["attacks"].items())
                 if t and t.get("examples_x_eps_per_second")]
        if rates:
            lines.append(f"- {label}: examples x eps per second: {', '.join(rates)}")
        info = res["info"]
        lines.append(f"- {label}: {info['path']} ({info['format']}), per-sample steps "
                     f"{info.get('per_sample_steps', 'off')}"
                     + (f", ODE blocks {info['ode_blocks']}" if info.get("ode_blocks") else ""))
        for block, stats in res.get("probes", {}).get("solve_stats", {}).items():
            lines.append(f"- {label}: {block} on the first batch: " + ", ".join(
                f"{v:.1f} {k.replace('_', ' ')}" for k, v in stats.items()))
    src = report.get("source_model")
    if src:
        lines.append(f"- transfer: adversarials crafted on {loading.model_label(src)} "
                     f"({src['path']})")
    return lines


def _measured(report, key):
    """``(label, result)`` of the models whose optional measurement ``key`` ran."""
    return [(label, res[key]) for label, res in report["models"].items()
            if res.get(key) and "skipped" not in res[key]]


def _grid_markdown(report):
    lines = []
    for label, grid in _measured(report, "tolerance_grid"):
        tols = grid["tolerances"]
        lines += ["", f"### {label}: attack-time vs inference-time tolerance", "",
                  "PGD robust accuracy (%); row: rtol = atol of the model the attack "
                  "differentiates, column: of the model that classifies. Clean accuracy per "
                  "column: " + ", ".join(f"{t:g}: {100 * a:.2f}" for t, a in
                                         zip(tols, grid["clean_accuracy"])) + "."]
        for k, rows in grid["eps"].items():
            lines += ["", f"| eps {k}: attack \\ inference | " + " | ".join(
                f"{t:g}" for t in tols) + " |", "|---|" + "---|" * len(tols)]
            lines += [f"| {t:g} | " + " | ".join(f"{100 * v:.2f}" for v in row) + " |"
                      for t, row in zip(tols, rows)]
    for label, res in report["models"].items():
        skipped = (res.get("tolerance_grid") or {}).get("skipped")
        if skipped:
            lines += ["", f"- {label}: tolerance grid {skipped}"]
    return lines


def _trajectory_markdown(report):
    lines = []
    for label, traj in _measured(report, "trajectories"):
        first = next(iter(traj.values()))["random"]
        ode = first["kind"] == "ode"
        where, along, func = (("t", "the ODE trajectory", "ODE") if ode else
                              ("after block", "the residual blocks", "residual"))
        pos = first["positions"]
        mid, end = len(pos) // 2, len(pos) - 1
        lines += ["", f"### {label}: perturbation growth (Chu et al. 2020, Thm 3.1/3.2)", "",
                  f"|z - y| / |z(0) - y(0)| along {along} (median over samples, max in "
                  "brackets); |z - y| / |delta| at the end; empirical Lipschitz constant of "
                  f"the {func} function (median, max).",
                  "", f"| delta | eps | {where} {pos[mid]:g} | {where} {pos[end]:g} | "
                  "per input L2, end | Lipschitz median | Lipschitz max |",
                  "|---|---|---|---|---|---|---|"]
        for k, kinds in traj.items():
            for kind, sm in kinds.items():
                lips = [v for v in sm["lipschitz_median"] if v is not None]
                lmax = [v for v in sm["lipschitz_max"] if v is not None]
                lines.append(
                    f"| {kind} | {k} | {sm['growth_median'][mid]:.3f} ({sm['growth_max'][mid]:.3f})"
                    f" | {sm['growth_median'][end]:.3f} ({sm['growth_max'][end]:.3f}) | "
                    f"{sm['per_input_median'][end]:.3f} | {np.median(lips):.3f} | "
                    f"{max(lmax):.3f} |")
    return lines


@contextlib.contextmanager
def _figure(path, *, xlabel, ylabel, title, legend_size=7):
    """A 6x4 in. axes to draw on; labelled, then written to ``path`` atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    try:
        yield ax
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=legend_size)
        fig.tight_layout()
        with files.atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def plot_trajectories(report, path):
    """``trajectories.png``: median perturbation growth vs relative depth, per model."""
    with _figure(path, xlabel="relative depth (t / t1, or block / number of blocks)",
                 ylabel="median |z - y| / |z(0) - y(0)|",
                 title="perturbation growth through the network", legend_size=6) as ax:
        for label, traj in _measured(report, "trajectories"):
            m = list(report["models"]).index(label)  # a model's colour as in the other plot
            for k, kinds in traj.items():
                for style, (kind, sm) in zip(("--", "-"), kinds.items()):
                    pos = np.asarray(sm["positions"], float)
                    ax.plot(pos / pos[-1], sm["growth_median"], style, marker=".",
                            color=f"C{m}", alpha=0.4 + 0.6 * (k == max(traj, key=float)),
                            label=f"{label} {kind} eps {k}")


def plot(report, path):
    """``accuracy_vs_eps.png``: one curve per attack and the worst case, per model."""
    eps = sorted(report["eps"])
    keys = [outcomes.eps_key(e) for e in eps]
    styles = ["-", "--", ":", "-."]
    with _figure(path, xlabel="eps (Linf, [0, 1] pixel scale)", ylabel="accuracy (%)",
                 title=f"{report['dataset']}: accuracy vs eps "
                       f"({report['num_examples']} examples)") as ax:
        for m, (label, res) in enumerate(report["models"].items()):
            curves = [(name, a["cells"]) for name, a in res["attacks"].items()]
            curves.append(("worst case", res.get("worst_case", {})))
            for a, (name, cells) in enumerate(curves):
                if any(k not in cells for k in keys):
                    continue
                accs = [res["clean_accuracy"]] + [cells[k]["robust_accuracy"] for k in keys]
                ax.plot([0.0] + eps, [100 * v for v in accs], styles[m % len(styles)],
                        marker="o", color="black" if name == "worst case" else f"C{a}",
                        label=f"{label} {name}")
        ax.set_ylim(0, 100)


def write_report(report, output_dir):
    """Writes ``report.json``, ``report.md`` and the plots atomically; returns their paths."""
    paths = {"json": os.path.join(output_dir, "report.json"),
             "md": os.path.join(output_dir, "report.md"),
             "png": os.path.join(output_dir, "accuracy_vs_eps.png")}
    plot(report, paths["png"])
    if _measured(report, "trajectories"):
        paths["trajectories_png"] = os.path.join(output_dir, "trajectories.png")
        plot_trajectories(report, paths["trajectories_png"])
    files.write_text(paths["md"], markdown(report))
    files.write_json(paths["json"], {**report, "paths": paths})
    return paths


def sweep_markdown(sweep):
    """``sweep.md``: one row per step size h, each number with the run it comes from."""
    config = sweep["config"]
    keys = [outcomes.eps_key(e) for e in config["eps"]]
    source = sweep["source"]
    lines = [f"# Step-size sweep: {config['model']} on {config['dataset']}", "",
             f"Each member `y + h f(y)` trained with the same recipe "
             f"({_train_recipe(config)}), evaluated on the first {config['num_examples']} "
             f"{config['dataset']} test images: clean accuracy, and robust accuracy under "
             f"{config['transfer_attack'].upper()} crafted on the source model "
             f"`{source['model']}` {source['options']} (test accuracy "
             f"{_pct(source['test_accuracy'])}%, `{source['export']}`) and transferred "
             "(Chu et al. 2020, Sec. 4.1, Fig. 1).", "",
             "| h | clean (%) | " + " | ".join(f"eps {k} (%)" for k in keys)
             + " | params | epochs | train s | report |",
             "| --- " * (len(keys) + 6) + "|"]
    for row in sweep["members"]:
        epochs = f"{row['epochs']}" + (f" x {row['steps_per_epoch']} steps"
                                       if row["steps_per_epoch"] else "")
        lines.append(f"| {row['step_size']:g} | {_pct(row['clean_accuracy'])} | "
                     + " | ".join(_pct(row["robust_accuracy"][k]) for k in keys)
                     + f" | {row['num_params']:,} | {epochs} | {row['train_seconds']:.0f} | "
                     f"`{row['report']}` |")
    lines += ["", "Accuracy of the source on the transferred adversarials (%), per member: "
              + "; ".join(f"h {row['step_size']:g}: "
                          + ", ".join(_pct(row["source_accuracy"][k]) for k in keys)
                          for row in sweep["members"]) + ".", "",
              "![accuracy vs h](sweep.png)", ""]
    return "\n".join(lines)


def _train_recipe(config):
    options = config["train_options"]
    return ", ".join(f"{k} {v}" for k, v in sorted(options.items()) if v is not None) or \
        "tfnode.train's defaults"


def plot_sweep(sweep, path):
    """``sweep.png``: clean and transferred-attack accuracy vs h (log scale)."""
    config = sweep["config"]
    rows = sorted(sweep["members"], key=lambda r: r["step_size"])
    h = [r["step_size"] for r in rows]
    with _figure(path, xlabel="step size h (log scale)", ylabel="accuracy (%)",
                 title=f"{config['model']} on {config['dataset']}: accuracy vs h") as ax:
        ax.plot(h, [100 * r["clean_accuracy"] for r in rows], "-", marker="o",
                color="black", label="clean")
        for k, e in enumerate(config["eps"]):
            key = outcomes.eps_key(e)
            ax.plot(h, [100 * r["robust_accuracy"][key] for r in rows], "--", marker="o",
                    color=f"C{k}",
                    label=f"{config['transfer_attack'].upper()} (transferred) eps {key}")
        ax.set_xscale("log")
        ax.set_ylim(0, 100)


def write_sweep(sweep, output_dir):
    """Writes ``sweep.json``, ``sweep.md`` and ``sweep.png`` atomically; returns their paths."""
    paths = {"json": os.path.join(output_dir, "sweep.json"),
             "md": os.path.join(output_dir, "sweep.md"),
             "png": os.path.join(output_dir, "sweep.png")}
    plot_sweep(sweep, paths["png"])
    files.write_text(paths["md"], sweep_markdown(sweep))
    files.write_json(paths["json"], {**sweep, "paths": paths})
    return paths


def trials_markdown(summary):
    """``trials.md`` of a `tfnode.tune` search: one row per completed trial."""
    config, rows, front = summary["config"], summary["trials"], summary["pareto_front"]
    extra = [k for k in ("solver", "width") if any(k in r for r in rows)]
    head = ["trial", "rtol", "atol", *extra, "clean (%)", "robust (%)", "mean NFE", "score",
            "s", "Pareto"]
    lines = [f"# Tolerance search: {config['model']} on {config['dataset']}", "",
             f"{config['tuner']} tuner, objective {config['objective']} "
             f"({summary['objective']}), {len(rows)} completed trials, judged on the last "
             f"{config['validation_size']} training examples (robust: "
             f"PGD-{config['pgd_steps']} at eps {config['eps']:g}, step eps/4, random "
             f"start, on the first {config['robust_examples']} of them; exact gradients, "
             f"per-sample steps); {sum(r['seconds'] for r in rows):.0f} s of trials in all.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["trial"], f"{r['rtol']:.2e}", f"{r['atol']:.2e}"]
        cells += [str(r.get(k, "")) for k in extra]
        cells += [f"{100 * r['clean_accuracy']:.2f}", f"{100 * r['robust_accuracy']:.2f}",
                  f"{r['mean_nfe']:.1f}", f"{r['score']:.4f}", f"{r['seconds']:.0f}",
                  "yes" if r["trial"] in front else ""]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "![robust accuracy vs mean NFE](trials.png)", ""]
    return "\n".join(lines)


def plot_trials(summary, path):
    """``trials.png``: robust accuracy vs mean NFE, one point per trial, the Pareto front."""
    rows, front = summary["trials"], summary["pareto_front"]
    with _figure(path, xlabel="mean NFE (validation)", ylabel="robust accuracy (%)",
                 title=f"{summary['config']['model']}: tolerance trials") as ax:
        ax.scatter([r["mean_nfe"] for r in rows],
                   [100 * r["robust_accuracy"] for r in rows], label="trial")
        on = sorted((r for r in rows if r["trial"] in front), key=lambda r: r["mean_nfe"])
        ax.plot([r["mean_nfe"] for r in on], [100 * r["robust_accuracy"] for r in on],
                "r-o", label="Pareto front")
