"""What each robust recipe and regularizer costs per training step, side by side.

    python -m benchmarks.recipes --steps=8 --repeats=3

The two models of docs/robust.md's comparison (flags/mnist_robust_recipe.cfg: width 32,
no norm layers): the rk4 ODE-Net at h 0.25 (16 function evaluations) and the six-block
ResNet. Each variant is the model trained through Keras' ``fit`` as ``tools.train`` does
(`tfnode.training.defenses.DefendedModel` with the variant's defense and regularizer at
their flagfiles' options, Adam), one fixed batch of 128 images in [0, 1] (the cost of a
fixed-step model does not depend on the pixels), seed 0. The variants of one model run
alternately, ``--steps`` steps per call, the order reversed every other round
(``--repeats`` rounds), after a warm-up call that traces each; each column is the median
seconds per step over every timed step. The ratio is to standard training of the same
model in the same run.
"""

import statistics

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from tfnode import models
from tfnode.training import defenses, regularizers

FLAGS = flags.FLAGS


def _define_flags():
    """Defined when run as a program only: importing `trainer` (tests) beside tfnode's
    own flags must not define a second ``--batch_size``."""
    flags.DEFINE_integer("steps", 8, "Training steps per timed call.")
    flags.DEFINE_integer("repeats", 3, "Rounds of the variants.")
    flags.DEFINE_integer("batch_size", 128, "Images per step.")

MODELS = {"rk4 ODE-Net (h 0.25)": ("node", {"solver": "rk4", "step_size": 0.25}),
          "ResNet (6 blocks)": ("resnet", {})}
PGD_AT = {"eps": 0.1, "num_steps": 10, "step_size": 0.025, "rand_init": True}
# (name, defense, its options, regularizer): the options of the robust rows' flagfiles
# (fgsm_rs without its epoch-end guard, which is not part of a step).
VARIANTS = (
    ("standard", None, None, None),
    ("pgd_at (10 steps)", "pgd_at", PGD_AT, None),
    ("fgsm_rs", "fgsm_rs", {"eps": 0.3, "guard_pgd_steps": 0}, None),
    ("ibp", "ibp", {"eps": 0.4}, None),
    ("kinetic_jacobian", None, None, "kinetic_jacobian"),
    ("contractivity", None, None, "contractivity"),
    ("pgd_at + kinetic_jacobian", "pgd_at", PGD_AT, "kinetic_jacobian"),
)


def trainer(model_name, options, defense, defense_options, regularizer, *, width=32):
    """The model built and wrapped for one variant and compiled, as the rows train it but
    without a defense's model check or initialization (which do not change a step's
    cost)."""
    keras.utils.set_random_seed(0)
    net = models.get_model(model_name, dataset="mnist", width=width, norm="none", **options)
    if defense is None and regularizer is None:
        out = net
    else:
        out = defenses.DefendedModel(
            net, defense, defense and defenses.get(defense).options(defense_options),
            seed=0, regularizer=regularizer,
            regularizer_options=regularizer and regularizers.get(regularizer).options())
    out.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return out


def _seconds_per_step(model, data, steps):
    from benchmarks.step_clock import StepClock

    clock = StepClock()
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[clock])
    return clock.times


def main(argv):
    del argv
    rng = np.random.default_rng(0)
    x = rng.random((FLAGS.batch_size, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, FLAGS.batch_size)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    print(f"seconds per training step (batch {FLAGS.batch_size}), medians of "
          f"{FLAGS.repeats} x {FLAGS.steps} interleaved steps after a warm-up; ratio = "
          "time / standard training of the same model")
    for title, (model_name, options) in MODELS.items():
        trainers = {name: trainer(model_name, options, d, o, r)
                    for name, d, o, r in VARIANTS}
        for each in trainers.values():
            _seconds_per_step(each, data, 2)  # traces the step
        times = {name: [] for name in trainers}
        order = list(trainers)
        for r in range(FLAGS.repeats):
            for name in (order if r % 2 == 0 else order[::-1]):
                times[name] += _seconds_per_step(trainers[name], data, FLAGS.steps)
        base = statistics.median(times["standard"])
        print(f"\n{title}")
        print(f"{'variant':28s} {'s/step':>8s} {'ratio':>7s}")
        for name in order:
            med = statistics.median(times[name])
            print(f"{name:28s} {med:8.3f} {med / base:6.2f}x")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
