"""Trains a model, evaluates it on the test split and exports a SavedModel.

    python -m tools.train --model=node                      # ODE-Net on MNIST
    python -m tools.train --flagfile=flags/mnist_node.cfg   # the paper's full run
"""

from absl import flags as absl_flags

from flags import common, configs
from tools import _run

common.define_train_flags()
FLAGS = absl_flags.FLAGS


def main(argv):
    del argv  # tools._run.parse_flags refuses positional arguments
    def run():
        from tfnode import training

        training.train(configs.train_config(FLAGS), record=common.record(FLAGS))

    _run.run_main(run, flag_names=configs.flag_names())


if __name__ == "__main__":
    _run.app_run(main)
