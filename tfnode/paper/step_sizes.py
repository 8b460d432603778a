"""The step-size sweep (Chu et al. 2020, Sec. 4.1, Fig. 1): one model family, one h each.

Chu et al. train ResNet-56 with ``y + h f(y)`` for h = 1, 1e-1, ..., 1e-10 on CIFAR-10 and
evaluate each on clean images and under FGSM at eps 0.1, 0.3 and 0.5 crafted on "a small
network with three residual blocks" and transferred. `run_sweep` trains that source
and every member of the family with `tfnode.training.train`, evaluates each member with
`tfnode.evaluation.evaluate` (the registered ``transfer`` attack, crafted on the source),
and writes one table and one plot (accuracy vs h, log scale).

A sweep resumes. Each member lives in ``<output_dir>/members/<name>/`` (its training run,
export and evaluation report); a member whose export exists is not trained again, one
whose report matches the sweep's evaluation is not evaluated again, a member killed in
training resumes from its last checkpoint (`tfnode.training`), and a finished sweep re-run
only re-renders its report. The sweep's settings are recorded in ``sweep_config.json``;
a re-run with other settings is refused rather than mixing two sweeps in one table.
"""

import dataclasses
import json
import math
import os
import time
from typing import Mapping

from tfnode import attacks, evaluation, figures, files, models, registry, training
from tfnode.errors import ConfigError, TfnodeError
from tfnode.evaluation import outcomes
from tfnode.evaluation.config import RULES as EVAL_RULES
from tfnode.exports import layout

# TrainConfig fields that a sweep passes through to every member's training.
TRAIN_OPTIONS = ("epochs", "batch_size", "learning_rate", "optimizer", "lr_schedule",
                 "weight_decay", "seed", "steps_per_epoch", "checkpoint_steps",
                 "eval_batch_size", "validation_size")
# The sweep's own recipe where its train_options leave a field unset (None or absent):
# one epoch at 1e-3, as the sweep has always trained, over `TrainConfig`'s defaults.
RECIPE = {"epochs": 1, "learning_rate": 1e-3}


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A step-size sweep; recorded verbatim in ``sweep.json``.

    Attributes:
      model: the family's registered model; it must take ``step_size``.
      dataset: dataset name.
      step_sizes: the values of h, one member each.
      model_options: the family's other model options (``width``, ``depth``, ...).
      train_options: `tfnode.training.TrainConfig` fields for every member and the
        source (`TRAIN_OPTIONS`; unset ones: `RECIPE`, then `TrainConfig`'s defaults).
      source_model: the registered model the transfer attack is crafted on.
      source_options: its model options (three residual blocks: ``num_blocks=3`` for the
        MNIST ``resnet``, ``depth=8`` for ``resnet56``).
      transfer_attack: the attack crafted on the source (Chu et al.: FGSM).
      eps: Linf budgets on the [0, 1] scale.
      num_examples: test examples each member is evaluated on.
      batch_size: evaluation batch size.
      data_dir: see `tfnode.data.load`.
      output_dir: the sweep's folder.
    """
    model: str = "resnet"
    dataset: str = "mnist"
    step_sizes: tuple = (1.0, 0.1, 0.01, 0.001, 1e-6)
    model_options: Mapping = dataclasses.field(default_factory=dict)
    train_options: Mapping = dataclasses.field(default_factory=dict)
    source_model: str = "resnet"
    source_options: Mapping = dataclasses.field(default_factory=lambda: {"num_blocks": 3})
    transfer_attack: str = "fgsm"
    eps: tuple = (0.1, 0.3, 0.5)
    num_examples: int = 1000
    batch_size: int = 100
    data_dir: str | None = None
    output_dir: str = "reports/step_sizes"


def member_name(h):
    """The folder name of the member with step size ``h`` (``h_1``, ``h_0.1``, ``h_1e-06``)."""
    return f"h_{float(h):g}"


_STEP_SIZE = registry.Rule(lambda h: registry.POSITIVE.ok(h) and math.isfinite(h),
                          "a number > 0")

# The fields' own rules (`tfnode.registry.check`); `validate` checks the rest.
RULES = {
    "step_sizes": registry.Rule(
        lambda v: isinstance(v, (tuple, list)) and len(v) >= 1
        and all(_STEP_SIZE.ok(h) for h in v), "one or more numbers > 0"),
    "eps": EVAL_RULES["eps"],
    "num_examples": registry.COUNT,
    "batch_size": registry.COUNT,
}


def validate(config):
    """Raises a one-line `ConfigError` (or `TfnodeError`) for a sweep that cannot work,
    before any training: its step sizes, model, source and training options, transfer
    attack and budgets."""
    registry.check(config, RULES)
    names = [member_name(h) for h in config.step_sizes]
    if len(set(names)) != len(names):
        raise ConfigError("step_sizes", f"has duplicates: {list(config.step_sizes)}")
    if "step_size" not in models.model_options(config.model):
        raise ConfigError("model", f"{config.model!r} takes no step_size; a step-size sweep "
                          "needs one of "
                          f"{[m for m in models.available() if 'step_size' in models.model_options(m)]}")
    if "step_size" in config.model_options:
        raise ConfigError("model_options.step_size", "is what the sweep varies; give "
                          "{step_sizes} instead")
    unknown = sorted(set(config.train_options) - set(TRAIN_OPTIONS))
    if unknown:
        raise ConfigError("train_options", f"has an unknown option {unknown[0]!r}; a sweep "
                          f"passes {list(TRAIN_OPTIONS)}")
    spec = attacks.get(config.transfer_attack)
    if not spec.transferable:
        raise ConfigError("transfer_attack", f"{config.transfer_attack!r} cannot be "
                          f"transferred; expected one of {attacks.available(transferable=True)}")
    accepted = models.model_options(config.source_model)
    for key in config.source_options:
        if key not in accepted:
            raise ConfigError(f"source_options.{key}", "does not apply to source model "
                              f"{config.source_model!r}; it takes {sorted(accepted)}")
    for name, options in ((config.model, {**config.model_options, "step_size": 1.0}),
                          (config.source_model, dict(config.source_options))):
        training.check(_recipe(config, model=name, model_options=options))
        models.get_model(name, dataset=config.dataset, **options)  # its option values


def _recipe(config, **fields):
    """A member's (or the source's) `TrainConfig`: `RECIPE`, then the sweep's
    train_options that are set, then ``fields``."""
    given = {k: v for k, v in config.train_options.items() if v is not None}
    return training.TrainConfig(**{**RECIPE, **given, "dataset": config.dataset,
                                   "data_dir": config.data_dir, **fields})


def _settings(config):
    return json.loads(json.dumps(dataclasses.asdict(config), default=list))


def _check_same_sweep(config):
    """Records the sweep's settings; refuses a folder that holds another sweep."""
    path = os.path.join(config.output_dir, "sweep_config.json")
    settings = {k: v for k, v in _settings(config).items() if k != "output_dir"}
    differ = files.saved_settings_differ(path, settings)
    if differ:
        raise ConfigError("output_dir", f"{config.output_dir!r} holds a sweep with other "
                          f"settings ({', '.join(differ)}); re-run it with the same "
                          "settings, or pass another {output_dir}")
    if not os.path.isfile(path):
        files.write_json(path, settings)


def _member_dir(config, name):
    return os.path.join(config.output_dir, "members", name)


def _export_path(config, name):
    return os.path.join(_member_dir(config, name), "export", name, "1")


def _train_member(config, name, model, model_options, log, verbose):
    """Trains one member unless its export exists; returns ``(export path, trained now)``."""
    path = _export_path(config, name)
    if layout.extra_file(path, "metrics.json"):
        return path, False
    log(f"tfnode: sweep member {name}: training {model} {dict(model_options)}")
    member = _member_dir(config, name)
    recipe = _recipe(config, model=model, model_options=dict(model_options),
                     model_dir=os.path.join(member, "run"),
                     export_dir=os.path.join(member, "export"), export_name=name)
    metrics = training.train(recipe, verbose=verbose, log=log,
                             record={"sweep": config.output_dir, "member": name})
    if os.path.normpath(metrics["export_path"]) != os.path.normpath(path):
        raise TfnodeError(f"sweep member {name}: exported to {metrics['export_path']!r}, "
                          f"expected {path!r}; remove {os.path.join(member, 'export')!r}")
    return path, True


def _eval_config(config, name, source_path):
    return evaluation.EvalConfig(model_path=_export_path(config, name), dataset=config.dataset,
                      attacks=("transfer",), eps=tuple(float(e) for e in config.eps),
                      num_examples=config.num_examples, batch_size=config.batch_size,
                      data_dir=config.data_dir, source_model_path=source_path,
                      output_dir=os.path.join(_member_dir(config, name), "eval"),
                      attack_options={"transfer": {"attack": config.transfer_attack}})


def _evaluate_member(config, name, source_path, log, verbose):
    """Evaluates one member unless its report matches; returns ``(report, evaluated now)``."""
    eval_config = _eval_config(config, name, source_path)
    path = os.path.join(eval_config.output_dir, "report.json")
    expected = json.loads(json.dumps(dataclasses.asdict(eval_config), default=list))
    if os.path.isfile(path):
        with open(path) as f:
            report = json.load(f)
        if report.get("config") == expected and _same_models(report, eval_config):
            return report, False
    log(f"tfnode: sweep member {name}: evaluating")
    return evaluation.evaluate(eval_config, record={"sweep": config.output_dir, "member": name},
                               log=log, verbose=verbose), True


def _trained_fingerprint(path):
    with open(layout.extra_file(path, "metrics.json")) as f:
        return json.load(f).get("fingerprint")


def _same_models(report, eval_config):
    """Whether a saved member report evaluated the weights now exported: a fresh clone
    holds the committed reports but retrains the members and the source (their exports
    are not committed), and a report is reused only where retraining gave the same
    weights (`tfnode.exports.read.fingerprint`)."""
    (result,) = report["models"].values()
    return (result["info"].get("fingerprint")
            == _trained_fingerprint(eval_config.model_path)
            and (report.get("source_model") or {}).get("fingerprint")
            == _trained_fingerprint(eval_config.source_model_path))


def _row(config, name, h, report):
    with open(layout.extra_file(_export_path(config, name), "metrics.json")) as f:
        metrics = json.load(f)
    (result,) = report["models"].values()
    cells = result["attacks"]["transfer"]["cells"]
    keys = [outcomes.eps_key(e) for e in config.eps]
    return {"name": name, "step_size": h, "clean_accuracy": result["clean_accuracy"],
            "robust_accuracy": {k: cells[k]["robust_accuracy"] for k in keys},
            "source_accuracy": {k: cells[k].get("source_accuracy") for k in keys},
            "test_accuracy": metrics["clean_accuracy"], "num_params": metrics["num_params"],
            "train_seconds": metrics["train_seconds"],
            "epochs": metrics["settings"]["epochs"],
            "steps_per_epoch": metrics["settings"]["steps_per_epoch"],
            "export": _export_path(config, name),
            "report": os.path.join(_member_dir(config, name), "eval", "report.json")}


def run_sweep(config, *, log=print, verbose=1):
    """Trains and evaluates every member not done yet; writes the sweep's report.

    Args:
      config: a `SweepConfig`.
      log: where progress lines go.
      verbose: Keras progress bars.

    Returns:
      The sweep report (also ``sweep.json``), with ``paths`` of the files written and
      ``done_now``: the members trained or evaluated by this call.
    """
    start = time.time()
    validate(config)
    files.check_writable(config.output_dir, field="output_dir")
    _check_same_sweep(config)
    done_now = []
    source_path, trained = _train_member(config, "source", config.source_model,
                                         config.source_options, log, verbose)
    if trained:
        done_now.append("source")
    rows = []
    for h in config.step_sizes:
        name = member_name(h)
        _, trained = _train_member(config, name, config.model,
                                   {**config.model_options, "step_size": float(h)}, log,
                                   verbose)
        report, evaluated = _evaluate_member(config, name, source_path, log, verbose)
        if trained or evaluated:
            done_now.append(name)
        rows.append(_row(config, name, float(h), report))
    with open(layout.extra_file(source_path, "metrics.json")) as f:
        source_metrics = json.load(f)
    sweep = {"config": _settings(config), "members": rows,
             "source": {"model": config.source_model, "options": dict(config.source_options),
                        "export": source_path,
                        "test_accuracy": source_metrics["clean_accuracy"],
                        "num_params": source_metrics["num_params"]},
             "done_now": done_now, "seconds": time.time() - start,
             "versions": files.versions()}
    sweep["paths"] = write_sweep(sweep, config.output_dir)
    log(f"tfnode: sweep report {sweep['paths']['md']}"
        + ("" if done_now else " (every member was done: re-rendered only)"))
    return sweep


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
             f"{figures.pct(source['test_accuracy'])}%, `{source['export']}`) and transferred "
             "(Chu et al. 2020, Sec. 4.1, Fig. 1).", "",
             "| h | clean (%) | " + " | ".join(f"eps {k} (%)" for k in keys)
             + " | params | epochs | train s | report |",
             "| --- " * (len(keys) + 6) + "|"]
    for row in sweep["members"]:
        epochs = f"{row['epochs']}" + (f" x {row['steps_per_epoch']} steps"
                                       if row["steps_per_epoch"] else "")
        lines.append(f"| {row['step_size']:g} | {figures.pct(row['clean_accuracy'])} | "
                     + " | ".join(figures.pct(row["robust_accuracy"][k]) for k in keys)
                     + f" | {row['num_params']:,} | {epochs} | {row['train_seconds']:.0f} | "
                     f"`{row['report']}` |")
    lines += ["", "Accuracy of the source on the transferred adversarials (%), per member: "
              + "; ".join(f"h {row['step_size']:g}: "
                          + ", ".join(figures.pct(row["source_accuracy"][k]) for k in keys)
                          for row in sweep["members"]) + ".", "",
              "![accuracy vs h](sweep.png)", ""]
    return "\n".join(lines)


def _train_recipe(config):
    options = config["train_options"]
    return ", ".join(f"{k} {v}" for k, v in sorted(options.items()) if v is not None) or \
        "the sweep's recipe (tfnode.paper.step_sizes.RECIPE over TrainConfig's defaults)"


def plot_sweep(sweep, path):
    """``sweep.png``: clean and transferred-attack accuracy vs h (log scale)."""
    config = sweep["config"]
    rows = sorted(sweep["members"], key=lambda r: r["step_size"])
    h = [r["step_size"] for r in rows]
    with figures.figure(path, xlabel="step size h (log scale)", ylabel="accuracy (%)",
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
