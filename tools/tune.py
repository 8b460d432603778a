"""keras-tuner search over an ODE-Net's solver tolerances, judged on a validation split.

    python -m tools.tune --model=node --epochs=1 --max_trials=10 --objective=robust
    python -m tools.tune --tuner=hyperband --objective=score --nfe_weight=0.1 --epochs=4

Distributed (keras-tuner's chief/worker mode), one chief and any number of workers:
    KERASTUNER_TUNER_ID=chief KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 \
        python -m tools.tune ...
    KERASTUNER_TUNER_ID=tuner0 KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 \
        python -m tools.tune ...
"""

from absl import flags as absl_flags

from flags import common
from tools import _run

common.define_tune_flags()
FLAGS = absl_flags.FLAGS


def main(argv):
    del argv  # tools._run.parse_flags refuses positional arguments

    def run():
        from tfnode import tune

        tune.tune(common.tune_config(FLAGS))

    # TuneConfig's fields whose flags have other names.
    _run.run_main(run, flag_names={"eps": "tune_eps", "output_dir": "tune_dir"})


if __name__ == "__main__":
    _run.app_run(main)
