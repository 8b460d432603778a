"""Trains a model, evaluates it on the test split and exports a SavedModel.

    python -m tools.train --model=node                      # ODE-Net on MNIST
    python -m tools.train --flagfile=flags/mnist_node.cfg   # the paper's full run
"""

from absl import app
from absl import flags as absl_flags

from flags import common
from tools import _run

common.define_train_flags()
FLAGS = absl_flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    def run():
        from tfnode import train

        train.train(**common.train_kwargs(FLAGS))

    _run.run_main(run)


if __name__ == "__main__":
    app.run(main)
