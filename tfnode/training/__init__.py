"""Training: `TrainConfig` (the one recipe), `train` (fit with exact resume, test
evaluation, export), the run folder's bookkeeping and the compile/feed helpers.

Modules: `tune` (keras-tuner over solver tolerances) on top; `run` (`train`); `config`,
`fit`, `run_dir` and `trials` (a search's pages); `resume` (the exact resume state) and
`strategies` (the distribution strategies) at the bottom."""

from tfnode.training.config import TrainConfig, check
from tfnode.training.run import train

__all__ = ["TrainConfig", "check", "train"]
