"""Attacks a trained model (and optionally a second one) and writes a robustness report.

    python -m tools.evaluate --model_path=savedmodels/node_mnist/1 \
        --compare_model_path=savedmodels/resnet_mnist/1 --attacks=fgsm,pgd,di2_fgsm,boundary
    python -m tools.evaluate --flagfile=flags/eval_mnist.cfg --model_path=...
"""

from absl import app
from absl import flags as absl_flags

from flags import common
from tools import _run

common.define_evaluate_flags()
FLAGS = absl_flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from tfnode import evaluate

    _run.run_main(lambda: evaluate.evaluate(**common.evaluate_kwargs(FLAGS)))


if __name__ == "__main__":
    app.run(main)
