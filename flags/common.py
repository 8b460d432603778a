"""Flag definitions shared by the tools (TF Model Garden style).

Every flag is optional here, with a default; each app marks what it requires. Library code
never reads FLAGS: apps turn them into plain arguments with the ``*_kwargs`` helpers.
"""

from absl import flags

# Flags that configure a model rather than training; passed as model options when set.
MODEL_OPTION_FLAGS = ("solver", "rtol", "atol", "step_size", "first_step_size", "width",
                      "gradient")


def define_data_flags():
    flags.DEFINE_string("dataset", "mnist", "Dataset: mnist, fashion_mnist or cifar10.")
    flags.DEFINE_string("data_dir", None, "Folder with TFDS data or the raw files (IDX or "
                        "CIFAR-10 python batches). Unset: the cache, then a download.")
    flags.DEFINE_integer("batch_size", 128, "Batch size.")


def define_model_flags():
    flags.DEFINE_string("model", "node", "Registered model name (tfnode.models.available()).")
    flags.DEFINE_string("solver", None, "ODE solver of an ODE model: dopri5, rk4, euler "
                        "(model default: dopri5).")
    flags.DEFINE_float("rtol", None, "Relative tolerance of an adaptive solver "
                       "(model default: 1e-3).")
    flags.DEFINE_float("atol", None, "Absolute tolerance of an adaptive solver "
                       "(model default: 1e-3).")
    flags.DEFINE_float("first_step_size", None, "First trial step of an adaptive solver "
                       "(model default: automatic, Hairer's rule).")
    flags.DEFINE_float("step_size", None, "Step h of a fixed-step solver, or the residual "
                       "scale h of a ResNet (y + h f(y)).")
    flags.DEFINE_string("gradient", None, "How an ODE model's dopri5 is differentiated: "
                        "backprop (tfnode's loop; the node model's default) or adjoint (TFP).")
    flags.DEFINE_integer("width", 32, "Channels of the ODE-Net / MNIST ResNet. 32 makes the "
                         "default main job fit 20 minutes on 2 CPU cores; the paper's models "
                         "(Chen et al.'s, flags/mnist_*.cfg) use 64. Ignored by models "
                         "without a width unless given explicitly.")


def define_train_flags():
    define_data_flags()
    define_model_flags()
    flags.DEFINE_integer("epochs", 2, "Training epochs.")
    flags.DEFINE_float("learning_rate", 2e-3, "Peak learning rate.")
    flags.DEFINE_string("optimizer", "adam", "adam or sgd (momentum 0.9).")
    flags.DEFINE_string("lr_schedule", "cosine", "cosine (to 0), constant, or step "
                        "(x0.1 at 50% and 75% of training).")
    flags.DEFINE_integer("seed", 0, "Seed of weight init and data shuffling.")
    flags.DEFINE_string("model_dir", None, "Checkpoints and TensorBoard logs "
                        "(default runs/<model>_<dataset>).")
    flags.DEFINE_string("export_dir", "savedmodels", "SavedModel base folder "
                        "(<export_dir>/<name>/<version>/).")
    flags.DEFINE_string("export_name", None, "Export name (default <model>_<dataset>).")
    flags.DEFINE_integer("steps_per_epoch", None, "Cut epochs to this many steps "
                         "(for smoke runs).")
    flags.DEFINE_integer("checkpoint_steps", None, "Also save the resume state every N steps.")
    flags.DEFINE_integer("eval_batch_size", None, "Test batch size (default: --batch_size).")


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
