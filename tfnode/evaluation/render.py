"""Report files from report dicts: ``report.md``, the plots, ``report.json``.

Pure functions of the report dict that `tfnode.evaluation` builds (no model, no attack),
so an old ``report.json`` renders again.
"""

import json
import os

import numpy as np

from tfnode import figures, files
from tfnode.evaluation import outcomes
from tfnode.exports import read as loading


def _headers(report):
    scale = report["eps_scale"]
    return [f"{e:g}" if scale == 1 else f"{e * scale:g}/{scale:g}" for e in report["eps"]]


def _eps_label(report, key):
    """An eps key as the user gave it (``8/255`` for budgets given as fractions of 255)."""
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
    lines += [f"n = {report['num_examples']} images in every cell; brackets: the 95% Wilson "
              "interval.", "",
              "| model | clean | " + " | ".join(f"worst case, eps {h}" for h in head) + " |",
              "|---|---|" + "---|" * len(head)]
    for label, res in report["models"].items():
        wc = res.get("worst_case", {})
        not_conv = set((res.get("verdict") or {}).get("not_converged", []))
        lines.append(f"| {_model_ref(label, res)} | {figures.pct(res['clean_accuracy'])} | "
                     + " | ".join(
            (_with_interval(wc[k]) + (" (standard attack not converged)"
                                      if k in not_conv else "")) if k in wc else "-"
            for k in keys) + " |")
    lines.append("")
    lines += _bracket_markdown(report, keys, head)
    lines += _comparison_markdown(report)
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
                         + f" | {figures.pct(res['clean_accuracy'])} | " + " | ".join(
                             _with_interval(attack["cells"][k])
                             if k in attack["cells"] else "-" for k in keys) + " |")
    lines.append("")
    lines += _model_notes(report)
    lines += _grid_markdown(report) + _trajectory_markdown(report)
    lines += ["", "Attack settings: `" + json.dumps(report["attack_options"], sort_keys=True)
              + "`", "", f"Versions: `{json.dumps(report['versions'], sort_keys=True)}`", ""]
    return "\n".join(lines)


def _model_ref(label, res):
    """A model's label with its weights' fingerprint (`tfnode.exports.read.fingerprint`)."""
    fp = (res.get("info") or {}).get("fingerprint")
    return f"{label} `{fp}`" if fp else label


def _with_interval(entry):
    """A cell's robust accuracy (%) with its 95% Wilson interval, where it has one."""
    return figures.pct_interval(entry["robust_accuracy"], entry.get("ci95"))


def _bracket_markdown(report, keys, head):
    """Certified <= robust <= worst case, per model and eps (``--certify``)."""
    rows = [(label, res) for label, res in report["models"].items() if res.get("certified")]
    if not rows:
        return []
    lines = ["The truth bracketed (`--certify`): certified by interval bound propagation "
             "(no attack can break these) <= robust accuracy <= the attacks' worst case "
             "(%, 95% Wilson intervals).", "",
             "| model | bound | " + " | ".join(f"eps {h}" for h in head) + " |",
             "|---|---|" + "---|" * len(head)]
    for label, res in rows:
        cert, wc = res["certified"], res.get("worst_case", {})
        broken = {f["eps"] for f in res.get("checks", [])
                  if f["check"] == "certificate holds" and not f["passed"]}
        lines.append(f"| {label} | certified | " + " | ".join(
            (figures.pct_interval(cert[k]["certified_accuracy"], cert[k]["ci95"])
             + (" (an attack broke a certified example: not a certificate)"
                if k in broken else "")) if k in cert else "-" for k in keys) + " |")
        lines.append(f"| {label} | worst case | " + " | ".join(
            _with_interval(wc[k]) if k in wc else "-" for k in keys) + " |")
        grey = res.get("grey_image")
        within = [outcomes.exact_eps(res, k) >= grey["pixel"] for k in keys] if grey else []
        if any(within):
            # The mid-grey image is in every ball from eps 0.5 (`tfnode.evaluation.grey`).
            bound = float(np.mean(outcomes.decode(grey["possible"])
                                  & outcomes.decode(res["clean_correct"])))
            lines.append(f"| {label} | at most (the grey image, class {grey['label']}) | "
                         + " | ".join(figures.pct(bound) if inside else "-"
                                      for inside in within) + " |")
    return lines + [""]


def _comparison_markdown(report):
    """The two models' clean predictions and worst cases on the same examples: the
    exact McNemar test."""
    rows = [c for c in report.get("comparisons") or []
            if c["attack"] in ("clean", "worst case")]
    if not rows:
        return []
    lines = ["Clean and worst case, paired on the same images (exact two-sided McNemar "
             "test; uncorrected p, one test per row):", "",
             "| models | eps | difference (points) | correct / robust under the first "
             "only | under the second only | p |", "|---|---|---|---|---|---|"]
    for c in rows:
        eps = "clean" if c["eps"] is None else _eps_label(report, c["eps"])
        lines.append(f"| {c['a']} vs {c['b']} | {eps} | "
                     f"{100 * c['difference']:+.2f} | {c['a_only']} | {c['b_only']} | "
                     f"{c['p_value']:.3g} |")
    return lines + [""]


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
            lines.append(f"- eps {eps(k)}: worst case **{figures.pct(wc['robust_accuracy'])}%** "
                         f"({wc['num_robust']}/{wc['num_examples']}) over "
                         f"{len(wc['attacks'])} attacks; strongest single attack "
                         f"{best['attack']} {figures.pct(best['robust_accuracy'])}%"
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
        lines.append(f"- {label}: {info['path']} ({info['format']}"
                     + (f", weights {info['fingerprint']}" if info.get("fingerprint") else "")
                     + "), per-sample steps "
                     f"{info.get('per_sample_steps', 'off')}"
                     + (f", re-solved with {info['solver_options']} (not as trained)"
                        if info.get("solver_options") else "")
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


def plot_trajectories(report, path):
    """``trajectories.png``: median perturbation growth vs relative depth, per model."""
    with figures.figure(path, xlabel="relative depth (t / t1, or block / number of blocks)",
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
    with figures.figure(path, xlabel="eps (Linf, [0, 1] pixel scale)", ylabel="accuracy (%)",
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
