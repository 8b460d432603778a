"""The cost of batch-independent solving: shared vs per-sample dopri5 steps.

    python -m benchmarks.per_sample --model_path=savedmodels/node_mnist/1

Forward (inference) and forward+backward (one input-gradient, as an attack step) time
and NFE of the same trained ODE-Net on the same MNIST test batch, with the shared step
controller (TFP's and torchdiffeq's behaviour) and with ``per_sample_steps=True``, each
the median of interleaved runs after a warm-up; plus how much a sample's logits change
between its batch and being alone under each.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_path", required=True)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    from tfnode import data, files, models
    from tfnode.exports import read as loading

    model, _ = loading.load_model(args.model_path)
    images, labels = data.load_arrays("mnist", "test", data_dir=args.data_dir)
    x = tf.constant(images[:args.batch_size].astype(np.float32) / 255.0)
    y = tf.constant(labels[:args.batch_size].astype(np.int64))
    variants = {"shared": model,
                "per_sample": models.with_solver_options(model, per_sample_steps=True)}
    forward, gradient = {}, {}
    for name, net in variants.items():
        forward[name] = tf.function(lambda v, net=net: net(v, training=False))

        @tf.function
        def grad(v, net=net):
            with tf.GradientTape() as tape:
                tape.watch(v)
                loss = tf.nn.sparse_softmax_cross_entropy_with_logits(y, net(v, training=False))
            return tape.gradient(loss, v)

        gradient[name] = grad
        forward[name](x)
        grad(x)  # trace both before timing
    times = {(n, k): [] for n in variants for k in ("forward", "gradient")}
    for _ in range(args.repeats):
        for name in variants:
            for kind, fn in (("forward", forward[name]), ("gradient", gradient[name])):
                start = time.perf_counter()
                fn(x).numpy()
                times[(name, kind)].append(time.perf_counter() - start)
    print(f"MNIST test batch of {args.batch_size}, {args.model_path}; {files.versions()}")
    print(f"{'controller':<11} {'forward s':>9} {'fwd+bwd s':>9} {'NFE':>5} "
          f"{'max |logit change| alone vs batch':>34}")
    base = {}
    for name, net in variants.items():
        logits = forward[name](x).numpy()
        nfe = net.get_layer("ode_block").nfe
        alone = np.concatenate([forward[name](x[i:i + 1]).numpy() for i in range(8)])
        base[name] = [np.median(times[(name, k)]) for k in ("forward", "gradient")]
        print(f"{name:<11} {base[name][0]:>9.3f} {base[name][1]:>9.3f} {nfe:>5d} "
              f"{np.max(np.abs(alone - logits[:8])):>34.2e}")
    print(f"per_sample / shared: forward {base['per_sample'][0] / base['shared'][0]:.2f}x, "
          f"fwd+bwd {base['per_sample'][1] / base['shared'][1]:.2f}x")


if __name__ == "__main__":
    main()
