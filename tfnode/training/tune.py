"""keras-tuner search over an ODE-Net's solver tolerances (``tools.tune``).

The user's trade-off is accuracy and robustness against solve cost: a looser tolerance
takes fewer function evaluations (NFE) and may change both accuracy and how well a
gradient attack works. Each trial trains ``get_model(model, rtol=..., atol=..., ...)``
with the main job's recipe, then measures on a validation split taken from the end of
the training set (never the test set): clean accuracy, mean NFE, and robust accuracy
under PGD (exact gradients through the solver, per-sample steps, so a sample's result
does not depend on its batch; an example counts as robust only if it is classified
correctly both clean and attacked, as in tfnode's evaluation). The objective is one of
them, or a score that charges NFE. At the end: ``trials.json`` / ``trials.md``,
``trials.png`` (robust accuracy vs mean NFE, the Pareto front marked) and ``best.cfg``, a
flagfile ``tools.train`` takes as is.

A search resumes (keras-tuner's ``overwrite=False``), and runs distributed with
keras-tuner's chief/worker mode (``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP``,
``KERASTUNER_ORACLE_PORT``): the chief holds the oracle and writes the summary.
"""

import dataclasses
import os
import time

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from tfnode import attacks, data, files, models, registry
from tfnode.errors import ConfigError, TfnodeError
from tfnode.exports import read as loading
from tfnode.training import fit as fit_lib, loop, strategies, trials
from tfnode.training.config import TrainConfig, check as check_recipe

TUNERS = ("bayesian", "hyperband", "random")
OBJECTIVES = ("clean", "robust", "score")
PROJECT = "tuner"  # keras-tuner's project folder under output_dir


# Each trial's training where a search leaves it: the main job's recipe (`TrainConfig`'s
# defaults) for one epoch, judged on the last 5000 training examples.
RECIPE = TrainConfig(epochs=1, validation_size=5000)


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """What `tune` searches and how each trial is trained and judged.

    Attributes:
      recipe: each trial's training (`tfnode.training.TrainConfig`: the model, an ODE
        model that takes ``rtol``/``atol``, its fixed model options, the data, the
        optimizer and schedule, epochs, seed, strategy); ``validation_size``: the last
        N training examples, held out to judge trials. Default: `RECIPE`.
      rtol_range, atol_range: log-scale search ranges.
      solvers: solvers to choose from (empty: the model's default, not searched).
      widths: widths to choose from (empty: not searched).
      tuner: ``bayesian``, ``hyperband`` or ``random``.
      max_trials: trials (Hyperband: its ``max_epochs`` is the recipe's ``epochs``, and
        it stops by its own schedule).
      executions_per_trial: trainings per trial, averaged.
      objective: ``clean`` (validation accuracy), ``robust`` (validation accuracy under
        PGD) or ``score`` (``robust - nfe_weight * mean_nfe / 100``).
      eps, pgd_steps: the robust objective's PGD (step size ``eps / 4``, random start).
      nfe_weight: what 100 NFE cost in accuracy, for ``score``.
      robust_examples: how many validation examples PGD attacks.
      output_dir: the search's folder.
    """
    recipe: TrainConfig = RECIPE
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
    robust_examples: int = 500
    output_dir: str = "reports/tune"


def flat_config(**fields):
    """A `TuneConfig` from flat fields: `TrainConfig`'s go into its recipe (over
    `RECIPE`), the others are the search's."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    recipe = dataclasses.replace(RECIPE, **{k: v for k, v in fields.items() if k in names})
    return TuneConfig(recipe=recipe, **{k: v for k, v in fields.items() if k not in names})


RULES = {"tuner": registry.one_of(*TUNERS), "objective": registry.one_of(*OBJECTIVES),
         "max_trials": registry.COUNT, "pgd_steps": registry.COUNT,
         "executions_per_trial": registry.COUNT, "robust_examples": registry.COUNT,
         "eps": registry.UNIT, "nfe_weight": registry.NONNEGATIVE}


def validate(config):
    """One-line `ConfigError` (or `TfnodeError`) for a config that cannot work, before
    any work. The recipe's fields are named as themselves (``model``, not ``recipe.model``):
    the apps give them as flags of their own."""
    c, r = config, config.recipe
    registry.check(c, RULES)
    accepted = models.model_options(r.model)
    if not {"rtol", "atol"} <= set(accepted):
        raise ConfigError("model", f"{r.model!r} has no solver tolerances to tune; expected "
                          "an ODE model (e.g. node)")
    for key in r.model_options:
        if key in ("rtol", "atol"):
            raise ConfigError(f"model_options.{key}",
                              f"is searched by tools.tune; give {{{key}_range}} instead")
        if key not in accepted:
            raise ConfigError(f"model_options.{key}", f"does not apply to model {r.model!r}; "
                              f"it takes {sorted(accepted)}")
    for field, (lo, hi) in (("rtol_range", c.rtol_range), ("atol_range", c.atol_range)):
        if not 0 < lo < hi:
            raise ConfigError(field, f"{lo:g},{hi:g}: expected 0 < low < high")
    for solver in c.solvers:
        models.get_model(r.model, dataset=r.dataset, **{**r.model_options, "solver": solver})
    # The model options were checked above (rtol and atol are searched, not given).
    check_recipe(dataclasses.replace(r, model_options={}))
    registry.check(r, {"validation_size": registry.COUNT})  # trials are judged on it
    if r.strategy == "multi_worker":
        # Under multi_worker every worker trains the same model in lockstep; keras-tuner's
        # distributed search gives each of its workers trials of their own.
        raise ConfigError("strategy", "'multi_worker': a search's workers train different "
                          "trials (keras-tuner's chief/worker mode, KERASTUNER_* variables: "
                          "docs/tuning.md), while multi_worker makes every worker train one "
                          "model; tune with 'default' or 'mirrored', then train the chosen "
                          "settings with tools.train --strategy=multi_worker")


def robust_mask(clean_pred, adv_pred, y):
    """Which examples are robust: classified correctly both clean and attacked.

    The rule of tfnode's evaluation (`tfnode.evaluation`, RobustBench / AutoAttack): an
    example the model gets wrong clean is never robust, whatever its adversarial's
    prediction.
    """
    y = np.asarray(y)
    return (np.asarray(clean_pred) == y) & (np.asarray(adv_pred) == y)


def robust_accuracy(model, x, y, config):
    """A trial's robust accuracy: the fraction of ``x`` that `robust_mask` keeps
    under ``config``'s PGD (``eps``, ``pgd_steps`` of ``eps / 4`` from a random start
    seeded with ``seed``).

    An ODE model is attacked (and predicted) with per-sample steps: exact gradients
    through the solver, and no sample's result depends on its batch-mates.
    """
    c = config
    judged = model
    if loading.ode_blocks(model):
        judged = models.with_solver_options(model, per_sample_steps=True)
    x_adv = attacks.pgd(judged, x, y, eps=c.eps, step_size=c.eps / 4, num_steps=c.pgd_steps,
                        rand_init=True, seed=c.recipe.seed)
    clean_pred = attacks.predict(judged, x, batch_size=c.recipe.batch_size)
    adv_pred = attacks.predict(judged, x_adv, batch_size=c.recipe.batch_size)
    return float(np.mean(robust_mask(clean_pred, adv_pred, y)))


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
        options = dict(c.recipe.model_options)
        options["rtol"] = hp.Float("rtol", *c.rtol_range, sampling="log")
        options["atol"] = hp.Float("atol", *c.atol_range, sampling="log")
        if c.solvers:
            options["solver"] = hp.Choice("solver", list(c.solvers))
        if c.widths:
            options["width"] = hp.Choice("width", list(c.widths))
        return options

    def build(self, hp):
        c = self.config
        net = models.get_model(c.recipe.model, dataset=c.recipe.dataset, **self.options(hp))
        fit_lib.compile_for_training(net, c.recipe, c.recipe.epochs * self.steps_per_epoch)
        return net

    def fit(self, hp, model, train_ds, *, epochs=None, callbacks=None, verbose=0,
            strategy=None, **kwargs):
        """Trains ``model`` through tfnode's training loop (``tools.train``'s, under the
        trial's strategy) on the endless ``train_ds``, and judges it."""
        c = self.config
        start = time.time()
        loop.fit(model, train_ds, strategy=strategy or tf.distribute.get_strategy(),
                 epochs=epochs or c.recipe.epochs, steps_per_epoch=self.steps_per_epoch,
                 callbacks=callbacks or (), verbose=verbose)
        x, y = self.validation
        clean = model.evaluate(x, y, batch_size=c.recipe.batch_size, verbose=0, return_dict=True)
        n = min(c.robust_examples, len(x))
        robust = robust_accuracy(model, x[:n], y[:n], c)
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
            keras.utils.set_random_seed(config.recipe.seed + execution)
            strategy = strategies.get(config.recipe.strategy)
            with strategy.scope():
                model = self.hypermodel.build(hp)
            if config.recipe.strategy != "default":
                fit_lib.build_for_strategy(model, strategy, args[0])
            results.append(self.hypermodel.fit(hp, model, *args, epochs=epochs,
                                               strategy=strategy, **kwargs))
        metrics = {k: float(np.mean([r[k] for r in results])) for k in results[0]}
        self.hypermodel.log(
            f"tfnode: trial {trial.trial_id}: rtol {hp.get('rtol'):.2e}, atol "
            f"{hp.get('atol'):.2e}: clean {metrics['clean_accuracy']:.4f}, robust "
            f"{metrics['robust_accuracy']:.4f}, mean NFE {metrics['mean_nfe']:.1f}, "
            f"{metrics['seconds']:.0f} s")
        return metrics


def _oracle(config):
    objective = keras_tuner.Objective(trials.OBJECTIVE_METRIC[config.objective], "max")
    if config.tuner == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(
            objective, max_trials=config.max_trials, seed=config.recipe.seed)
    if config.tuner == "random":
        return keras_tuner.oracles.RandomSearchOracle(
            objective, max_trials=config.max_trials, seed=config.recipe.seed)
    return keras_tuner.oracles.HyperbandOracle(
        objective, max_epochs=config.recipe.epochs, seed=config.recipe.seed,
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


def tune(config, *, log=print, verbose=0):
    """Runs (or resumes) the search; writes the summary unless this is a worker.

    Returns:
      ``{"trials": [...], "best": {...} or None, "resumed": int, "role": str}``.
    """
    validate(config)
    files.check_writable(config.output_dir, field="output_dir")
    role = os.environ.get("KERASTUNER_TUNER_ID", "tuner0")
    keras.utils.set_random_seed(config.recipe.seed)
    x, y = data.load_arrays(config.recipe.dataset, "train", data_dir=config.recipe.data_dir)
    if config.recipe.validation_size >= len(x):
        raise ConfigError("validation_size", f"{config.recipe.validation_size}: the "
                          f"{config.recipe.dataset} training split has only {len(x)} examples")
    validation = (x[-config.recipe.validation_size:].astype("float32") / 255.0,
                  y[-config.recipe.validation_size:])
    train_ds = fit_lib.train_stream(config.recipe, 0)  # tools.train's batches
    steps = config.recipe.steps_per_epoch or (len(x) - config.recipe.validation_size) // config.recipe.batch_size
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
        log(f"tfnode: {role}: {config.tuner} search over rtol/atol of {config.recipe.model} "
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
    metric = trials.OBJECTIVE_METRIC[config.objective]
    best = max(rows, key=lambda r: r[metric])
    front = trials.pareto_front(rows)
    summary = {"config": dataclasses.asdict(config), "objective": metric,
               "validation": f"the last {config.recipe.validation_size} of the "
                             f"{config.recipe.dataset} training split",
               "trials": rows, "pareto_front": front, "best": best,
               "versions": files.versions()}
    files.write_json(os.path.join(config.output_dir, "trials.json"), summary)
    files.write_text(os.path.join(config.output_dir, "trials.md"),
                     trials.markdown(summary))
    trials.plot(summary, os.path.join(config.output_dir, "trials.png"))
    files.write_text(os.path.join(config.output_dir, "best.cfg"),
                     trials.best_flagfile(config, best))
    log(f"tfnode: best trial {best['trial']}: rtol {best['rtol']:.2e}, atol "
        f"{best['atol']:.2e}, {metric} {best[metric]:.4f}; "
        f"{os.path.join(config.output_dir, 'trials.md')}, best.cfg")
    return {"trials": rows, "best": best, "resumed": done, "role": role}
