"""tfnode's training loop against Keras' fit, and 1 process against 2 local workers.

    python -m benchmarks.training_loop --model=node --steps=30

Two measurements of seconds per training step on real MNIST, global batch 128, the
model's ``tools.train`` defaults (Adam, cosine schedule), seed 0:

- ``loop vs fit``: one process, one model, trained alternately by Keras' ``fit`` and by
  `tfnode.training.loop.fit` under the default strategy, ``--steps`` steps per call, the
  order reversed every other round (``--repeats`` rounds). Both continue the same weights,
  so an ODE-Net's number of function evaluations, which grows as it trains, is the same
  for both. The first step of each call (the loop traces its step there) is not timed.
- ``1 process vs 2 workers``: `tfnode.training.train` itself (``tools.train``'s path) for
  ``--steps`` steps, in fresh processes: one process under the default strategy, and two
  worker processes on localhost under ``multi_worker`` (``TF_CONFIG``; each worker half of
  every global batch and its own CPU threads, both on the same cores), alternating. The
  first 3 steps (tracing, the collectives' set-up) are not timed.

Prints the median seconds per step of each, the ratios, and the bytes one step's
gradient all-reduce moves per worker (the model's trainable float32 parameters).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

from absl import app, flags

from tfnode import cluster

flags.DEFINE_string("model", "node", "A registered model, with tools.train's defaults.")
flags.DEFINE_integer("steps", 30, "Training steps per timed call or run.")
flags.DEFINE_integer("repeats", 3, "Rounds of each measurement.")
flags.DEFINE_enum("part", "both", ["both", "loop_vs_fit", "workers"], "What to measure.")
FLAGS = flags.FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LOOP_VS_FIT = """
import json, sys, time
import keras, numpy as np, tensorflow as tf
from tfnode import models
from tfnode.training import TrainConfig, fit, loop
model_name, steps, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
keras.utils.set_random_seed(0)
config = TrainConfig(model=model_name)
net = models.get_model(model_name, dataset="mnist")
fit.compile_for_training(net, config, 2 * steps * repeats + 10)
stream = fit.train_stream(config, 0)

from benchmarks.step_clock import StepClock

def run(kind):
    clock = StepClock()
    if kind == "fit":
        net.fit(stream, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[clock])
    else:
        loop.fit(net, stream, strategy=tf.distribute.get_strategy(), epochs=1,
                 steps_per_epoch=steps, callbacks=[clock], verbose=0)
    return float(np.median(clock.times[1:]))

run("fit"), run("loop")  # warm-up: traces and compiles both
out = {"fit": [], "loop": []}
for r in range(repeats):
    for kind in (("fit", "loop") if r % 2 == 0 else ("loop", "fit")):
        out[kind].append(run(kind))
out["parameters"] = int(sum(np.prod(v.shape) for v in net.trainable_variables))
print(json.dumps(out))
"""

TRAIN = """
import json, os, sys, time
from tfnode import training
import keras, numpy as np
kwargs = json.loads(sys.argv[1])
from benchmarks.step_clock import StepClock
times = []
metrics = training.train(training.TrainConfig(**kwargs), callbacks=[StepClock(times)], verbose=0,
                         log=lambda m: None)
print(json.dumps({"seconds_per_step": float(np.median(times[3:])), "steps": len(times),
                  "replicas": metrics["replicas"]}))
"""


def _child(code, args, env=None):
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
    return proc


def _result(proc):
    out, err = proc.communicate()
    if proc.returncode:
        sys.exit(f"benchmark child failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def loop_vs_fit():
    out = _result(_child(LOOP_VS_FIT, [FLAGS.model, str(FLAGS.steps), str(FLAGS.repeats)]))
    fit_s, loop_s = statistics.median(out["fit"]), statistics.median(out["loop"])
    print(f"loop vs fit, {FLAGS.model}, batch 128, {FLAGS.steps} steps per call, "
          f"{FLAGS.repeats} interleaved rounds after a warm-up (medians per call: "
          f"fit {['%.3f' % t for t in out['fit']]}, loop {['%.3f' % t for t in out['loop']]})")
    print(f"  Keras fit              {fit_s:.3f} s/step")
    print(f"  tfnode.training.loop   {loop_s:.3f} s/step  ({loop_s / fit_s:.2f}x fit)")
    return out["parameters"]


def workers():
    one, two = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(FLAGS.repeats):
            for kind in (("one", "two") if r % 2 == 0 else ("two", "one")):
                name = f"{kind}{r}"
                kwargs = {"model": FLAGS.model, "epochs": 1, "steps_per_epoch": FLAGS.steps,
                          "model_dir": os.path.join(tmp, name),
                          "export_dir": os.path.join(tmp, "sm"), "export_name": name,
                          "eval_batch_size": 500}
                if kind == "one":
                    one.append(_result(_child(TRAIN, [json.dumps(kwargs)]))["seconds_per_step"])
                    continue
                procs = [_child(TRAIN, [json.dumps({**kwargs, "strategy": "multi_worker"})],
                                env={"TF_CONFIG": tf_config})
                         for tf_config in cluster.local_tf_configs(2)]
                results = [_result(p) for p in procs]
                assert [r["replicas"] for r in results] == [2, 2]
                two.append(max(r["seconds_per_step"] for r in results))
    a, b = statistics.median(one), statistics.median(two)
    print(f"1 process vs 2 local workers, {FLAGS.model}, global batch 128, tools.train's "
          f"path, {FLAGS.steps} steps per run, {FLAGS.repeats} alternating rounds "
          f"(per run: 1 process {['%.3f' % t for t in one]}, 2 workers "
          f"{['%.3f' % t for t in two]})")
    print(f"  1 process (default)         {a:.3f} s/step")
    print(f"  2 workers (multi_worker)    {b:.3f} s/step  ({b / a:.2f}x one process)")


def main(argv):
    del argv
    parameters = None
    if FLAGS.part in ("both", "loop_vs_fit"):
        parameters = loop_vs_fit()
    if FLAGS.part in ("both", "workers"):
        workers()
    if parameters:
        print(f"one step's gradient all-reduce: {parameters} float32 parameters = "
              f"{parameters * 4 / 1e6:.2f} MB; a ring all-reduce over N workers sends and "
              f"receives 2 (N - 1) / N of it per worker")


if __name__ == "__main__":
    app.run(main)
