"""Flag definitions shared by the tools (TF Model Garden style).

Every flag is defined once, in a ``define_*_flags`` group, optional, with a default; each
app marks what it requires. Library code never reads FLAGS: apps turn them into plain
arguments or config objects with `train_config` and `evaluate_config`.
"""

import dataclasses

from absl import flags

# Flags that configure a model rather than training; passed as model options when set.
MODEL_OPTION_FLAGS = ("solver", "rtol", "atol", "step_size", "first_step_size", "width",
                      "gradient", "per_sample_steps")


_DEFINED = set()


def _group(define):
    """Makes a ``define_*_flags`` function define its flags once per process (apps share
    groups, and the tests import several apps into one process): each flag has exactly
    one definition, here."""
    def once():
        if define.__name__ not in _DEFINED:
            _DEFINED.add(define.__name__)
            define()
    once.__name__ = define.__name__
    once.__doc__ = define.__doc__
    return once


@_group
def define_common_flags():
    """Flags every app shares: the data, the seed, per-sample ODE steps."""
    flags.DEFINE_string("dataset", "mnist", "Dataset: mnist, fashion_mnist or cifar10.")
    flags.DEFINE_string("data_dir", None, "Folder with TFDS data or the raw files (IDX or "
                        "CIFAR-10 python batches). Unset: the cache, then a download.")
    flags.DEFINE_integer("batch_size", 128,
                         "Batch size; training uses full batches only (without "
                         "--steps_per_epoch, the last partial batch of each epoch is dropped); "
                         "evaluation calls the model with this batch size.")
    flags.DEFINE_integer("seed", 0, "Seed: weight init and data shuffling (train); random "
                         "starts, transforms and proposals (evaluate; keyed per example by "
                         "its index, Square and Boundary by batch).")
    flags.DEFINE_bool("per_sample_steps", None, "ODE models: each sample keeps its own "
                      "adaptive step size, so its logits do not depend on its batch (not with "
                      "--gradient=adjoint). Unset: the model's own setting when training; on "
                      "when evaluating (the report says where it cannot apply).")


@_group
def define_model_flags():
    """Flags that build a model (tools.train)."""
    flags.DEFINE_string("model", "node", "Registered model name (tfnode.models.available()).")
    flags.DEFINE_string("solver", None, "ODE solver of an ODE model "
                        "(tfnode.ode.SOLVERS): adaptive dopri5, tsit5, bosh3; fixed-step "
                        "rk4, heun, midpoint, euler (model default: dopri5).")
    flags.DEFINE_float("rtol", None, "Relative tolerance of an adaptive solver "
                       "(model default: 1e-3).")
    flags.DEFINE_float("atol", None, "Absolute tolerance of an adaptive solver "
                       "(model default: 1e-3).")
    flags.DEFINE_float("first_step_size", None, "First trial step of an adaptive solver "
                       "(model default: automatic, Hairer's rule).")
    flags.DEFINE_float("step_size", None, "Step h of a fixed-step solver, or the residual "
                       "scale h of a ResNet (y + h f(y)).")
    flags.DEFINE_string("gradient", None, "How an ODE model's adaptive solver is "
                        "differentiated: backprop (tfnode's loop; the node model's default) "
                        "or adjoint (TFP's DormandPrince; dopri5 only).")
    flags.DEFINE_integer("width", 32, "Channels of the ODE-Net / MNIST ResNet. 32 makes the "
                         "default main job fit 20 minutes on 2 CPU cores; the paper's models "
                         "(Chen et al.'s, flags/mnist_*.cfg) use 64. Ignored by models "
                         "without a width unless given explicitly.")


@_group
def define_train_flags():
    """Flags of ``tools.train``."""
    define_common_flags()
    define_model_flags()
    flags.DEFINE_integer("epochs", 4, "Training epochs.")
    flags.DEFINE_float("learning_rate", 3e-3, "Peak learning rate.")
    flags.DEFINE_string("optimizer", "adam", "adam or sgd (momentum 0.9).")
    flags.DEFINE_string("lr_schedule", "cosine", "cosine (to 0), constant, or step "
                        "(x0.1 at 50% and 75% of training).")
    flags.DEFINE_integer("validation_size", 0, "Hold out the last N training examples and "
                         "report their accuracy after each epoch (val_accuracy in "
                         "metrics.json): choose settings on them, never on the test split.")
    flags.DEFINE_float("weight_decay", 0.0, "Weight decay as PyTorch's optimizers apply it "
                       "(wd * w added to the gradient, before SGD's momentum), as the "
                       "published recipes give it; 0: none.")
    flags.DEFINE_string("model_dir", None, "Checkpoints and TensorBoard logs "
                        "(default runs/<model>_<dataset>).")
    define_export_target_flags()
    flags.DEFINE_integer("steps_per_epoch", None, "Cut epochs to this many steps "
                         "(for smoke runs).")
    flags.DEFINE_integer("checkpoint_steps", None, "Also save the resume state every N steps.")
    flags.DEFINE_boolean("deterministic", False, "TensorFlow's op determinism (for GPUs; "
                         "on CPU training repeats bit for bit without it).")
    flags.DEFINE_boolean("overwrite", False, "Train from scratch even if --model_dir holds "
                         "an unfinished run (which is otherwise resumed) or a finished one "
                         "(which is otherwise left as it is).")
    flags.DEFINE_integer("eval_batch_size", None, "Test batch size (default: --batch_size).")
    flags.DEFINE_string("defense", None, "Adversarial training (tfnode.defenses.available()): "
                        "pgd_at (Madry et al. 2018), trades (Zhang et al. 2019), yopo "
                        "(Zhang et al. 2019), with their published settings per dataset. "
                        "Unset: standard training.")
    flags.DEFINE_multi_string("defense_option", [], "DEFENSE.OPTION=VALUE, repeatable: an "
                              "option of --defense, e.g. pgd_at.num_steps=10 or "
                              "trades.beta=6.")
    flags.DEFINE_string("strategy", "default", "tf.distribute strategy: default (one "
                        "device), mirrored (local GPUs), multi_worker (TF_CONFIG per "
                        "worker), tpu (TPU_NAME); --batch_size is the global batch.")


def model_options(flag_values):
    """The model-option flags to pass to the model (None means: the model's own default).

    A flag with a default value is passed only to models that take it; a flag the user
    gave explicitly is always passed, so that a model which does not take it is an error.
    """
    from tfnode import models

    try:
        accepted = models.model_options(flag_values.model)
    except ValueError:  # an unknown model: the library reports it on one line
        accepted = {}
    return {name: flag_values[name].value for name in MODEL_OPTION_FLAGS
            if flag_values[name].value is not None
            and (flag_values[name].present or name in accepted)}


def record(flag_values):
    """All flags of this module's definitions with their values, for metrics/report files."""
    names = [f.name for f in flag_values.get_key_flags_for_module(__name__)]
    names += [n for n in ("flagfile",) if n in flag_values]
    return {n: flag_values[n].value for n in sorted(set(names))}


def train_config(flag_values):
    """The `tfnode.training.TrainConfig` of the train flags (each flag is the field of
    the same name; the model-option flags make ``model_options``)."""
    from tfnode.training import TrainConfig

    fv = flag_values
    fields = ("model", "dataset", "epochs", "batch_size", "learning_rate", "optimizer",
              "lr_schedule", "weight_decay", "seed", "data_dir", "model_dir", "export_dir",
              "export_name", "steps_per_epoch", "checkpoint_steps", "eval_batch_size",
              "validation_size", "defense", "strategy", "overwrite", "deterministic")
    return TrainConfig(**{name: fv[name].value for name in fields},
                       model_options=model_options(fv),
                       defense_options=defense_options(fv.defense, fv.defense_option))


@_group
def define_evaluate_flags():
    """Flags of ``tools.evaluate`` (attack sweeps); the attacks' defaults are the paper's
    settings, kept in the attack registry, and changed with --attack_option."""
    define_common_flags()
    define_model_path_flag()
    flags.DEFINE_string("compare_model_path", None, "A second model evaluated the same way "
                        "(e.g. the ResNet next to the ODE-Net).")
    flags.DEFINE_string("source_model_path", None, "Model on which transfer crafts its "
                        "adversarials.")
    flags.DEFINE_string("split", "test", "Dataset split.")
    flags.DEFINE_list("attacks", ["fgsm", "pgd"], "Registered attacks, by name "
                      "(tfnode.attacks.available(); docs/evaluation.md lists them).")
    define_budget_flags()
    define_report_flags()
    flags.DEFINE_multi_string("attack_option", [], "ATTACK.OPTION=VALUE, repeatable: an "
                              "option of a registered attack or an audit variant, e.g. "
                              "pgd.num_steps=100, square.max_queries=300, "
                              "pgd_strong.restarts=2, transfer.attack=pgd. Unset options keep "
                              "the published defaults (docs/evaluation.md lists them).")
    flags.DEFINE_bool("audit", False, "Gradient-masking audit: PGD through solver "
                      "surrogates (adjoint, tight tolerance, rk4) where they apply, stronger "
                      "and unbounded PGD, APGD-CE/DLR, Square and Boundary Attacks, transfer "
                      "from --source_model_path; the per-example worst case, the checks and a "
                      "verdict at the top of report.md.")
    flags.DEFINE_list("tolerance_grid", [], "ODE models: rtol = atol values; PGD "
                      "crafted at each is evaluated at each (attack-time vs inference-time "
                      "tolerance).")
    flags.DEFINE_bool("trajectories", False, "Measure the paper's bound: growth of "
                      "random and PGD perturbations along the ODE trajectory or residual "
                      "blocks, and the empirical Lipschitz constant of the ODE/residual "
                      "function.")
    flags.DEFINE_string("schedule", "fast", "fast: attack only what is still robust (early "
                        "exit per example, eps in increasing order on the survivors, Square "
                        "and Boundary on the other attacks' survivors); exhaustive: every "
                        "attack on every example at every eps (docs/evaluation.md).")
    define_shard_flags()


@_group
def define_budget_flags():
    """The eps list and the examples attacked (``tools.evaluate``, ``tools.sweep``)."""
    flags.DEFINE_list("eps", ["0.1", "0.2", "0.3"], "Linf budgets, divided by --eps_scale.")
    flags.DEFINE_float("eps_scale", 1.0, "Divide --eps by this (255: budgets in 0-255 "
                       "pixel units, e.g. --eps=8 for 8/255).")
    flags.DEFINE_integer("num_examples", 1000, "Evaluate the first N examples of the split.")


@_group
def define_sweep_flags():
    """Flags of ``tools.sweep``: the family is built and trained by the train flags."""
    define_train_flags()
    define_budget_flags()
    define_report_flags()
    flags.DEFINE_list("step_sizes", ["1", "0.1", "0.01", "0.001", "1e-6"],
                      "The step sizes h of the family, one trained member each.")
    flags.DEFINE_string("source_model", "resnet", "Registered model on which the "
                        "transferred attack is crafted (Chu et al.: a small network with "
                        "three residual blocks).")
    flags.DEFINE_multi_string("source_option", ["num_blocks=3"], "OPTION=VALUE, "
                              "repeatable: a model option of --source_model (resnet: "
                              "num_blocks=3; resnet56: depth=8).")
    flags.DEFINE_string("transfer_attack", "fgsm", "The attack crafted on the source and "
                        "transferred (a transferable registered attack).")


@_group
def define_export_target_flags():
    """Where a SavedModel goes (``tools.train`` and ``tools.export``)."""
    flags.DEFINE_string("export_dir", "savedmodels", "SavedModel base folder "
                        "(<export_dir>/<name>/<version>/, the layout TF Serving polls).")
    flags.DEFINE_string("export_name", None, "Export name (tools.train's default: "
                        "<model>_<dataset>).")


@_group
def define_model_path_flag():
    """The trained model an app reads (``tools.evaluate`` and ``tools.export``)."""
    flags.DEFINE_string("model_path", None, "A trained model: savedmodels/<name>/<version> "
                        "(uses its model.keras) or a .keras file; tools.export also takes a "
                        "run's epoch_NNN.weights.h5 or its checkpoints folder (with --model).")


@_group
def define_export_flags():
    """Flags of ``tools.export``."""
    define_common_flags()
    define_model_flags()
    define_model_path_flag()
    define_export_target_flags()
    flags.DEFINE_integer("version", None, "Version folder to write (default: the next "
                         "integer); an existing version is never overwritten.")
    flags.DEFINE_string("report", None, "A robustness report.json (tools.evaluate) to "
                        "carry in the export's assets.extra/.")


def export_kwargs(flag_values):
    """Arguments of `tfnode.export.export_trained` from the export flags."""
    fv = flag_values
    return dict(source=fv.model_path, export_dir=fv.export_dir, name=fv.export_name,
                version=fv.version, report=fv.report,
                # The architecture only matters for a weights file; --model given or not.
                model=fv.model if fv["model"].present else None, dataset=fv.dataset,
                model_options=model_options(fv))


@_group
def define_tune_flags():
    """Flags of ``tools.tune`` (keras-tuner over solver tolerances); each trial trains
    with the train flags (``--epochs``, ``--learning_rate``, ...)."""
    define_train_flags()
    flags.DEFINE_list("rtol_range", ["1e-5", "1e-1"], "LOW,HIGH: log-scale range of rtol.")
    flags.DEFINE_list("atol_range", ["1e-5", "1e-1"], "LOW,HIGH: log-scale range of atol.")
    flags.DEFINE_list("solvers", [], "Solvers to choose from (e.g. dopri5,tsit5,bosh3); "
                      "empty: the model's own, not searched.")
    flags.DEFINE_list("widths", [], "Widths to choose from; empty: --width, not searched.")
    flags.DEFINE_string("tuner", "bayesian", "bayesian, hyperband or random.")
    flags.DEFINE_integer("max_trials", 10, "Trials (bayesian, random).")
    flags.DEFINE_integer("executions_per_trial", 1, "Trainings per trial, averaged.")
    flags.DEFINE_string("objective", "robust", "clean: validation accuracy; robust: "
                        "validation accuracy under PGD (--tune_eps, --pgd_steps); score: "
                        "robust - nfe_weight * mean NFE / 100.")
    flags.DEFINE_float("tune_eps", 0.1, "Linf eps of the robust objective's PGD.")
    flags.DEFINE_integer("pgd_steps", 10, "Steps of the robust objective's PGD (step eps/4).")
    flags.DEFINE_float("nfe_weight", 0.1, "score: accuracy charged per 100 NFE.")
    flags.DEFINE_integer("robust_examples", 500, "Validation examples the PGD attacks.")
    flags.DEFINE_string("tune_dir", "reports/tune", "The search's folder (keras-tuner's "
                        "project, trials.md/json/png, best.cfg); a search there resumes.")


def tune_config(flag_values):
    """The `tfnode.tune.TuneConfig` of the tune flags."""
    from tfnode.tune import TuneConfig

    from tfnode.errors import TfnodeError

    fv = flag_values
    options = {k: v for k, v in model_options(fv).items() if k not in ("rtol", "atol")}
    for name in ("rtol", "atol"):
        if fv[name].present:
            raise TfnodeError(f"--{name}: tools.tune searches it; give --{name}_range")
    if fv.defense or fv.defense_option:
        raise TfnodeError("--defense does not apply to tools.tune (trials train without one)")
    recipe = dataclasses.replace(
        train_config(fv), model_options=options, defense_options=None,
        validation_size=fv.validation_size if fv["validation_size"].present else 5000)
    return TuneConfig(
        recipe=recipe, rtol_range=_range("rtol_range", fv.rtol_range),
        atol_range=_range("atol_range", fv.atol_range), solvers=tuple(fv.solvers),
        widths=tuple(int(w) for w in _floats("widths", fv.widths)), tuner=fv.tuner,
        max_trials=fv.max_trials, executions_per_trial=fv.executions_per_trial,
        objective=fv.objective, eps=fv.tune_eps, pgd_steps=fv.pgd_steps,
        nfe_weight=fv.nfe_weight, robust_examples=fv.robust_examples,
        output_dir=fv.tune_dir)


def _range(flag, values):
    from tfnode.errors import TfnodeError

    bounds = _floats(flag, values)
    if len(bounds) != 2:
        raise TfnodeError(f"--{flag} {','.join(values)}: expected LOW,HIGH")
    return tuple(bounds)


@_group
def define_results_flags():
    """Flags of ``tools.report``."""
    flags.DEFINE_list("runs", [], "Run folders, files or globs: training exports "
                      "(metrics.json), evaluations (report.json), sweeps (sweep.json).")
    flags.DEFINE_string("output", "docs/paper.md", "The results page to write.")


@_group
def define_report_flags():
    """Where reports go (``tools.evaluate`` and ``tools.merge_shards``)."""
    flags.DEFINE_string("output_dir", None,
                        "Report folder (default reports/<model>_<dataset>); a shard of a "
                        "sharded run writes to <output_dir>/shards/<i>-of-<N>.")


@_group
def define_shard_flags():
    """Flags of sharded evaluations (``tools.evaluate`` and ``tools.merge_shards``)."""
    flags.DEFINE_integer("num_shards", 1, "Split the examples into N contiguous shards; "
                         "evaluate one per job (--shard_index), then merge them with "
                         "python -m tools.merge_shards --output_dir=<the same folder>.")
    flags.DEFINE_integer("shard_index", 0, "Which shard this job evaluates (0-based).")


def _value(text):
    """A flag value as a number, a bool or a string (``40``, ``0.01``, ``true``, ``pgd``)."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def _named_options(flag, values, example):
    """``["pgd.num_steps=100", ...]`` -> ``{"pgd": {"num_steps": 100}}``."""
    from tfnode.errors import TfnodeError

    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        name, dot, option = key.strip().partition(".")
        if not (sep and dot and name and option and value.strip()):
            raise TfnodeError(f"--{flag} {item!r}: expected {flag.split('_')[0].upper()}."
                              f"OPTION=VALUE, e.g. {example}")
        out.setdefault(name, {})[option.strip()] = _value(value)
    return out


def attack_options(values):
    """``["pgd.num_steps=100", ...]`` -> ``{"pgd": {"num_steps": 100}}``."""
    return _named_options("attack_option", values, "pgd.num_steps=100")


def defense_options(defense, values):
    """``--defense_option`` values -> the options of ``defense`` (``{}`` if none given)."""
    from tfnode.errors import TfnodeError

    named = _named_options("defense_option", values, "pgd_at.num_steps=10")
    other = sorted(set(named) - {defense})
    if other:
        raise TfnodeError(f"--defense_option {other[0]}.*: options of {other[0]!r}, but "
                          + (f"--defense={defense}" if defense else "no --defense is given"))
    return named.get(defense, {})


def _budgets(fv):
    """``--eps`` divided by ``--eps_scale``, each checked to lie in [0, 1]."""
    from tfnode.errors import TfnodeError

    if not fv.eps_scale > 0:
        raise TfnodeError(f"--eps_scale must be > 0, got {fv.eps_scale!r}")
    eps = tuple(e / fv.eps_scale for e in _floats("eps", fv.eps))
    for given, e in zip(fv.eps, eps):
        if not 0.0 <= e <= 1.0:
            raise TfnodeError(f"--eps {given} (divided by --eps_scale {fv.eps_scale:g}) is "
                              "outside [0, 1], the pixel range of the inputs")
    return eps


def sweep_config(flag_values):
    """The `tfnode.sweep.SweepConfig` of the sweep flags."""
    from tfnode.errors import TfnodeError
    from tfnode.sweep import SweepConfig

    fv = flag_values
    if fv.defense or fv.defense_option:
        raise TfnodeError("--defense does not apply to tools.sweep (its members train "
                          "without a defense)")
    if fv["step_size"].present:
        raise TfnodeError("--step_size: a sweep varies it; give --step_sizes")
    options = {k: v for k, v in model_options(fv).items() if k != "step_size"}
    source = {}
    for item in fv.source_option:
        key, sep, value = item.partition("=")
        if not (sep and key.strip() and value.strip()):
            raise TfnodeError(f"--source_option {item!r}: expected OPTION=VALUE, e.g. "
                              "num_blocks=3")
        source[key.strip()] = _value(value)
    train = {k: fv[k].value for k in ("epochs", "batch_size", "learning_rate", "optimizer",
                                       "lr_schedule", "weight_decay", "seed",
                                       "steps_per_epoch", "checkpoint_steps",
                                       "eval_batch_size", "validation_size")}
    return SweepConfig(
        model=fv.model, dataset=fv.dataset, step_sizes=_floats("step_sizes", fv.step_sizes),
        model_options=options, train_options=train, source_model=fv.source_model,
        source_options=source, transfer_attack=fv.transfer_attack, eps=_budgets(fv),
        num_examples=fv.num_examples, batch_size=fv.eval_batch_size or fv.batch_size,
        data_dir=fv.data_dir,
        output_dir=fv.output_dir or f"reports/{fv.model}_{fv.dataset}_step_sizes")


def _floats(flag, values):
    from tfnode.errors import TfnodeError

    try:
        return tuple(float(v) for v in values)
    except ValueError:
        raise TfnodeError(f"--{flag} must be a comma-separated list of numbers, got "
                          f"{','.join(values)!r}") from None


def evaluate_config(flag_values):
    """The `tfnode.evaluation.EvalConfig` of the evaluate flags."""
    from tfnode.errors import TfnodeError
    from tfnode.evaluation import EvalConfig

    fv = flag_values
    if not fv.model_path:
        raise TfnodeError("--model_path is required: an export folder "
                          "(savedmodels/<name>/<version>) or a .keras file")
    eps = _budgets(fv)
    return EvalConfig(
        model_path=fv.model_path, dataset=fv.dataset, split=fv.split,
        attacks=tuple(a.strip() for a in fv.attacks if a.strip()), eps=eps,
        eps_scale=fv.eps_scale, num_examples=fv.num_examples, batch_size=fv.batch_size,
        data_dir=fv.data_dir, compare_model_path=fv.compare_model_path,
        source_model_path=fv.source_model_path, output_dir=fv.output_dir,
        attack_options=attack_options(fv.attack_option), seed=fv.seed, audit=fv.audit,
        per_sample_steps=True if fv.per_sample_steps is None else fv.per_sample_steps,
        tolerance_grid=_floats("tolerance_grid", fv.tolerance_grid),
        trajectories=fv.trajectories, schedule=fv.schedule, num_shards=fv.num_shards,
        shard_index=fv.shard_index)
