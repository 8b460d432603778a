"""Which adaptive solver: NFE, time and error of each, at one tolerance and at matched accuracy.

    python -m benchmarks.solvers --model_path=savedmodels/node_mnist/1

On the trained ODE-Net (``--model_path``) and on a random-init copy of it, on the first
``--batch_size`` MNIST test images: every adaptive solver in the registry through
tfnode's loop (``gradient="backprop"``, the batched controller that training uses), and
dopri5 through TFP's DormandPrince (``gradient="adjoint"``), each

* at the same tolerance (``--rtol`` = atol), and
* at matched accuracy: the loosest tolerance on a grid whose error is no larger than
  dopri5's (tfnode's loop) at ``--rtol``.

Error: RMS of (ODE block output - reference) / RMS of the reference, where the
reference is dopri5 at rtol = atol = ``--reference_tol`` (tfnode's loop); plus the
largest logit change. Time: forward (inference) and train step (forward, loss, backward,
an SGD update with learning rate 0, so the weights stay put), medians of interleaved
runs (`benchmarks.ode_block.interleaved_medians`), printed with their ratio to dopri5
at ``--rtol``. Errors, NFE and steps are measured without XLA (the same math; the
tolerance search then compiles nothing, and a matched row is measured as it was
matched); times with XLA.
"""

import argparse
import contextlib
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keras warns that a tensor is not the {"images": ...} structure; it is the same input.
warnings.filterwarnings("ignore", message="The structure of `inputs`")

# The matched-accuracy search walks this grid from the tolerance under test.
TOL_GRID = (1e-2, 5e-3, 2e-3, 1e-3, 5e-4, 2e-4, 1e-4, 5e-5, 2e-5, 1e-5, 5e-6, 2e-6, 1e-6)


def matched_tolerance(error_at, target, start, grid=TOL_GRID):
    """The loosest tolerance of ``grid`` with ``error_at(tol) <= target``.

    Walks from ``start`` towards tighter tolerances while the error is too large, or
    towards looser ones while it still meets the target (errors shrink as the tolerance
    tightens, to the noise of float32).

    Returns:
      ``(tol, error)``, or ``(None, None)`` if no tolerance of the grid meets the target.
    """
    grid = sorted(grid, reverse=True)  # loosest first
    i = grid.index(start)
    errors = {}

    def err(j):
        if j not in errors:
            errors[j] = error_at(grid[j])
        return errors[j]

    if err(i) > target:
        while i + 1 < len(grid) and err(i) > target:
            i += 1
        return (grid[i], err(i)) if err(i) <= target else (None, None)
    while i > 0 and err(i - 1) <= target:
        i -= 1
    return grid[i], err(i)


def _variant(model, solver, tol, gradient="backprop"):
    from tfnode import models
    return models.with_solver_options(model, solver=solver, rtol=tol, atol=tol,
                                      gradient=gradient, per_sample_steps=False)


def _block_output(model, x, *, xla):
    """The ODE block's output and the logits of ``model`` on ``x``, and the block's stats."""
    import keras
    import numpy as np

    from tfnode import layers

    block = model.get_layer("ode_block")
    probe = keras.Model(model.inputs, [block.output, model.outputs[0]])
    with contextlib.nullcontext() if xla else layers.no_xla():
        state, logits = probe(x, training=False)
    return np.asarray(state), np.asarray(logits), block.stats


def _rel_rms(a, b):
    import numpy as np
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b ** 2)))


def measure(model, x, y, *, rtol, reference_tol, repeats, solvers_=None):
    """Rows ``{variant, solver, tol, nfe, steps..., error, logit_error, forward_s,
    train_s}`` for one model: every solver at ``rtol`` and at matched accuracy."""
    import tensorflow as tf

    from benchmarks.ode_block import _tf_callables, interleaved_medians, timed
    from tfnode import ode

    names = solvers_ or [n for n, t in ode.TABLEAUX.items() if t.adaptive]
    # dopri5 first: the row every ratio is taken against.
    names = sorted(names, key=lambda n: n != "dopri5")
    ref_state, ref_logits, _ = _block_output(_variant(model, "dopri5", reference_tol), x,
                                             xla=False)

    def errors(net):  # without XLA: see the module docstring
        state, logits, stats = _block_output(net, x, xla=False)
        return _rel_rms(state, ref_state), float(abs(logits - ref_logits).max()), stats

    configs = [(f"{n} (tfnode)", n, "backprop") for n in names]
    if "dopri5" in names:
        configs.append(("dopri5 (TFP)", "dopri5", "adjoint"))
    target = errors(_variant(model, "dopri5", rtol))[0]
    nets = {}
    for label, solver, gradient in configs:
        nets[f"{label} @ {rtol:g}"] = (solver, rtol, _variant(model, solver, rtol, gradient))
        tol, _ = matched_tolerance(
            lambda t, s=solver, g=gradient: errors(_variant(model, s, t, g))[0], target, rtol)
        if tol is not None and tol != rtol:
            nets[f"{label} @ {tol:g} (matched)"] = (solver, tol,
                                                    _variant(model, solver, tol, gradient))
    runs, rows = {}, []
    for name, (solver, tol, net) in nets.items():
        forward, train, _, _, _ = _tf_callables(net, tf.constant(x), tf.constant(y),
                                                jit_forward=False)
        runs[(name, "forward")], runs[(name, "train")] = timed(forward), timed(train)
    medians = interleaved_medians(runs, repeats)
    for name, (solver, tol, net) in nets.items():
        error, logit_error, stats = errors(net)
        rows.append({"variant": name, "solver": solver, "tol": tol, **stats, "error": error,
                     "logit_error": logit_error, "forward_s": medians[(name, "forward")],
                     "train_s": medians[(name, "train")]})
    return rows, target


def print_rows(title, rows, target):
    base = rows[0]  # the first solver (dopri5 unless --solvers omits it) at --rtol
    print(f"\n{title}: error target (dopri5, tfnode's loop) {target:.2e}")
    print(f"{'variant':<34} {'NFE':>5} {'acc':>5} {'rej':>4} {'rel err':>9} {'|dlogit|':>9} "
          f"{'forward s':>9} {'ratio':>6} {'train s':>8} {'ratio':>6}")
    for r in rows:
        acc = f"{r['accepted_steps']:.0f}" if "accepted_steps" in r else "-"
        rej = f"{r['rejected_steps']:.0f}" if "rejected_steps" in r else "-"
        print(f"{r['variant']:<34} {r['nfe']:>5.0f} {acc:>5} {rej:>4} {r['error']:>9.2e} "
              f"{r['logit_error']:>9.2e} {r['forward_s']:>9.3f} "
              f"{r['forward_s'] / base['forward_s']:>5.2f}x {r['train_s']:>8.3f} "
              f"{r['train_s'] / base['train_s']:>5.2f}x")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_path", required=True)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rtol", type=float, default=1e-3)
    parser.add_argument("--reference_tol", type=float, default=1e-7)
    parser.add_argument("--solvers", default=None, help="comma-separated; default: all "
                        "adaptive solvers")
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    from tfnode import data, files
    from tfnode.exports import read as loading

    keras.utils.set_random_seed(0)
    trained, _ = loading.load_model(args.model_path)
    random_init = keras.models.clone_model(trained)  # same architecture, fresh weights
    images, labels = data.load_arrays("mnist", "test", data_dir=args.data_dir)
    x = images[:args.batch_size].astype(np.float32) / 255.0
    y = labels[:args.batch_size].astype(np.int64)
    names = args.solvers.split(",") if args.solvers else None
    print(f"first {args.batch_size} MNIST test images; {args.model_path}; "
          f"reference dopri5 at {args.reference_tol:g}; medians of {args.repeats} "
          f"interleaved runs; {files.versions()}")
    for title, model in (("trained", trained), ("random init", random_init)):
        rows, target = measure(model, x, y, rtol=args.rtol, reference_tol=args.reference_tol,
                               repeats=args.repeats, solvers_=names)
        print_rows(title, rows, target)


if __name__ == "__main__":
    main()
