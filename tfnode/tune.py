"""keras-tuner search over an ODE-Net's solver tolerances (``tools.tune``).

The user's trade-off is accuracy and robustness against solve cost: a looser tolerance
takes fewer function evaluations (NFE) and may change both accuracy and how well a
gradient attack works. Each trial trains ``get_model(model, rtol=..., atol=..., ...)``
with the main job's recipe, then measures on a validation split taken from the end of
the training set (never the test set): clean accuracy, mean NFE, and robust accuracy
under PGD (exact gradients through the solver, per-sample steps, so a sample's result
does not depend on its batch). The objective is one of them, or a score that charges
NFE. At the end: ``trials.json`` / ``trials.md``, ``trials.png`` (robust accuracy vs mean
NFE, the Pareto front marked) and ``best.cfg``, a flagfile ``tools.train`` takes as is.

A search resumes (keras-tuner's ``overwrite=False``), and runs distributed with
keras-tuner's chief/worker mode (``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP``,
``KERASTUNER_ORACLE_PORT``): the chief holds the oracle and writes the summary.
"""

import dataclasses
import os
import time
from typing import Any, Mapping

import keras
import keras_tuner
import numpy as np

from tfnode import attacks, data, files, loading, models, render, strategies
from tfnode import train as train_lib
from tfnode.errors import TfnodeError

TUNERS = ("bayesian", "hyperband", "random")
OBJECTIVES = ("clean", "robust", "score")
_OBJECTIVE_METRIC = {"clean": "clean_accuracy", "robust": "robust_accuracy",
                     "score": "score"}
PROJECT = "tuner"  # keras-tuner's project folder under output_dir


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """What `tune` searches and how each trial is trained and judged.

    Attributes:
      model, dataset: the model (an ODE model: it must take ``rtol``/``atol``) and data.
      model_options: fixed model options (e.g. ``width``).
      rtol_range, atol_range: log-scale search ranges.
      solvers: solvers to choose from (empty: the model's default, not searched).
      widths: widths to choose from (empty: not searched).
      tuner: ``bayesian``, ``hyperband`` or ``random``.
      max_trials: trials (Hyperband: its ``max_epochs`` is ``epochs``, and it stops by
        its own schedule).
      executions_per_trial: trainings per trial, averaged.
      objective: ``clean`` (validation accuracy), ``robust`` (validation accuracy under
        PGD) or ``score`` (``robust - nfe_weight * mean_nfe / 100``).
      eps, pgd_steps: the robust objective's PGD (step size ``eps / 4``, random start).
      nfe_weight: what 100 NFE cost in accuracy, for ``score``.
      validation_size: the last N training examples, held out to judge trials.
      robust_examples: how many of them PGD attacks.
      epochs, steps_per_epoch, batch_size, learning_rate, optimizer, lr_schedule: each
        trial's training (the main job's recipe by default).
      seed, data_dir, output_dir: as in the other apps.
      strategy: a `tfnode.strategies` name each trial trains under (``batch_size`` is
        the global batch).
    """
    model: str = "node"
    dataset: str = "mnist"
    model_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    rtol_range: tuple = (1e-5, 1e-1)
    atol_range: tuple = (1e-5, 1e-1)
    solvers: tuple = ()
    widths: tuple = ()
    tuner: str = "bayesian"
    max_trials: int = 10
    executions_per_trial: int = 1
    objective: str = "robust"
    eps: float = 0.1
    pgd_steps: int = 10
    nfe_weight: float = 0.1
    validation_size: int = 5000
    robust_examples: int = 500
    epochs: int = 1
    steps_per_epoch: int | None = None
    batch_size: int = 128
    learning_rate: float = 3e-3
    optimizer: str = "adam"
    lr_schedule: str = "cosine"
    seed: int = 0
    data_dir: str | None = None
    output_dir: str = "reports/tune"
    strategy: str = "default"


def validate(config):
    """One-line `TfnodeError` for a config that cannot work, before any work."""
    c = config
    if c.tuner not in TUNERS:
        raise TfnodeError(f"--tuner {c.tuner!r}: expected one of {list(TUNERS)}")
    if c.objective not in OBJECTIVES:
        raise TfnodeError(f"--objective {c.objective!r}: expected one of {list(OBJECTIVES)}")
    accepted = models.model_options(c.model)
    if not {"rtol", "atol"} <= set(accepted):
        raise TfnodeError(f"--model={c.model} has no solver tolerances to tune; expected an "
                          "ODE model (e.g. node)")
    for key in c.model_options:
        if key in ("rtol", "atol"):
            raise TfnodeError(f"--{key}: tools.tune searches it; give --{key}_range")
        if key not in accepted:
            raise TfnodeError(f"--{key} does not apply to --model={c.model}")
    for flag, (lo, hi) in (("rtol_range", c.rtol_range), ("atol_range", c.atol_range)):
        if not 0 < lo < hi:
            raise TfnodeError(f"--{flag} {lo:g},{hi:g}: expected 0 < low < high")
    for solver in c.solvers:
        models.get_model(c.model, dataset=c.dataset, **{**c.model_options, "solver": solver})
    for flag, value in (("max_trials", c.max_trials), ("pgd_steps", c.pgd_steps),
                        ("executions_per_trial", c.executions_per_trial),
                        ("validation_size", c.validation_size),
                        ("robust_examples", c.robust_examples), ("epochs", c.epochs)):
        if not (isinstance(value, int) and value >= 1):
            raise TfnodeError(f"--{flag} {value!r}: expected an integer >= 1")
    if not 0 < c.eps <= 1:
        raise TfnodeError(f"--eps {c.eps!r}: expected a number in (0, 1]")
    if c.nfe_weight < 0:
        raise TfnodeError(f"--nfe_weight {c.nfe_weight!r}: expected a number >= 0")
    strategies.check(c.strategy)
    train_lib.validate(model=c.model, dataset=c.dataset, epochs=c.epochs,
                       batch_size=c.batch_size, learning_rate=c.learning_rate,
                       optimizer=c.optimizer, lr_schedule=c.lr_schedule,
                       steps_per_epoch=c.steps_per_epoch, checkpoint_steps=None,
                       model_options={}, validation_size=c.validation_size)


class HyperModel(keras_tuner.HyperModel):
    """``get_model`` with searched tolerances (and solver, width), trained and judged.

    ``fit`` returns the trial's metrics: ``clean_accuracy``, ``robust_accuracy``,
    ``mean_nfe``, ``score`` and ``seconds``.
    """

    def __init__(self, config, validation, steps_per_epoch, log=print, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.log = log
        self.validation = validation  # (images float32, labels)
        self.steps_per_epoch = steps_per_epoch

    def options(self, hp):
        c = self.config
        options = dict(c.model_options)
        options["rtol"] = hp.Float("rtol", *c.rtol_range, sampling="log")
        options["atol"] = hp.Float("atol", *c.atol_range, sampling="log")
        if c.solvers:
            options["solver"] = hp.Choice("solver", list(c.solvers))
        if c.widths:
            options["width"] = hp.Choice("width", list(c.widths))
        return options

    def build(self, hp):
        c = self.config
        net = models.get_model(c.model, dataset=c.dataset, **self.options(hp))
        train_lib.compile_for_training(net, optimizer=c.optimizer,
                                       learning_rate=c.learning_rate,
                                       lr_schedule=c.lr_schedule,
                                       total_steps=c.epochs * self.steps_per_epoch)
        return net

    def fit(self, hp, model, train_ds, *, epochs=None, callbacks=None, verbose=0, **kwargs):
        c = self.config
        start = time.time()
        model.fit(train_ds, epochs=epochs or c.epochs, steps_per_epoch=c.steps_per_epoch,
                  callbacks=callbacks, verbose=verbose, shuffle=False)
        x, y = self.validation
        clean = model.evaluate(x, y, batch_size=c.batch_size, verbose=0, return_dict=True)
        judged = model
        if loading.ode_blocks(model):
            # Exact gradients through the solver; each sample its own steps.
            judged = models.with_solver_options(model, per_sample_steps=True)
        n = min(c.robust_examples, len(x))
        x_adv = attacks.pgd(judged, x[:n], y[:n], eps=c.eps, step_size=c.eps / 4,
                            num_steps=c.pgd_steps, rand_init=True, seed=c.seed)
        robust = float(np.mean(attacks.predict(judged, x_adv, batch_size=c.batch_size)
                               == y[:n]))
        nfe = float(clean.get("nfe", 0.0))
        return {"clean_accuracy": float(clean["accuracy"]), "robust_accuracy": robust,
                "mean_nfe": nfe, "score": robust - c.nfe_weight * nfe / 100.0,
                "seconds": time.time() - start}


class _Tuner(keras_tuner.Tuner):
    """Builds, trains and judges a trial; Hyperband's budget is the trial's epochs.

    Hyperband's own tuner would resume a promoted trial from its parent's weights; here
    each trial trains from scratch for ``tuner/epochs`` (simpler, and each trial's
    numbers are then those of a run ``best.cfg`` can repeat).
    """

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        epochs = hp.values.get("tuner/epochs")
        results = []
        config = self.hypermodel.config
        for execution in range(self.executions_per_trial):
            keras.utils.set_random_seed(config.seed + execution)
            strategy = strategies.get(config.strategy)
            with strategy.scope():
                model = self.hypermodel.build(hp)
            if config.strategy != "default":
                train_lib.build_for_strategy(model, strategy, args[0])
            results.append(self.hypermodel.fit(hp, model, *args, epochs=epochs, **kwargs))
        metrics = {k: float(np.mean([r[k] for r in results])) for k in results[0]}
        self.hypermodel.log(
            f"tfnode: trial {trial.trial_id}: rtol {hp.get('rtol'):.2e}, atol "
            f"{hp.get('atol'):.2e}: clean {metrics['clean_accuracy']:.4f}, robust "
            f"{metrics['robust_accuracy']:.4f}, mean NFE {metrics['mean_nfe']:.1f}, "
            f"{metrics['seconds']:.0f} s")
        return metrics


def _oracle(config):
    objective = keras_tuner.Objective(_OBJECTIVE_METRIC[config.objective], "max")
    if config.tuner == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(
            objective, max_trials=config.max_trials, seed=config.seed)
    if config.tuner == "random":
        return keras_tuner.oracles.RandomSearchOracle(
            objective, max_trials=config.max_trials, seed=config.seed)
    return keras_tuner.oracles.HyperbandOracle(
        objective, max_epochs=config.epochs, seed=config.seed,
        max_consecutive_failed_trials=3)


def _trials(tuner):
    rows = []
    for trial in tuner.oracle.trials.values():
        if trial.status != "COMPLETED":
            continue
        metrics = {k: trial.metrics.get_last_value(k) for k in
                   ("clean_accuracy", "robust_accuracy", "mean_nfe", "score", "seconds")}
        values = {k: v for k, v in trial.hyperparameters.values.items()
                  if not k.startswith("tuner/")}
        rows.append({"trial": trial.trial_id, **values, **metrics,
                     "epochs": trial.hyperparameters.values.get("tuner/epochs")})
    return sorted(rows, key=lambda r: r["trial"])


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
             f"{best[_OBJECTIVE_METRIC[config.objective]]:.4f}); judged on the last "
             f"{config.validation_size} training examples.",
             f"#   python -m tools.train --flagfile={os.path.join(config.output_dir, 'best.cfg')}",
             f"--model={config.model}", f"--dataset={config.dataset}"]
    options = {**config.model_options, **{k: best[k] for k in ("rtol", "atol", "solver",
                                                                 "width") if k in best}}
    lines += [f"--{k}={v}" for k, v in sorted(options.items())]
    # The trial's own budget, so that the flagfile repeats it; drop --steps_per_epoch (and
    # raise --epochs) for a full-length run.
    if config.steps_per_epoch:
        lines.append(f"--steps_per_epoch={config.steps_per_epoch}")
    lines += [f"--epochs={best.get('epochs') or config.epochs}",
              f"--batch_size={config.batch_size}", f"--learning_rate={config.learning_rate}",
              f"--optimizer={config.optimizer}", f"--lr_schedule={config.lr_schedule}",
              f"--seed={config.seed}"]
    return "\n".join(lines) + "\n"


def tune(config, *, log=print, verbose=0):
    """Runs (or resumes) the search; writes the summary unless this is a worker.

    Returns:
      ``{"trials": [...], "best": {...} or None, "resumed": int, "role": str}``.
    """
    validate(config)
    files.check_writable(config.output_dir, flag="--tune_dir")
    role = os.environ.get("KERASTUNER_TUNER_ID", "tuner0")
    keras.utils.set_random_seed(config.seed)
    x, y = data.load_arrays(config.dataset, "train", data_dir=config.data_dir)
    if config.validation_size >= len(x):
        raise TfnodeError(f"--validation_size {config.validation_size}: the {config.dataset} "
                          f"training split has only {len(x)} examples")
    validation = (x[-config.validation_size:].astype("float32") / 255.0,
                  y[-config.validation_size:])
    train_ds = data.load(config.dataset, "train", batch_size=config.batch_size,
                         data_dir=config.data_dir, seed=config.seed,
                         repeat=config.steps_per_epoch is not None, drop_remainder=True,
                         validation_size=config.validation_size)
    steps = config.steps_per_epoch or (len(x) - config.validation_size) // config.batch_size
    tuner = _Tuner(oracle=_oracle(config),
                   hypermodel=HyperModel(config, validation, steps, log=log),
                   executions_per_trial=config.executions_per_trial,
                   directory=config.output_dir, project_name=PROJECT, overwrite=False)
    # A worker's oracle is a client of the chief's: it has no trials of its own to count.
    worker = bool(os.environ.get("KERASTUNER_ORACLE_IP")) and "chief" not in role
    done = 0 if worker else len(_trials(tuner))
    finished = config.tuner != "hyperband" and done >= config.max_trials
    if finished:
        log(f"tfnode: the search in {config.output_dir} is finished ({done} trials); "
            "re-rendering its summary only")
    else:
        if done:
            log(f"tfnode: resuming the search in {config.output_dir}: {done} trials done")
        log(f"tfnode: {role}: {config.tuner} search over rtol/atol of {config.model} "
            f"({config.objective} objective), up to {config.max_trials} trials")
        start = time.time()
        tuner.search(train_ds, verbose=verbose)
        log(f"tfnode: {role}: search done in {time.time() - start:.0f} s")
    if worker:
        # Its trials are in the chief's oracle, which writes the summary.
        return {"trials": [], "best": None, "resumed": done, "role": role}
    rows = _trials(tuner)
    if not rows:
        raise TfnodeError("no trial completed; see the trials' messages under "
                          f"{os.path.join(config.output_dir, PROJECT)}")
    metric = _OBJECTIVE_METRIC[config.objective]
    best = max(rows, key=lambda r: r[metric])
    front = pareto_front(rows)
    summary = {"config": dataclasses.asdict(config), "objective": metric,
               "validation": f"the last {config.validation_size} of the "
                             f"{config.dataset} training split",
               "trials": rows, "pareto_front": front, "best": best,
               "versions": files.versions()}
    files.write_json(os.path.join(config.output_dir, "trials.json"), summary)
    files.write_text(os.path.join(config.output_dir, "trials.md"),
                     render.trials_markdown(summary))
    render.plot_trials(summary, os.path.join(config.output_dir, "trials.png"))
    files.write_text(os.path.join(config.output_dir, "best.cfg"), best_flagfile(config, best))
    log(f"tfnode: best trial {best['trial']}: rtol {best['rtol']:.2e}, atol "
        f"{best['atol']:.2e}, {metric} {best[metric]:.4f}; "
        f"{os.path.join(config.output_dir, 'trials.md')}, best.cfg")
    return {"trials": rows, "best": best, "resumed": done, "role": role}
