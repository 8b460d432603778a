"""The Boundary Attack's oracle: the relaxed graph against XLA at one padded shape.

    python -m benchmarks.boundary --model_path=savedmodels/node_mnist/1 \
        --model_path=savedmodels/resnet_mnist/1 --num_examples=128

For each model (with per-sample ODE steps where they apply, as `tools.evaluate` runs
it): the paper's Boundary Attack (1000 queries, steps 0.1) on the first
``--num_examples`` clean-correct MNIST test images, batch by batch with ``xla=False``
(each query through the graph traced for any batch size) and ``xla=True`` (each query
XLA-compiled at the batch size, short calls padded), alternating which runs first, so
that a drift of the machine's speed hits both alike. Prints the seconds of each, their
ratio, and what each found (adversarials, confirmed by the attack's own computation,
median L2): the two oracles round differently, so their walks along the boundary
differ, but not what they find on average.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run(model, x, y, batch_size, max_queries, xla):
    """One Boundary Attack batch; ``(seconds, found and confirmed, l2)``."""
    import numpy as np

    from tfnode import attacks

    start = time.perf_counter()
    res = attacks.boundary_attack(model, x, y, max_queries=max_queries, batch_size=batch_size,
                                  xla=xla, seed=0)
    seconds = time.perf_counter() - start
    confirmed = attacks.predict(model, res.x_adv, batch_size=batch_size, xla=xla,
                                pad_to_batch=xla) != y
    found = res.is_adv & confirmed
    return seconds, found, np.where(found, attacks.distances(res.x_adv, x)[0], np.nan)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_path", action="append", required=True)
    parser.add_argument("--num_examples", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--max_queries", type=int, default=1000)
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args()

    import numpy as np

    from tfnode import attacks, data, files
    from tfnode.exports import read as loading

    images, labels = data.load_arrays("mnist", "test", data_dir=args.data_dir)
    print(f"Boundary Attack, {args.max_queries} queries, first {args.num_examples} "
          f"clean-correct MNIST test images, batch {args.batch_size}; {files.versions()}")
    for path in args.model_path:
        model, info = loading.with_per_sample_steps(*loading.load_model(path))
        x = images[:4 * args.num_examples].astype(np.float32) / 255.0
        y = labels[:4 * args.num_examples].astype(np.int64)
        keep = np.flatnonzero(attacks.predict(model, x, batch_size=args.batch_size) == y)
        keep = keep[:args.num_examples]
        x, y = x[keep], y[keep]
        # Trace and compile both oracles before timing.
        for xla in (False, True):
            run(model, x[:2], y[:2], args.batch_size, 2, xla)
        seconds = {False: 0.0, True: 0.0}
        found = {False: [], True: []}
        l2 = {False: [], True: []}
        for k, i in enumerate(range(0, len(x), args.batch_size)):
            rows = slice(i, i + args.batch_size)
            for xla in ((False, True) if k % 2 == 0 else (True, False)):
                s, f, d = run(model, x[rows], y[rows], args.batch_size, args.max_queries, xla)
                seconds[xla] += s
                found[xla].append(f)
                l2[xla].append(d)
        print(f"\n{path} ({info['per_sample_steps']}), {len(x)} images")
        print(f"{'oracle':<8} {'seconds':>8} {'found':>6} {'median L2':>10}")
        for xla, name in ((False, "relaxed"), (True, "xla")):
            print(f"{name:<8} {seconds[xla]:>8.1f} {int(np.concatenate(found[xla]).sum()):>6d} "
                  f"{np.nanmedian(np.concatenate(l2[xla])):>10.3f}")
        print(f"xla / relaxed: {seconds[True] / seconds[False]:.2f}")


if __name__ == "__main__":
    main()
