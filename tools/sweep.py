"""Trains and evaluates a step-size family (Chu et al. 2020, Sec. 4.1, Fig. 1); resumes.

    python -m tools.sweep --flagfile=flags/mnist_resnet_step_sizes.cfg
    python -m tools.sweep --flagfile=flags/resnet56_step_sizes.cfg      # CIFAR-10
"""

from absl import flags as absl_flags

from flags import common, configs
from tools import _run

common.define_sweep_flags()
FLAGS = absl_flags.FLAGS


def main(argv):
    del argv  # tools._run.parse_flags refuses positional arguments

    def run():
        from tfnode.paper import step_sizes

        step_sizes.run_sweep(configs.sweep_config(FLAGS))

    _run.run_main(run, flag_names=configs.flag_names())


if __name__ == "__main__":
    _run.app_run(main)
