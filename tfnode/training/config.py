"""`TrainConfig`: THE training recipe, used by `tools.train`, the tuner and the step-size
sweep alike; each of them changes only the fields it must, in the open."""

import dataclasses
import os
from typing import Any, Mapping

from tfnode import data, models, registry
from tfnode.errors import ConfigError
from tfnode.training import defenses, regularizers, strategies

OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("cosine", "constant", "step", "halve50")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A training run: the model, the recipe, and where the run and its export go.

    The defaults are the main job's recipe (`python -m tools.train --model=node`), chosen
    on a validation split (docs/results.md). Model options not given take the model's own
    defaults (`tfnode.models.get_model`); the apps pass ``width=32``.

    Attributes:
      model: registered model name (``tfnode.models.available()``).
      dataset: dataset name.
      model_options: options for `tfnode.models.get_model` (``rtol``, ``step_size``, ...).
      epochs: training epochs.
      batch_size: training batch size (under a strategy: the global batch).
      learning_rate: peak learning rate.
      optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
      lr_schedule: ``"cosine"`` decay to 0, ``"constant"``, ``"step"`` (x0.1 at 50%
        and 75% of the steps), or ``"halve50"`` (x0.5 every 50 epochs, Chu et al.
        2020's Appendix A as read).
      weight_decay: L2 weight decay added to the gradients before the update, as
        PyTorch's optimizers apply it (`tfnode.optimizers`; 0: none).
      seed: seed of weight init and shuffling.
      steps_per_epoch: cut epochs short (the training data repeats).
      validation_size: hold out the last this many training examples and report the
        accuracy on them after every epoch (``val_accuracy``), for choosing settings
        without the test split. 0: train on the whole training split.
      defense: a registered defense (`tfnode.training.defenses.available`). None: standard
        training.
      defense_options: options of ``defense`` over its published defaults for
        ``dataset``.
      regularizer: a registered regularizer (`tfnode.training.regularizers.available`),
        added to the loss with or without a defense. None: no regularizer.
      regularizer_options: options of ``regularizer`` over its defaults.
      strategy: a `tfnode.training.strategies` name (``default``, ``mirrored``,
        ``multi_worker``, ``tpu``). Under ``multi_worker`` every worker runs the same
        config with its own ``TF_CONFIG``; ``model_dir`` must be a folder every worker
        sees (the workers resume from the chief's state), and the chief alone writes the
        state, the logs and the export (docs/scaling.md).
      collective_timeout: ``multi_worker``: seconds a step's all-reduce waits for the
        other workers before the run fails (a killed worker is found sooner).
      deterministic: turn on TensorFlow's op determinism (for GPUs, whose kernels may
        reduce in any order; on CPU tfnode's training repeats bit for bit without it,
        see docs/training.md). It stays on in the process.
      data_dir: see `tfnode.data.load`.
      eval_batch_size: test batch size (default: ``batch_size``). It is recorded, because
        an adaptive ODE solver's steps, and so a sample's logits, depend on its batch.
      checkpoint_steps: also save the resume state every this many steps.
      model_dir: checkpoints (``backup/`` for resume, ``checkpoints/`` per epoch) and
        TensorBoard logs (``logs/``); default ``runs/<model>_<dataset>[_<defense>]``.
      export_dir: SavedModel base folder; the model goes to ``<export_dir>/<name>/<v>/``.
      export_name: name of the export; default ``<model>_<dataset>[_<defense>]``.
      overwrite: delete ``model_dir``'s resume state, finished record and epoch
        checkpoints and train from scratch. Without it a run resumes from its last saved
        state (`tfnode.training.resume`), and a finished one returns its metrics without training.
    """
    model: str = "node"
    dataset: str = "mnist"
    model_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    epochs: int = 4
    batch_size: int = 128
    learning_rate: float = 3e-3
    optimizer: str = "adam"
    lr_schedule: str = "cosine"
    weight_decay: float = 0.0
    seed: int = 0
    steps_per_epoch: int | None = None
    validation_size: int = 0
    defense: str | None = None
    defense_options: Mapping[str, Any] | None = None
    regularizer: str | None = None
    regularizer_options: Mapping[str, Any] | None = None
    strategy: str = "default"
    collective_timeout: int = 600
    deterministic: bool = False
    data_dir: str | None = None
    eval_batch_size: int | None = None
    checkpoint_steps: int | None = None
    model_dir: str | None = None
    export_dir: str = "savedmodels"
    export_name: str | None = None
    overwrite: bool = False

    @property
    def run_name(self):
        """``<model>_<dataset>[_<defense>][_<regularizer>]``: a defended or regularized
        run gets folders of its own."""
        return "_".join([self.model, self.dataset]
                        + [n for n in (self.defense, self.regularizer) if n])


RULES = {
    "epochs": registry.COUNT,
    "batch_size": registry.COUNT,
    "steps_per_epoch": registry.optional(registry.COUNT),
    "checkpoint_steps": registry.optional(registry.COUNT),
    "eval_batch_size": registry.optional(registry.COUNT),
    "collective_timeout": registry.COUNT,
    "learning_rate": registry.POSITIVE,
    "weight_decay": registry.NONNEGATIVE,
    "validation_size": registry.NONNEGATIVE_COUNT,
    "optimizer": registry.one_of(*OPTIMIZERS),
    "lr_schedule": registry.one_of(*LR_SCHEDULES),
}


def check(config):
    """Raises a one-line `TfnodeError` for a config that cannot work, before any work.

    Returns:
      The defense's options (its published defaults for the dataset, then
      ``defense_options``), or None without a defense.
    """
    data.info(config.dataset)
    strategies.check(config.strategy)
    accepted = models.model_options(config.model)
    for key in config.model_options:
        if key not in accepted:
            raise ConfigError(f"model_options.{key}", f"does not apply to model "
                              f"{config.model!r}; it takes {sorted(accepted)}")
    registry.check(config, RULES)
    regularizer_options(config)
    if config.defense is None:
        if config.defense_options:
            raise ConfigError("defense_options", "were given without a defense ({defense})")
        return None
    spec = defenses.get(config.defense)
    options = spec.options(config.defense_options, dataset=config.dataset)
    if spec.guarded(options) and not config.validation_size:
        raise ConfigError("validation_size", f"is 0, and {config.defense}'s guard checks "
                          "each epoch on a held-out batch of the validation split: give "
                          f"{{validation_size}} (e.g. 1000), or turn the guard off with "
                          f"defense option {config.defense}.{spec.guard_option}=0")
    return options


def regularizer_options(config):
    """The regularizer's options (its defaults, then ``regularizer_options``), checked; None
    without a regularizer (a one-line `TfnodeError` for options given without one)."""
    if config.regularizer is None:
        if config.regularizer_options:
            raise ConfigError("regularizer_options", "were given without a regularizer "
                              "({regularizer})")
        return None
    return regularizers.get(config.regularizer).options(config.regularizer_options)


def resolved(config):
    """``config`` with its defaults filled in from the others (``model_dir``,
    ``export_name``, ``eval_batch_size``) and ``model_options`` a plain dict."""
    return dataclasses.replace(
        config, model_options=dict(config.model_options or {}),
        model_dir=config.model_dir or os.path.join("runs", config.run_name),
        export_name=config.export_name or config.run_name,
        eval_batch_size=config.eval_batch_size or config.batch_size)
