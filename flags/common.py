"""Flag definitions shared by the tools (TF Model Garden style).

Every flag is optional here, with a default; each app marks what it requires. Library code
never reads FLAGS: apps turn them into plain arguments with the ``*_kwargs`` helpers.
"""

from absl import flags

# Flags that configure a model rather than training; passed as model options when set.
MODEL_OPTION_FLAGS = ("solver", "rtol", "atol", "step_size", "first_step_size", "width",
                      "gradient", "per_sample_steps")


def _once(define, name, *args, **kwargs):
    """Defines a flag unless an earlier ``define_*_flags`` call did (apps share data flags,
    and the tests import several apps into one process)."""
    if name not in flags.FLAGS:
        define(name, *args, **kwargs)


def define_data_flags():
    _once(flags.DEFINE_string, "dataset", "mnist", "Dataset: mnist, fashion_mnist or cifar10.")
    _once(flags.DEFINE_string, "data_dir", None, "Folder with TFDS data or the raw files (IDX or "
                        "CIFAR-10 python batches). Unset: the cache, then a download.")
    _once(flags.DEFINE_integer, "batch_size", 128,
          "Batch size; training uses full batches only (without --steps_per_epoch, "
          "the last partial batch of each epoch is dropped).")


def define_model_flags():
    _once(flags.DEFINE_string, "model", "node",
          "Registered model name (tfnode.models.available()).")
    _once(flags.DEFINE_string, "solver", None, "ODE solver of an ODE model: dopri5, rk4, euler "
                        "(model default: dopri5).")
    _once(flags.DEFINE_float, "rtol", None, "Relative tolerance of an adaptive solver "
                       "(model default: 1e-3).")
    _once(flags.DEFINE_float, "atol", None, "Absolute tolerance of an adaptive solver "
                       "(model default: 1e-3).")
    _once(flags.DEFINE_float, "first_step_size", None, "First trial step of an adaptive solver "
                       "(model default: automatic, Hairer's rule).")
    _once(flags.DEFINE_float, "step_size", None, "Step h of a fixed-step solver, or the residual "
                       "scale h of a ResNet (y + h f(y)).")
    _once(flags.DEFINE_string, "gradient", None, "How an ODE model's dopri5 is differentiated: "
                        "backprop (tfnode's loop; the node model's default) or adjoint (TFP).")
    _once(flags.DEFINE_bool, "per_sample_steps", None, "ODE models: each sample keeps its "
          "own dopri5 step size, so its logits do not depend on its batch (needs "
          "--gradient=backprop, the node model's default).")
    _once(flags.DEFINE_integer, "width", 32, "Channels of the ODE-Net / MNIST ResNet. 32 makes the "
                         "default main job fit 20 minutes on 2 CPU cores; the paper's models "
                         "(Chen et al.'s, flags/mnist_*.cfg) use 64. Ignored by models "
                         "without a width unless given explicitly.")


def define_train_flags():
    define_data_flags()
    define_model_flags()
    _once(flags.DEFINE_integer, "epochs", 2, "Training epochs.")
    _once(flags.DEFINE_float, "learning_rate", 3e-3, "Peak learning rate.")
    _once(flags.DEFINE_string, "optimizer", "adam", "adam or sgd (momentum 0.9).")
    _once(flags.DEFINE_string, "lr_schedule", "cosine", "cosine (to 0), constant, or step "
                        "(x0.1 at 50% and 75% of training).")
    _once(flags.DEFINE_integer, "seed", 0, "Seed of weight init and data shuffling.")
    _once(flags.DEFINE_string, "model_dir", None, "Checkpoints and TensorBoard logs "
                        "(default runs/<model>_<dataset>).")
    _once(flags.DEFINE_string, "export_dir", "savedmodels", "SavedModel base folder "
                        "(<export_dir>/<name>/<version>/).")
    _once(flags.DEFINE_string, "export_name", None, "Export name (default <model>_<dataset>).")
    _once(flags.DEFINE_integer, "steps_per_epoch", None, "Cut epochs to this many steps "
                         "(for smoke runs).")
    _once(flags.DEFINE_integer, "checkpoint_steps", None,
          "Also save the resume state every N steps.")
    _once(flags.DEFINE_integer, "eval_batch_size", None, "Test batch size (default: --batch_size).")


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


def train_kwargs(flag_values):
    """Arguments of `tfnode.train.train` from the train flags."""
    fv = flag_values
    return dict(
        model=fv.model, dataset=fv.dataset, model_options=model_options(fv), epochs=fv.epochs,
        batch_size=fv.batch_size, learning_rate=fv.learning_rate, optimizer=fv.optimizer,
        lr_schedule=fv.lr_schedule, seed=fv.seed, data_dir=fv.data_dir, model_dir=fv.model_dir,
        export_dir=fv.export_dir, export_name=fv.export_name,
        steps_per_epoch=fv.steps_per_epoch, checkpoint_steps=fv.checkpoint_steps,
        eval_batch_size=fv.eval_batch_size, record=record(fv))


def define_evaluate_flags():
    """Flags of ``tools.evaluate`` (attack sweeps); defaults are the paper's settings."""
    define_data_flags()
    _once(flags.DEFINE_string, "model_path", None, "Model to attack: savedmodels/<name>/<version> "
                        "(uses its model.keras) or a .keras file.")
    _once(flags.DEFINE_string, "compare_model_path", None, "A second model evaluated the same way "
                        "(e.g. the ResNet next to the ODE-Net).")
    _once(flags.DEFINE_string, "source_model_path", None, "Model on which --attacks=transfer "
                        "crafts its adversarials.")
    _once(flags.DEFINE_string, "split", "test", "Dataset split.")
    _once(flags.DEFINE_list, "attacks", ["fgsm", "pgd"], "Attacks: fgsm, pgd, di2_fgsm, "
          "square, boundary, transfer.")
    _once(flags.DEFINE_list, "eps", ["0.1", "0.2", "0.3"], "Linf budgets, divided by --eps_scale.")
    _once(flags.DEFINE_float, "eps_scale", 1.0, "Divide --eps by this (255: budgets in 0-255 "
                       "pixel units, e.g. --eps=8 for 8/255).")
    _once(flags.DEFINE_integer, "num_examples", 1000, "Evaluate the first N examples of the split.")
    _once(flags.DEFINE_string, "output_dir", None,
          "Report folder (default reports/<model>_<dataset>).")
    _once(flags.DEFINE_integer, "seed", 0, "Seed of random starts, transforms and proposals.")
    _once(flags.DEFINE_float, "pgd_step_size", 0.01, "PGD step (pixel scale; not divided by "
                       "--eps_scale).")
    _once(flags.DEFINE_integer, "pgd_steps", 40, "PGD steps.")
    _once(flags.DEFINE_integer, "pgd_restarts", 1, "PGD random restarts.")
    _once(flags.DEFINE_bool, "pgd_rand_init", True, "PGD starts at a random point of the ball.")
    _once(flags.DEFINE_float, "di2_step_size", 0.01, "DI2-FGSM step.")
    _once(flags.DEFINE_integer, "di2_steps", 40, "DI2-FGSM steps.")
    _once(flags.DEFINE_float, "di2_resize_rate", 0.9, "DI2-FGSM smallest resize fraction.")
    _once(flags.DEFINE_float, "di2_diversity_prob", 0.5, "DI2-FGSM transform probability.")
    _once(flags.DEFINE_float, "di2_decay", 0.0, "DI2-FGSM momentum (> 0: M-DI2-FGSM).")
    _once(flags.DEFINE_integer, "boundary_queries", 1000, "Boundary Attack queries per example.")
    _once(flags.DEFINE_float, "boundary_spherical_step", 0.1, "Boundary Attack spherical step.")
    _once(flags.DEFINE_float, "boundary_source_step", 0.1, "Boundary Attack source step.")
    _once(flags.DEFINE_string, "transfer_attack", "fgsm", "Attack run on --source_model_path.")
    _once(flags.DEFINE_integer, "square_queries", 1000, "Square Attack queries per example.")
    _once(flags.DEFINE_bool, "audit", False, "Gradient-masking audit: surrogate-gradient "
          "(adjoint, tight tolerance, rk4), stronger and unbounded PGD, Square Attack, "
          "transfer from --source_model_path; checks and a verdict at the top of report.md.")
    _once(flags.DEFINE_bool, "per_sample_steps", None, "ODE models: per-sample dopri5 steps, "
          "so no prediction depends on the batch (evaluate's default: on; the report says "
          "where it cannot apply).")
    _once(flags.DEFINE_integer, "audit_pgd_steps", 100, "Steps of the audit's stronger PGD.")
    _once(flags.DEFINE_integer, "audit_pgd_restarts", 5, "Restarts of the audit's stronger PGD.")
    _once(flags.DEFINE_float, "square_p_init", 0.05, "Square Attack initial patch fraction.")
    _once(flags.DEFINE_list, "tolerance_grid", [], "ODE models: rtol = atol values; PGD "
          "crafted at each is evaluated at each (attack-time vs inference-time tolerance).")
    _once(flags.DEFINE_bool, "trajectories", False, "Measure the paper's bound: growth of "
          "random and PGD perturbations along the ODE trajectory or residual blocks, and the "
          "empirical Lipschitz constant of the ODE/residual function.")


def evaluate_kwargs(flag_values):
    """Arguments of `tfnode.evaluate.evaluate` from the evaluate flags."""
    from tfnode.errors import TfnodeError

    fv = flag_values
    if not fv.model_path:
        raise TfnodeError("--model_path is required: an export folder "
                          "(savedmodels/<name>/<version>) or a .keras file")
    if not fv.eps_scale > 0:
        raise TfnodeError(f"--eps_scale must be > 0, got {fv.eps_scale!r}")
    try:
        eps = [float(e) / fv.eps_scale for e in fv.eps]
    except ValueError:
        raise TfnodeError(f"--eps must be a comma-separated list of numbers, got "
                          f"{','.join(fv.eps)!r}") from None
    try:
        tolerance_grid = [float(v) for v in fv.tolerance_grid]
    except ValueError:
        raise TfnodeError(f"--tolerance_grid must be a comma-separated list of numbers, got "
                          f"{','.join(fv.tolerance_grid)!r}") from None
    options = {
        "pgd": {"step_size": fv.pgd_step_size, "num_steps": fv.pgd_steps,
                "restarts": fv.pgd_restarts, "rand_init": fv.pgd_rand_init},
        "di2_fgsm": {"step_size": fv.di2_step_size, "num_steps": fv.di2_steps,
                     "resize_rate": fv.di2_resize_rate,
                     "diversity_prob": fv.di2_diversity_prob, "decay": fv.di2_decay},
        "boundary": {"max_queries": fv.boundary_queries,
                     "spherical_step": fv.boundary_spherical_step,
                     "source_step": fv.boundary_source_step},
        "transfer": {"attack": fv.transfer_attack},
        "square": {"max_queries": fv.square_queries, "p_init": fv.square_p_init},
        "pgd_strong": {"num_steps": fv.audit_pgd_steps, "restarts": fv.audit_pgd_restarts},
    }
    return dict(
        model_path=fv.model_path, dataset=fv.dataset, split=fv.split,
        attacks_=[a.strip() for a in fv.attacks if a.strip()], eps=eps,
        eps_scale=fv.eps_scale, num_examples=fv.num_examples, batch_size=fv.batch_size,
        data_dir=fv.data_dir, compare_model_path=fv.compare_model_path,
        source_model_path=fv.source_model_path, output_dir=fv.output_dir,
        attack_options=options, seed=fv.seed, audit=fv.audit,
        # Unset: on (the evaluator's default); the train app shares this flag.
        per_sample_steps=True if fv.per_sample_steps is None else fv.per_sample_steps,
        tolerance_grid=tolerance_grid, trajectories=fv.trajectories, record=record(fv))
