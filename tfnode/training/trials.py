"""A tolerance search's trials as pages: the Pareto front, ``trials.md``, ``trials.png``
and ``best.cfg``, a flagfile ``tools.train`` takes as is (`tfnode.training.tune` runs the
search)."""

import os

from tfnode import figures

# The metric each objective maximizes.
OBJECTIVE_METRIC = {"clean": "clean_accuracy", "robust": "robust_accuracy", "score": "score"}


def pareto_front(rows):
    """Trials no other trial beats on both robust accuracy (higher) and NFE (lower)."""
    front = []
    for r in rows:
        if not any(o["robust_accuracy"] >= r["robust_accuracy"] and o["mean_nfe"] <= r[
                "mean_nfe"] and (o["robust_accuracy"], o["mean_nfe"]) != (
                r["robust_accuracy"], r["mean_nfe"]) for o in rows):
            front.append(r["trial"])
    return front


def best_flagfile(config, best):
    """``best.cfg``: the best trial as flags ``tools.train`` accepts unchanged."""
    lines = [f"# tools.tune's best trial ({best['trial']}, objective {config.objective}: "
             f"{best[OBJECTIVE_METRIC[config.objective]]:.4f}); judged on the last "
             f"{config.recipe.validation_size} training examples.",
             f"#   python -m tools.train --flagfile={os.path.join(config.output_dir, 'best.cfg')}",
             f"--model={config.recipe.model}", f"--dataset={config.recipe.dataset}"]
    options = {**config.recipe.model_options, **{k: best[k] for k in ("rtol", "atol", "solver",
                                                                 "width") if k in best}}
    lines += [f"--model_option={k}={v}" for k, v in sorted(options.items())]
    # The trial's own budget, so that the flagfile repeats it; drop --steps_per_epoch (and
    # raise --epochs) for a full-length run.
    if config.recipe.steps_per_epoch:
        lines.append(f"--steps_per_epoch={config.recipe.steps_per_epoch}")
    lines += [f"--epochs={best.get('epochs') or config.recipe.epochs}",
              f"--batch_size={config.recipe.batch_size}", f"--learning_rate={config.recipe.learning_rate}",
              f"--optimizer={config.recipe.optimizer}", f"--lr_schedule={config.recipe.lr_schedule}",
              f"--seed={config.recipe.seed}"]
    return "\n".join(lines) + "\n"


def markdown(summary):
    """``trials.md`` of a `tfnode.training.tune` search: one row per completed trial."""
    config, rows, front = summary["config"], summary["trials"], summary["pareto_front"]
    recipe = config["recipe"]  # each trial's training (tfnode.training.TrainConfig)
    extra = [k for k in ("solver", "width") if any(k in r for r in rows)]
    head = ["trial", "rtol", "atol", *extra, "clean (%)", "robust (%)", "mean NFE", "score",
            "s", "Pareto"]
    lines = [f"# Tolerance search: {recipe['model']} on {recipe['dataset']}", "",
             f"{config['tuner']} tuner, objective {config['objective']} "
             f"({summary['objective']}), {len(rows)} completed trials, judged on the last "
             f"{recipe['validation_size']} training examples (robust: "
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


def plot(summary, path):
    """``trials.png``: robust accuracy vs mean NFE, one point per trial, the Pareto front."""
    rows, front = summary["trials"], summary["pareto_front"]
    with figures.figure(path, xlabel="mean NFE (validation)", ylabel="robust accuracy (%)",
                 title=f"{summary['config']['recipe']['model']}: tolerance trials") as ax:
        ax.scatter([r["mean_nfe"] for r in rows],
                   [100 * r["robust_accuracy"] for r in rows], label="trial")
        on = sorted((r for r in rows if r["trial"] in front), key=lambda r: r["mean_nfe"])
        ax.plot([r["mean_nfe"] for r in on], [100 * r["robust_accuracy"] for r in on],
                "r-o", label="Pareto front")
