"""Where an evaluation's seconds go: the ODE-Net forward against the machine's matmul
FLOP/s, and a Boundary-heavy run split into model queries, padding and the rest.

    python -m benchmarks.profile_eval --model_path=savedmodels/node_mnist_seed0/1 \
        --num_examples=160

1. **Matmul FLOP/s**: a 2048 x 2048 float32 matmul, compiled, the best of 10: what this
   machine's BLAS reaches, the ceiling to compare a model's forward pass with.
2. **The ODE-Net forward** at the evaluation's batch size (per-sample steps, as
   `tools.evaluate` runs it): seconds per batch XLA-compiled (`forward_fn`, the
   queries and confirmations) and through the relaxed graph (`logits_fn`, under the
   gradient attacks); the number of function evaluations (NFE) from the blocks' stats;
   FLOPs counted by TensorFlow's profiler on the graph of one function evaluation and
   on the stem and head; achieved FLOP/s and its fraction of the matmul's; and how much
   of the forward pass the function evaluations alone take (the same NFE calls of the
   compiled ODE function in a Python loop): the rest is the solver's step control.
3. **Row independence across shapes**: whether each row's logits are the same bits at
   every `bucket` shape the evaluation compiles (batch, halvings down to 8), which is
   what lets the Boundary oracle pad to a bucket instead of the whole batch and still
   make the same decisions.
4. **A Boundary-heavy run**: the paper's Boundary Attack (1000 queries) on the first
   ``--num_examples`` clean-correct test images in batches of the batch size (a short
   last batch, as a shard's or the fast schedule's survivors leave), once with every
   query padded to the batch size (``pad="batch"``, the oracle before) and once padded
   to the `bucket` that holds it (``pad="bucket"``), alternating which runs first per
   batch; per run the seconds, the seconds inside model calls, the rows computed
   against the rows asked for, and what was found (adversarials, median L2, each
   example's L2 compared).
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _best_seconds(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_flops(n=2048, repeats=10):
    """The best FLOP/s of an n x n float32 matmul (compiled) on this machine."""
    import tensorflow as tf

    a = tf.random.stateless_normal((n, n), seed=(1, 2))
    b = tf.random.stateless_normal((n, n), seed=(3, 4))
    mm = tf.function(lambda a, b: tf.matmul(a, b), jit_compile=True)
    mm(a, b).numpy()
    return 2 * n ** 3 / _best_seconds(lambda: mm(a, b).numpy(), repeats)


def graph_flops(fn, *specs):
    """FLOPs of one call of ``fn`` on inputs of ``specs``, by TensorFlow's profiler (the
    ops it has FLOP counts for: convolutions, matmuls, element-wise arithmetic)."""
    import tensorflow as tf

    graph = tf.function(fn).get_concrete_function(*specs).graph
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return tf.compat.v1.profiler.profile(graph, options=opts).total_float_ops


def forward_profile(model, x, repeats=5):
    """The ODE-Net forward on batch ``x``: seconds, NFE, FLOPs and where they go."""
    import keras
    import tensorflow as tf

    from tfnode.attacks import _utils
    from tfnode.layers import ODEBlock, sublayers

    blocks = sublayers(model, ODEBlock)
    xla, relaxed = _utils.forward_fn(model), _utils.logits_fn(model)
    xt = tf.constant(x)
    xla(xt).numpy(), relaxed(xt).numpy()
    out = {"batch": len(x),
           "xla_seconds": _best_seconds(lambda: xla(xt).numpy(), repeats),
           "relaxed_seconds": _best_seconds(lambda: relaxed(xt).numpy(), repeats)}
    relaxed(xt)  # the blocks' stats of an eager-visible solve
    nfe = sum(float(tf.reduce_mean(b.stats["nfe"])) if "nfe" in b.stats else 0.0
              for b in blocks)
    out["nfe"] = nfe
    if not blocks:
        out["flops"] = graph_flops(lambda v: model(v, training=False),
                                   tf.TensorSpec(x.shape, tf.float32))
        return out
    block = blocks[0]
    inner = keras.Model(model.inputs, block.input)
    outer = keras.Model(block.output, model.outputs)
    y0 = inner(xt)
    t = tf.constant(0.5, tf.float32)
    func_flops = graph_flops(lambda t, y: block.odefunc(t, y),
                             tf.TensorSpec([], tf.float32), tf.TensorSpec(y0.shape, tf.float32))
    rest = (graph_flops(lambda v: inner(v), tf.TensorSpec(x.shape, tf.float32))
            + graph_flops(lambda v: outer(v), tf.TensorSpec(y0.shape, tf.float32)))
    func = tf.function(lambda t, y: block.odefunc(t, y), jit_compile=True)
    func(t, y0).numpy()
    calls = max(1, round(nfe))

    def evaluations():
        y = y0
        for _ in range(calls):
            y = func(t, y)
        y.numpy()

    out.update(func_flops=func_flops, rest_flops=rest, flops=rest + nfe * func_flops,
               func_seconds=_best_seconds(evaluations, repeats))
    return out


def rows_independent(model, x, batch):
    """Whether every row's compiled logits are the same bits at each bucket shape."""
    import numpy as np

    from tfnode.attacks import _utils

    fn = _utils.forward_fn(model)
    sizes, size = [], batch
    while True:
        sizes.append(size)
        if size <= _utils.MIN_BUCKET:
            break
        size = (size + 1) // 2
    full = fn(x[:batch]).numpy()
    return all(np.array_equal(fn(x[:s]).numpy(), full[:s]) for s in sizes[1:])


class _Timed:
    """Wraps `tfnode.attacks._utils.predict` to count seconds and rows (asked, computed)."""

    def __init__(self, predict):
        self.predict, self.seconds, self.asked, self.computed = predict, 0.0, 0, 0

    def __call__(self, model, x, *, batch_size=None, xla=True, pad_to_batch=False):
        from tfnode.attacks import _utils

        start = time.perf_counter()
        out = self.predict(model, x, batch_size=batch_size, xla=xla, pad_to_batch=pad_to_batch)
        self.seconds += time.perf_counter() - start
        self.asked += len(x)
        batch = batch_size or len(x)
        for i in range(0, len(x), batch):
            n = min(batch, len(x) - i)
            self.computed += batch if pad_to_batch else (_utils.bucket(n, batch) if xla else n)
        return out


def boundary_profile(model, x, y, batch, max_queries):
    """Both paddings of the Boundary oracle on the same batches, alternating order."""
    import numpy as np

    from tfnode import attacks
    from tfnode.attacks import boundary

    result = {pad: {"seconds": 0.0, "model_seconds": 0.0, "asked": 0, "computed": 0,
                    "l2": [], "found": []} for pad in ("batch", "bucket")}
    original = boundary.predict
    try:
        for k, i in enumerate(range(0, len(x), batch)):
            rows = slice(i, i + batch)
            for pad in (("batch", "bucket") if k % 2 == 0 else ("bucket", "batch")):
                timed = _Timed(original)
                boundary.predict = timed
                start = time.perf_counter()
                res = attacks.boundary_attack(model, x[rows], y[rows], max_queries=max_queries,
                                              batch_size=batch, seed=k, pad=pad)
                r = result[pad]
                r["seconds"] += time.perf_counter() - start
                r["model_seconds"] += timed.seconds
                r["asked"] += timed.asked
                r["computed"] += timed.computed
                confirmed = attacks.predict(model, res.x_adv, batch_size=batch,
                                            **attacks.confirm_kwargs({"xla": True, "pad": pad})
                                            ) != y[rows]
                found = res.is_adv & confirmed
                r["found"].append(found)
                r["l2"].append(np.where(found, attacks.distances(res.x_adv, x[rows])[0],
                                        np.nan))
    finally:
        boundary.predict = original
    for r in result.values():
        r["found"], r["l2"] = np.concatenate(r["found"]), np.concatenate(r["l2"])
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_path", action="append", required=True)
    parser.add_argument("--num_examples", type=int, default=160)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--max_queries", type=int, default=1000)
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args()

    import numpy as np

    from tfnode import attacks, data, files
    from tfnode.exports import read as loading

    print(f"{files.versions()}")
    peak = matmul_flops()
    print(f"matmul 2048 x 2048 float32 (XLA), best of 10: {peak / 1e9:.1f} GFLOP/s")
    images, labels = data.load_arrays("mnist", "test", data_dir=args.data_dir)
    x_all = images[:4 * max(args.num_examples, args.batch_size)].astype(np.float32) / 255.0
    y_all = labels[:len(x_all)].astype(np.int64)
    for path in args.model_path:
        model, info = loading.with_per_sample_steps(*loading.load_model(path))
        print(f"\n{path} (weights {info['fingerprint']}, per-sample steps "
              f"{info['per_sample_steps']})")
        f = forward_profile(model, x_all[:args.batch_size])
        gflops = f["flops"] / 1e9
        print(f"forward, batch {f['batch']}: XLA {f['xla_seconds']:.3f} s, relaxed "
              f"{f['relaxed_seconds']:.3f} s per batch; NFE {f['nfe']:.1f}; "
              f"{gflops:.2f} GFLOP per batch")
        for name in ("xla", "relaxed"):
            achieved = f["flops"] / f[f"{name}_seconds"]
            print(f"  {name}: {achieved / 1e9:.1f} GFLOP/s = {achieved / peak:.3f} of the "
                  "matmul's")
        if "func_flops" in f:
            share = f["nfe"] * f["func_flops"] / f["flops"]
            print(f"  one function evaluation: {f['func_flops'] / 1e6:.1f} MFLOP per batch "
                  f"({share:.3f} of the forward's FLOPs); {round(f['nfe'])} compiled "
                  f"evaluations alone: {f['func_seconds']:.3f} s = "
                  f"{f['func_seconds'] / f['xla_seconds']:.2f} of the XLA forward")
        print("  row bits the same at every bucket shape: "
              f"{rows_independent(model, x_all, args.batch_size)}")
        keep = np.flatnonzero(attacks.predict(model, x_all, batch_size=args.batch_size) == y_all)
        keep = keep[:args.num_examples]
        attacks.boundary_attack(model, x_all[keep[:2]], y_all[keep[:2]], max_queries=4,
                                batch_size=args.batch_size)  # compile before timing
        b = boundary_profile(model, x_all[keep], y_all[keep], args.batch_size,
                             args.max_queries)
        print(f"Boundary Attack, {args.max_queries} queries, {len(keep)} clean-correct "
              f"images in batches of {args.batch_size}:")
        print(f"  {'pad':<7} {'seconds':>8} {'in model':>9} {'rows asked':>11} "
              f"{'rows computed':>14} {'found':>6} {'median L2':>10}")
        for pad, r in b.items():
            print(f"  {pad:<7} {r['seconds']:>8.1f} {r['model_seconds']:>9.1f} "
                  f"{r['asked']:>11d} {r['computed']:>14d} {int(r['found'].sum()):>6d} "
                  f"{np.nanmedian(r['l2']):>10.3f}")
        same = np.array_equal(b["batch"]["found"], b["bucket"]["found"]) and np.allclose(
            b["batch"]["l2"], b["bucket"]["l2"], equal_nan=True, rtol=0, atol=0)
        print(f"  bucket / batch: {b['bucket']['seconds'] / b['batch']['seconds']:.2f}; "
              f"the same adversarials at the same L2 on every image: {same}")


if __name__ == "__main__":
    main()
