"""tfnode: adversarial robustness of Neural ODEs vs. ResNets in TensorFlow 2 / Keras 3.

Public surface: ``tfnode.layers`` (ODEBlock, ODEFunc, ...), ``tfnode.models.get_model``,
``tfnode.data.load``, ``tfnode.training.train``, ``tfnode.exports.write.export``.
"""

from tfnode import data, layers, models, optimizers
from tfnode.errors import DataError, TfnodeError
from tfnode.models import get_model
from tfnode.version import __version__

__all__ = ["DataError", "TfnodeError", "__version__", "data", "get_model", "layers",
           "models", "optimizers"]
