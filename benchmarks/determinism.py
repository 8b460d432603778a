"""Is training bit-for-bit repeatable, and what does TF's op determinism cost?

    python -m benchmarks.determinism --model=node --steps=20

Trains ``--model`` (tools.train's defaults: the main job's ODE-Net, or the ResNet) for
``--steps`` steps on real MNIST, seed 0, in fresh processes: twice as is and twice with
``tf.config.experimental.enable_op_determinism()``, alternating. Prints each run's
seconds per step (after the first step, which traces) and a digest of its final
weights: equal digests mean equal bits.
"""

import json
import os
import subprocess
import sys

from absl import app, flags

flags.DEFINE_string("model", "node", "A registered model, with tools.train's defaults.")
flags.DEFINE_integer("steps", 20, "Training steps per run.")
flags.DEFINE_integer("repeats", 2, "Runs per mode.")
FLAGS = flags.FLAGS

CHILD = """
import hashlib, json, sys, time
import keras, numpy as np, tensorflow as tf
model_name, steps, deterministic = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
if deterministic:
    tf.config.experimental.enable_op_determinism()
from tfnode import data, models
from tfnode.training import TrainConfig, fit
keras.utils.set_random_seed(0)
net = models.get_model(model_name, dataset="mnist")
fit.compile_for_training(net, TrainConfig(optimizer="adam", learning_rate=1e-3,
                                         lr_schedule="cosine"), steps)
stream = data.load("mnist", "train", batch_size=128, seed=0, repeat=True,
                   drop_remainder=True, whole_passes=True)
from benchmarks.step_clock import StepClock
times = []
net.fit(stream, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[StepClock(times)])
digest = hashlib.sha256(b"".join(w.tobytes() for w in net.get_weights())).hexdigest()[:16]
print(json.dumps({"digest": digest, "seconds_per_step": float(np.mean(times[1:]))}))
"""


def main(argv):
    del argv
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runs = []
    for r in range(FLAGS.repeats):
        for deterministic in ((False, True) if r % 2 == 0 else (True, False)):
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, FLAGS.model, str(FLAGS.steps),
                 "1" if deterministic else "0"], cwd=repo, capture_output=True, text=True,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, check=False)
            if proc.returncode:
                sys.exit(proc.stderr[-2000:])
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            runs.append({"deterministic": deterministic, **result})
            print(f"op determinism {'on ' if deterministic else 'off'}: "
                  f"{result['seconds_per_step']:.3f} s/step, weights {result['digest']}",
                  flush=True)
    for mode in (False, True):
        mine = [r for r in runs if r["deterministic"] == mode]
        print(f"op determinism {'on' if mode else 'off'}: "
              f"{sum(r['seconds_per_step'] for r in mine) / len(mine):.3f} s/step mean, "
              f"{len({r['digest'] for r in mine})} distinct weight digest(s) in {len(mine)} runs")
    off = [r["seconds_per_step"] for r in runs if not r["deterministic"]]
    on = [r["seconds_per_step"] for r in runs if r["deterministic"]]
    print(f"time ratio on / off: {sum(on) / sum(off):.3f}; all runs equal: "
          f"{len({r['digest'] for r in runs}) == 1}")


if __name__ == "__main__":
    app.run(main)
