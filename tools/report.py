"""Gathers many runs into one results page beside the paper's numbers.

    python -m tools.report --runs='savedmodels/*/*,reports/*' --output=docs/paper.md
"""

import sys

from absl import flags as absl_flags

from flags import common, configs
from tools import _run

common.define_results_flags()
FLAGS = absl_flags.FLAGS


def main(argv):
    del argv  # tools._run.parse_flags refuses positional arguments

    def run():
        from tfnode import paper
        from tfnode.errors import TfnodeError

        if not FLAGS.runs:
            raise TfnodeError("--runs is required: run folders, files or globs")
        path, gathered = paper.write(
            FLAGS.runs, FLAGS.output, command="python -m tools.report " + " ".join(
                a for a in sys.argv[1:]))
        print(f"tfnode: {path}: {len(gathered['training'])} trained model(s), "
              f"{len(gathered['evaluations'])} evaluation(s), {len(gathered['sweeps'])} "
              "sweep(s)")

    _run.run_main(run, flag_names=configs.flag_names())


if __name__ == "__main__":
    _run.app_run(main)
