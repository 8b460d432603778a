"""Exports a trained model to savedmodels/<name>/<version>/ for TF Serving.

    python -m tools.export --model_path=savedmodels/node_mnist/1 --export_name=node_mnist \
        --report=reports/mnist_audit/report.json
    python -m tools.export --model_path=runs/node_mnist/checkpoints --model=node \
        --export_name=node_mnist     # a run's latest epoch checkpoint
"""

from absl import flags as absl_flags

from flags import common, configs
from tools import _run

common.define_export_flags()
FLAGS = absl_flags.FLAGS


def main(argv):
    del argv  # tools._run.parse_flags refuses positional arguments

    def run():
        from tfnode.exports import write as export

        path = export.export_trained(**configs.export_kwargs(FLAGS))
        print(f"tfnode: SavedModel {path}  (saved_model_cli show --dir {path} --all)")

    _run.run_main(run, flag_names=configs.flag_names())


if __name__ == "__main__":
    _run.app_run(main)
