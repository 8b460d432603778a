"""Merges the shards of a sharded evaluation into one report.

    python -m tools.evaluate --flagfile=flags/eval_mnist.cfg --model_path=... \
        --shard=0/4      # ... and 1/4, 2/4, 3/4: one job each
    python -m tools.merge_shards --output_dir=reports/mnist_paper

The shards are read from ``<output_dir>/shards/<i>-of-<N>/``; the merged report is written
to ``<output_dir>`` (the numbers of one unsharded run: `tfnode.evaluation.shards`).
"""

from absl import flags as absl_flags

from flags import common, configs
from tools import _run

common.define_output_flag()
FLAGS = absl_flags.FLAGS


def main(argv):
    del argv  # tools._run.parse_flags refuses positional arguments

    def run():
        from tfnode.evaluation import shards
        from tfnode.errors import TfnodeError

        if not FLAGS.output_dir:
            raise TfnodeError("--output_dir is required: the folder the shards were run with")
        report = shards.merge(shards.find(FLAGS.output_dir), FLAGS.output_dir)
        print(f"tfnode: merged {len(report['shards'])} shards ({report['num_examples']} "
              f"examples) into {report['paths']['md']}")

    _run.run_main(run, flag_names=configs.flag_names())


if __name__ == "__main__":
    _run.app_run(main)
