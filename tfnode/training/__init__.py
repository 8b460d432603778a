"""Training: `TrainConfig` (the one recipe), `train` (fit with exact resume, test
evaluation, export), the run folder's bookkeeping and the compile/feed helpers."""

from tfnode.training.config import TrainConfig, check
from tfnode.training.run import train

__all__ = ["TrainConfig", "check", "train"]
