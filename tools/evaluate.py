"""Attacks a trained model (and optionally a second one) and writes a robustness report.

    python -m tools.evaluate --model_path=savedmodels/node_mnist/1 \
        --compare_model_path=savedmodels/resnet_mnist/1 --attacks=fgsm,pgd,di2_fgsm,boundary \
        --attack_option=pgd.num_steps=100
    python -m tools.evaluate --flagfile=flags/eval_mnist.cfg --model_path=...
"""

from absl import flags as absl_flags

from flags import common, configs
from tools import _run

common.define_evaluate_flags()
FLAGS = absl_flags.FLAGS


def main(argv):
    del argv  # tools._run.parse_flags refuses positional arguments
    def run():
        from tfnode import evaluation

        evaluation.evaluate(configs.evaluate_config(FLAGS), record=common.record(FLAGS))

    _run.run_main(run, flag_names=configs.flag_names())


if __name__ == "__main__":
    _run.app_run(main)
