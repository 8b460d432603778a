"""PGD-40 throughput on MNIST test images, and the share of time spent in the ODE solver.

    python -m benchmarks.attack --model_path=savedmodels/node_mnist/1 \
        --model_path=savedmodels/resnet_mnist/1 --num_examples=1000

For each model: images/s of the paper's PGD (Linf eps 0.3, 40 steps of 0.01, random
start, batch 128), and the same attack on a copy of the model whose ODE blocks (or
residual blocks) are replaced by the identity; ``1 - t_copy / t_model`` is the share of
the attack's time spent in those blocks. Both run side by side in one process; the
numbers are ratios of one run on one machine, not targets.

With ``--torch_twin`` (needs the extra ``bench``), an ODE-Net's weights are also copied
into its torchdiffeq twin (`benchmarks.torch_twin`), and the same PGD, written in torch
with the same random start distribution, runs on it in a worker process of its own,
batch by batch alternating with tfnode's attack (the worker idles while tfnode runs, and
tfnode while it runs), so that a drift of the machine's speed hits both alike; the
ratio is tfnode's time over torch's.
"""

import argparse
import contextlib
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def without_blocks(model):
    """A copy of ``model`` sharing its weights, with ODE/residual blocks as identities."""
    import keras

    from tfnode.layers import ODEBlock, ResidualBlock

    def clone(layer):
        if isinstance(layer, (ODEBlock, ResidualBlock)):
            return keras.layers.Identity(name=layer.name + "_identity")
        return layer

    return keras.models.clone_model(model, clone_function=clone)


def time_pgd(model, x, y, batch_size, *, twin=None, twin_variants=(), **kwargs):
    """Times PGD over all batches, per implementation, alternating batch by batch.

    The twin variants run each batch right after tfnode's, or right before it every
    other batch, so that a drift of the machine's speed hits both alike.

    Args:
      model: the Keras model (tfnode's attack).
      x: images.
      y: labels.
      batch_size: images per attack call.
      twin: a `benchmarks.ode_block.TorchTwin` holding the same ``x`` and ``y``, or None.
      twin_variants: names of the twin's variants to run.
      **kwargs: `tfnode.attacks.pgd` options (``eps``, ``step_size``, ``num_steps``, ...).

    Returns:
      ``{name: (seconds of the attack alone, images fooled, mean NFE per forward
      solve)}`` for ``"tfnode"`` and each twin variant; the NFE is None for a model
      without ODE blocks.
    """
    import numpy as np

    from tfnode import attacks

    # Trace every batch shape first (the last batch is smaller): no tracing is timed.
    for n in sorted({min(batch_size, len(y)), len(y) % batch_size} - {0}):
        attacks.pgd(model, x[:n], y[:n], **{**kwargs, "num_steps": 1})
        attacks.predict(model, x[:n])
    request = dict(eps=kwargs["eps"], step_size=kwargs["step_size"],
                   num_steps=kwargs["num_steps"])
    for name in twin_variants:  # warm-up
        twin("pgd", variant=name, start=0, stop=min(8, len(y)), **{**request, "num_steps": 1})
    # Per implementation: seconds, images fooled, evaluations and forward solves counted.
    totals = {name: [0.0, 0, 0.0, 0.0] for name in ("tfnode", *twin_variants)}
    metrics = [layer.nfe_metric for layer in model.layers if hasattr(layer, "nfe_metric")]
    for b, i in enumerate(range(0, len(y), batch_size)):
        order = ("tfnode", *twin_variants)
        before_batch = {name: totals[name][0] for name in order}
        for name in order if b % 2 == 0 else order[::-1]:
            if name != "tfnode":
                reply = twin("pgd", variant=name, start=i, stop=i + batch_size, **request)
                totals[name][0] += reply["seconds"]
                totals[name][1] += reply["fooled"]
                totals[name][2] += reply["nfe"] * kwargs["num_steps"]
                totals[name][3] += kwargs["num_steps"]
                continue
            before = [(float(m.total), float(m.count)) for m in metrics]
            start = time.perf_counter()
            adv = attacks.pgd(model, x[i:i + batch_size], y[i:i + batch_size], **kwargs)
            totals[name][0] += time.perf_counter() - start
            for m, (total, count) in zip(metrics, before):  # the attack's solves only
                totals[name][2] += float(m.total) - total
                totals[name][3] += float(m.count) - count
            totals[name][1] += int(np.sum(attacks.predict(model, adv) != y[i:i + batch_size]))
        if twin_variants:  # the spread from batch to batch shows the machine's noise
            print(f"  batch {b}: " + ", ".join(
                f"{name} {totals[name][0] - before_batch[name]:.1f} s" for name in order),
                flush=True)
    return {name: (seconds, fooled, nfe / solves if solves else None)
            for name, (seconds, fooled, nfe, solves) in totals.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_path", action="append", required=True)
    parser.add_argument("--num_examples", type=int, default=1000)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--torch_twin", action="store_true",
                        help="also time the attack on the ODE-Net's torchdiffeq twin")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    from benchmarks import ode_block
    from tfnode import data, files
    from tfnode.exports import read as loading

    images, labels = data.load_arrays("mnist", "test", data_dir=args.data_dir)
    x = images[:args.num_examples].astype(np.float32) / 255.0
    y = labels[:args.num_examples].astype(np.int64)
    pgd = dict(eps=args.eps, step_size=0.01, num_steps=40, rand_init=True)
    print(f"PGD-40 (eps {args.eps}, step 0.01, random start), {len(y)} MNIST test images, "
          f"batch {args.batch_size}; {files.versions()}; "
          f"threads intra {tf.config.threading.get_intra_op_parallelism_threads()}")
    print(f"{'model':<8} {'images/s':>9} {'seconds':>8} {'fooled':>7} "
          f"{'no-block s':>10} {'share in blocks':>15}  path")
    twin_variants = ("torchdiffeq", "torchdiffeq as shipped")
    for path in args.model_path:
        model, info = loading.load_model(path)
        block = next((layer for layer in model.layers if layer.name == "ode_block"), None)
        twin_ok = block is not None and (block.solver, block.t1, block.gradient,
                                         block.per_sample_steps, block.first_step_size) == (
            "dopri5", 1.0, "backprop", False, None)
        if args.torch_twin and block is not None and not twin_ok:
            print(f"no torchdiffeq twin for {path}: the twin solves dopri5 on [0, 1] with "
                  "Hairer's first step, batch-shared steps and backprop only")
        with contextlib.ExitStack() as stack:
            twin = None
            if args.torch_twin and twin_ok:
                twin = stack.enter_context(ode_block.TorchTwin(
                    {**ode_block.keras_weights(model), "x": x, "y": y}, "--skip_adjoint"))
            results = time_pgd(model, x, y, args.batch_size, twin=twin,
                               twin_variants=twin_variants if twin else (), **pgd)
            twin_info = twin("info") if twin else None
        seconds, fooled, nfe = results.pop("tfnode")
        if nfe is not None:
            print(f"tfnode: mean NFE per forward solve of the attack {nfe:.1f}")
        bare_seconds = time_pgd(without_blocks(model), x, y, args.batch_size, **pgd)[
            "tfnode"][0]
        share = 1.0 - bare_seconds / seconds
        print(f"{loading.model_label(info):<8} {len(y) / seconds:>9.1f} "
              f"{seconds:>8.1f} {fooled:>7d} {bare_seconds:>10.1f} {share:>15.1%}  {path}",
              flush=True)
        if results:
            print(f"torchdiffeq twins of {path} (torch {twin_info['torch_version']}, "
                  f"{twin_info['threads']} threads), batch by batch alternating with tfnode; "
                  "mean NFE per forward solve of the attack:")
        for name, (t, twin_fooled, twin_nfe) in results.items():
            print(f"  {name:<23} {len(y) / t:>5.1f} images/s {t:>7.1f} s  fooled "
                  f"{twin_fooled}  NFE {twin_nfe:.1f}; tfnode / this {seconds / t:.2f}x",
                  flush=True)


if __name__ == "__main__":
    main()
