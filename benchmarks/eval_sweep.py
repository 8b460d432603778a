"""The fast evaluation schedule against the exhaustive one: time ratio and every cell.

    python -m benchmarks.eval_sweep --flagfile=flags/eval_mnist.cfg \
        --model_path=savedmodels/node_mnist/1 --compare_model_path=savedmodels/resnet_mnist/1 \
        --num_examples=500 --output_dir=reports/eval_sweep

Runs each model's whole sweep (the flagfile's attacks, eps and options, the same first
``--num_examples`` images, seed and batch) twice, with ``--schedule=exhaustive`` (every
attack on every example at every eps, the last iterate kept: tfnode before the fast
schedule) and ``--schedule=fast`` (`tfnode.evaluation.SCHEDULES`), interleaved: the first
model exhaustive then fast, the second fast then exhaustive, so that a drift of the
machine's speed falls on both. Prints per model the time of each, their ratio, both
tables of robust accuracy, and whether every fast cell and every worst case is at most
the exhaustive one (the fast schedule may only find more adversarials: first success
instead of last iterate; an attack on the other attacks' survivors counts what any of
them broke). Reports go to ``<output_dir>/<model>_<schedule>``; the summary to
``<output_dir>/eval_sweep.json``.
"""

import dataclasses
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", message="The structure of `inputs`")

from absl import app  # noqa: E402
from absl import flags as absl_flags  # noqa: E402

from flags import common, configs  # noqa: E402

common.define_evaluate_flags()
FLAGS = absl_flags.FLAGS


def compare(exhaustive, fast):
    """Cell by cell: ``{"cells": [(attack, eps key, exhaustive, fast)], "worst_case":
    [(eps key, exhaustive, fast)], "violations": [...]}`` for one model's results."""
    rows, worst, violations = [], [], []
    for name, attack in exhaustive["attacks"].items():
        for key, cell in attack["cells"].items():
            f = fast["attacks"][name]["cells"][key]["robust_accuracy"]
            rows.append((name, key, cell["robust_accuracy"], f))
            if f > cell["robust_accuracy"]:
                violations.append(f"{name} eps {key}: fast {f:.4f} > exhaustive "
                                  f"{cell['robust_accuracy']:.4f}")
    for key, wc in exhaustive["worst_case"].items():
        f = fast["worst_case"][key]["robust_accuracy"]
        worst.append((key, wc["robust_accuracy"], f))
        if f > wc["robust_accuracy"]:
            violations.append(f"worst case eps {key}: fast {f:.4f} > exhaustive "
                              f"{wc['robust_accuracy']:.4f}")
    return {"cells": rows, "worst_case": worst, "violations": violations}


def floor(exhaustive, fast, num_examples):
    """Seconds any exact schedule must spend, priced at the exhaustive run's rates.

    An example that ends robust in the fast run's worst case at an eps survived every
    attack there, so no schedule that reports that worst case exactly can have cut any
    attack short on it: each budget attack ran its whole budget on it at that eps, and
    each distance-minimizing attack (run once for all eps) ran all its queries on it if
    it is robust at the smallest eps. Priced per example at the exhaustive run's seconds
    per attacked example of that cell. Returns ``{"seconds": total, "attacks": {name:
    seconds}}``; ``seconds / exhaustive seconds`` is the lowest ratio an exact fast
    schedule can reach with these attacks on this model.
    """
    from tfnode.attacks import registry

    robust = {key: round(wc["robust_accuracy"] * num_examples)
              for key, wc in fast["worst_case"].items()}
    per_attack = {}
    for name, attack in exhaustive["attacks"].items():
        cells = attack["cells"]
        if registry.get(attack["meta"]["attack"]).minimizes_distance:
            key = min(cells, key=float)
            per_attack[name] = cells[key]["seconds"] * robust[key] / cells[key]["attacked"]
        else:
            per_attack[name] = sum(c["seconds"] * robust[k] / c["attacked"]
                                   for k, c in cells.items() if c["attacked"])
    return {"seconds": sum(per_attack.values()), "attacks": per_attack}


def table(label, result, seconds):
    eps = sorted({k for _, k, _, _ in result["cells"]}, key=float)
    lines = [f"{label} (seconds {seconds['exhaustive']:.0f} exhaustive, {seconds['fast']:.0f} "
             f"fast, ratio {seconds['fast'] / seconds['exhaustive']:.3f}); robust accuracy "
             "% exhaustive / fast", "| attack | " + " | ".join(f"eps {k}" for k in eps) + " |",
             "|---|" + "---|" * len(eps)]
    cells = {(n, k): (e, f) for n, k, e, f in result["cells"]}
    for name in dict.fromkeys(n for n, _, _, _ in result["cells"]):
        lines.append(f"| {name} | " + " | ".join(
            f"{100 * cells[name, k][0]:.1f} / {100 * cells[name, k][1]:.1f}"
            if (name, k) in cells else "-" for k in eps) + " |")
    worst = {k: (e, f) for k, e, f in result["worst_case"]}
    lines.append("| worst case | " + " | ".join(
        f"{100 * worst[k][0]:.1f} / {100 * worst[k][1]:.1f}" if k in worst else "-"
        for k in eps) + " |")
    return "\n".join(lines)


def main(argv):
    del argv
    from tools import _run

    def run():
        from tfnode import evaluation, files

        base = configs.evaluate_config(FLAGS)
        out_dir = base.output_dir or "reports/eval_sweep"
        paths = [p for p in (base.model_path, base.compare_model_path) if p]
        summary = {"num_examples": base.num_examples, "attacks": list(base.attacks),
                   "eps": list(base.eps), "models": {}}
        total = {"exhaustive": 0.0, "fast": 0.0}
        for m, path in enumerate(paths):
            order = ("exhaustive", "fast") if m % 2 == 0 else ("fast", "exhaustive")
            results, seconds = {}, {}
            label = os.path.basename(os.path.dirname(path.rstrip("/"))) or f"model{m}"
            for schedule in order:
                config = dataclasses.replace(
                    base, model_path=path, compare_model_path=None, schedule=schedule,
                    output_dir=os.path.join(out_dir, f"{label}_{schedule}"))
                report = evaluation.evaluate(config, log=print, verbose=0)
                (results[schedule],) = report["models"].values()
                seconds[schedule] = report["wall_seconds"]
                total[schedule] += report["wall_seconds"]
            result = compare(results["exhaustive"], results["fast"])
            result["floor"] = floor(results["exhaustive"], results["fast"], base.num_examples)
            throughput = {s: {n: a["throughput"] for n, a in results[s]["attacks"].items()}
                          for s in results}
            summary["models"][label] = {"seconds": seconds, "order": list(order),
                                        "throughput": throughput, **result}
            print(table(label, result, seconds))
            print(f"{label}: floor of an exact schedule {result['floor']['seconds']:.0f} s, "
                  f"ratio {result['floor']['seconds'] / seconds['exhaustive']:.3f} ("
                  + ", ".join(f"{n} {v:.0f} s" for n, v in result["floor"]["attacks"].items())
                  + ")")
            for v in result["violations"]:
                print(f"VIOLATION {label}: {v}")
        summary["seconds"] = total
        summary["ratio"] = total["fast"] / total["exhaustive"]
        summary["floor_ratio"] = sum(r["floor"]["seconds"] for r in summary["models"].values()
                                     ) / total["exhaustive"]
        print(f"all models: exhaustive {total['exhaustive']:.0f} s, fast {total['fast']:.0f} s, "
              f"ratio {summary['ratio']:.3f} (floor of an exact schedule "
              f"{summary['floor_ratio']:.3f}); every fast cell <= exhaustive: "
              f"{not any(r['violations'] for r in summary['models'].values())}")
        files.write_json(os.path.join(out_dir, "eval_sweep.json"), summary)

    _run.run_main(run)


if __name__ == "__main__":
    app.run(main)
