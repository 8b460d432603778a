"""Trains and evaluates a step-size family (Chu et al. 2020, Sec. 4.1, Fig. 1); resumes.

    python -m tools.sweep --flagfile=flags/mnist_resnet_step_sizes.cfg
    python -m tools.sweep --flagfile=flags/resnet56_step_sizes.cfg      # CIFAR-10
"""

from absl import flags as absl_flags

from flags import common
from tools import _run

common.define_sweep_flags()
FLAGS = absl_flags.FLAGS


def main(argv):
    del argv  # tools._run.parse_flags refuses positional arguments

    def run():
        from tfnode import sweep

        sweep.run_sweep(common.sweep_config(FLAGS))

    _run.run_main(run)


if __name__ == "__main__":
    _run.app_run(main)
