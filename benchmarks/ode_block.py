"""tfnode's ODE-Net vs the same network in torchdiffeq, side by side in one run.

    pip install -e '.[bench]'
    python -m benchmarks.ode_block

Builds Chen et al.'s MNIST ODE-Net (width 64, GroupNorm, time-concat convolutions, stem
to 7x7, dopri5 at rtol = atol = 1e-3) in Keras with random weights, copies the weights
into the torchdiffeq twin (`benchmarks.torch_twin`), checks that both give the same
logits on a batch of real MNIST training images, then times on that batch:

* forward: inference, no gradient;
* train step: forward, cross-entropy, backward and an SGD update (learning rate 0, so
  the weights, the steps the solver takes and the NFE stay the same across repeats),
  written out as one ``tf.function``, and as ``tools.train`` runs it ("tfnode training
  loop": Keras' ``train_step`` with its loss and accuracy metric, in the step function of
  `tfnode.training.loop`);
* attack step: the gradient of the cross-entropy with respect to the input images,
  what every PGD step computes;

each the median of ``--repeats`` runs after a warm-up. Torch runs in a worker process
of its own (`benchmarks.torch_twin`), alive for the whole benchmark and idle while
tfnode runs (in one process the two frameworks' thread pools slowed torch by about a
third here); the runs of all variants of both frameworks alternate round by round
(`interleaved_medians`), so that a drift of this shared machine's speed, which was
larger than 10% between runs a few minutes apart, hits them alike. tfnode's variants are its solver
paths (TFP's adjoint, tfnode's backprop loop, its forward compiled with XLA, and the
backprop loop without any XLA, as a SavedModel for TF Serving runs it);
torchdiffeq's are direct backprop (``odeint``) and ``odeint_adjoint``. The twin lands
its last step on t = 1 (``step_t=[1]``) as tfnode's loop does and uses the standard
Dormand-Prince error weights (`benchmarks.torch_twin.Dopri5StandardError`), so both
take the same steps; torchdiffeq as shipped (its own error weights, overstep and
interpolate) is timed too.
Ratios are tfnode / the twin with backprop (below 1: tfnode faster).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def keras_weights(model):
    """A tfnode ODE-Net's weights by name, as `benchmarks.torch_twin.load_weights` reads them."""
    arrays = {}
    for name in ("stem_conv1", "stem_conv2", "stem_conv3", "logits"):
        kernel, bias = model.get_layer(name).weights
        arrays[f"{name}.kernel"], arrays[f"{name}.bias"] = kernel.numpy(), bias.numpy()
    func = model.get_layer("ode_block").odefunc
    norms = {"stem_norm1": model.get_layer("stem_norm1"),
             "stem_norm2": model.get_layer("stem_norm2"),
             "head_norm": model.get_layer("head_norm"),
             **{f"odefunc_{n}": getattr(func, n) for n in ("norm1", "norm2", "norm3")}}
    for name, norm in norms.items():
        arrays[f"{name}.gamma"], arrays[f"{name}.beta"] = norm.gamma.numpy(), norm.beta.numpy()
    for name in ("conv1", "conv2"):
        kernel, bias = getattr(func, name).conv.weights
        arrays[f"odefunc_{name}.kernel"], arrays[f"odefunc_{name}.bias"] = (
            kernel.numpy(), bias.numpy())
    block = model.get_layer("ode_block")
    arrays.update(width=func.filters, rtol=block.rtol, atol=block.atol)
    return arrays


class TorchTwin:
    """The `benchmarks.torch_twin` worker, alive in a process of its own.

    ``twin(op, **request)`` sends one request and returns the reply (see
    `benchmarks.torch_twin.Worker.handle`). Use as a context manager; leaving it ends
    the worker (killed if it has not ended within 60 s).

    Args:
      arrays: `keras_weights` plus ``x`` and ``y``, the batch the twin works on.
      *args: command-line options of the worker (``--skip_adjoint``).
    """

    def __init__(self, arrays, *args):
        import numpy as np

        self._tmp = tempfile.TemporaryDirectory()
        path = os.path.join(self._tmp.name, "arrays.npz")
        np.savez(path, **arrays)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.torch_twin", f"--arrays={path}", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __call__(self, op, **request):
        try:
            self._proc.stdin.write(json.dumps({"op": op, **request}) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            raise SystemExit("the torchdiffeq twin worker ended early (its error is above)")
        return json.loads(line)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self._proc.stdin.close()  # end of input: the worker returns
            self._proc.wait(timeout=60)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait()
        finally:
            self._tmp.cleanup()


def interleaved_medians(runs, repeats):
    """Median seconds of each run, the runs alternating round by round.

    After one warm-up run of each, every round runs each once, in reverse order every
    other round, so that a drift of the machine's speed during the benchmark (large on
    this shared machine) hits every run alike instead of whichever ran last.

    Args:
      runs: names mapped to callables that do one run and return its seconds.
      repeats: rounds.

    Returns:
      ``{name: median seconds}``.
    """
    import statistics

    for run in runs.values():
        run()
    times = {name: [] for name in runs}
    for r in range(repeats):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            times[name].append(runs[name]())
    return {name: statistics.median(ts) for name, ts in times.items()}


def timed(fn):
    """``fn`` as a callable that runs it once and returns the seconds it took."""
    def run():
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    return run


def _tf_callables(model, x, y, jit_forward, xla=True):
    """Forward, train-step and NFE callables of a Keras model, plus its forward function.

    With ``xla=False`` the functions trace inside `tfnode.layers.no_xla` (no XLA-compiled
    GroupNorm or dopri5 step: TF's own kernels only, as in an exported SavedModel).
    """
    import contextlib

    import keras
    import tensorflow as tf

    from tfnode import layers

    block = model.get_layer("ode_block")
    opt = keras.optimizers.SGD(learning_rate=0.0, momentum=0.9)
    variables = model.trainable_variables
    opt.build(variables)

    @tf.function(jit_compile=jit_forward)
    def forward(v):
        return model(v, training=False)

    @tf.function
    def train_step(v, labels):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels, model(v, training=True)))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    @tf.function
    def attack_step(v, labels):
        with tf.GradientTape() as tape:
            tape.watch(v)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels, model(v, training=False)))
        return tape.gradient(loss, v)

    def nfe():
        forward(x)
        return block.nfe

    def traced(fn):  # the context only matters while tracing, i.e. on the first call
        def call(*args):
            with contextlib.nullcontext() if xla else layers.no_xla():
                return fn(*args)
        return call

    forward, train_step, attack_step = map(traced, (forward, train_step, attack_step))
    return (lambda: forward(x).numpy(), lambda: train_step(x, y).numpy(), nfe, forward,
            lambda: attack_step(x, y).numpy())


def _loop_step(model, x, y):
    """A train step as ``tools.train`` runs it: the model compiled with Keras' loss, the
    accuracy metric and the same SGD (learning rate 0, so that every timed step solves
    the same ODE), one step of `tfnode.training.loop` (Keras' ``train_step`` in the loop's
    compiled step function)."""
    import keras
    import tensorflow as tf

    from tfnode.training import loop

    trainer = keras.models.clone_model(model)
    trainer.set_weights(model.get_weights())
    trainer.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0, momentum=0.9),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    step = loop.train_step_function(trainer, tf.distribute.get_strategy())
    return lambda: float(step((x, y))["loss"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--rtol", type=float, default=1e-3)
    parser.add_argument("--atol", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--skip_adjoint", action="store_true",
                        help="do not time the adjoint variants (the slowest)")
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from tfnode import data, models, files

    images, labels = data.load_arrays("mnist", "train", data_dir=args.data_dir)
    x_np = images[:args.batch_size].astype(np.float32) / 255.0
    y_np = labels[:args.batch_size].astype(np.int64)
    x, y = tf.constant(x_np), tf.constant(y_np)
    keras.utils.set_random_seed(args.seed)
    model = models.get_model("node", dataset="mnist", width=args.width, rtol=args.rtol,
                             atol=args.atol, gradient="backprop")
    variants = {"tfnode backprop": _tf_callables(model, x, y, jit_forward=False),
                "tfnode backprop, XLA forward": _tf_callables(model, x, y, jit_forward=True),
                "tfnode backprop, no XLA": _tf_callables(model, x, y, jit_forward=False,
                                                         xla=False),
                "tfnode TFP adjoint": _tf_callables(
                    models.with_solver_options(model, gradient="adjoint"), x, y, False)}
    arrays = {**keras_weights(model), "x": x_np, "y": y_np}
    with TorchTwin(arrays, *(["--skip_adjoint"] if args.skip_adjoint else [])) as twin:
        info = twin("info")
        # The same function: fixed Euler steps are the same computation in both frameworks
        # (checks the weight copy), and dopri5 with the same error weights and controller
        # takes the same steps (checks the solvers agree), each to float rounding.
        euler = models.with_solver_options(model, solver="euler", step_size=0.25)
        gap_euler = float(np.max(np.abs(
            euler(x).numpy() - np.array(twin("logits", euler_step=0.25)["logits"]))))
        logits = {n: variants[n][3](x).numpy() for n in (
            "tfnode backprop", "tfnode backprop, XLA forward", "tfnode backprop, no XLA")}
        gap = float(np.max(np.abs(logits["tfnode backprop"]
                                  - np.array(twin("logits")["logits"]))))
        results = {f"{name}|nfe": c[2]() for name, c in variants.items()}
        results["tfnode training loop|nfe"] = results["tfnode backprop|nfe"]
        results.update({f"{name}|nfe": twin("nfe", variant=name)["nfe"]
                        for name in info["variants"]})
        print(f"MNIST train batch of {args.batch_size}, width {args.width}, dopri5 rtol "
              f"{args.rtol} atol {args.atol}, random init (seed {args.seed}); "
              f"{files.versions()}; torch {info['torch_version']} ({info['threads']} "
              f"threads), torchdiffeq {_torchdiffeq_version()}")
        xla_gaps = [np.max(np.abs(logits[f"tfnode backprop, {n}"] - logits["tfnode backprop"]))
                    for n in ("XLA forward", "no XLA")]
        print(f"max |logits tfnode - torchdiffeq twin|: {gap_euler:.2e} with 4 Euler steps, "
              f"{gap:.2e} with dopri5 (NFE {results['tfnode backprop|nfe']} vs "
              f"{results['torchdiffeq|nfe']}); tfnode backprop vs its XLA forward "
              f"{xla_gaps[0]:.2e}, vs no XLA {xla_gaps[1]:.2e}", flush=True)
        if results["tfnode backprop|nfe"] != results["torchdiffeq|nfe"]:
            raise SystemExit("the twins took different numbers of steps: not the same work")
        if max(gap, gap_euler, *xla_gaps) > 1e-4:
            raise SystemExit(f"the variants disagree ({max(gap, gap_euler, *xla_gaps):.2e} "
                             "> 1e-4): not timing different functions")
        for column, index in (("forward", 0), ("train", 1), ("attack", 4)):
            runs = {name: timed(c[index]) for name, c in variants.items()
                    if column == "forward" or "XLA forward" not in name}
            if column == "train":
                runs["tfnode training loop"] = timed(_loop_step(model, x, y))
            runs.update({name: (lambda name=name: twin("time", variant=name,
                                                       what=column)["seconds"])
                         for name in info["variants"]
                         if column != "forward" or "adjoint" not in name})
            if args.skip_adjoint and column != "forward":
                runs = {n: r for n, r in runs.items() if "adjoint" not in n}
            results.update({f"{name}|{column}": seconds for name, seconds
                            in interleaved_medians(runs, args.repeats).items()})
    print_table(results, args.repeats)


def print_table(results, repeats):
    columns = (("forward", "forward s"), ("train", "train step s"),
               ("attack", "attack step s"))
    print(f"medians of {repeats} interleaved runs after a warm-up; ratio = time / the "
          f"torchdiffeq twin's (same steps, backprop)")
    print(f"{'variant':<31} {'NFE':>4} " + " ".join(f"{title:>13} {'ratio':>6}"
                                                   for _, title in columns))
    names = dict.fromkeys(k.split("|")[0] for k in results)
    for name in names:
        cells = []
        for key, _ in columns:
            value, base = results.get(f"{name}|{key}"), results[f"torchdiffeq|{key}"]
            cells.append(f"{value:>13.3f} {value / base:>5.2f}x" if value
                         else f"{'-':>13} {'':>6}")
        print(f"{name:<31} {int(results[f'{name}|nfe']):>4d} {' '.join(cells)}")


def _torchdiffeq_version():
    from importlib import metadata
    return metadata.version("torchdiffeq")


if __name__ == "__main__":
    main()
