"""keras-tuner search over an ODE-Net's solver tolerances, judged on a validation split.

    python -m tools.tune --model=node --epochs=1 --tune_option=max_trials=10
    python -m tools.tune --tune_option=tuner=hyperband --tune_option=objective=score \
        --tune_option=nfe_weight=0.1 --epochs=4

Distributed (keras-tuner's chief/worker mode), one chief and any number of workers:
    KERASTUNER_TUNER_ID=chief KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 \
        python -m tools.tune ...
    KERASTUNER_TUNER_ID=tuner0 KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 \
        python -m tools.tune ...
"""

from absl import flags as absl_flags

from flags import common, configs
from tools import _run

common.define_tune_flags()
FLAGS = absl_flags.FLAGS


def main(argv):
    del argv  # tools._run.parse_flags refuses positional arguments

    def run():
        from tfnode.training import tune

        tune.tune(configs.tune_config(FLAGS))

    _run.run_main(run, flag_names=configs.flag_names(tune=True))


if __name__ == "__main__":
    _run.app_run(main)
