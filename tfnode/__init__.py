"""tfnode: adversarial robustness of Neural ODEs vs. ResNets in TensorFlow 2 / Keras 3.

Public surface: ``tfnode.layers`` (ODEBlock, ODEFunc, ...), ``tfnode.models.get_model``,
``tfnode.data.load``, ``tfnode.train.train``, ``tfnode.export.export``.
"""

__version__ = "0.1.0"

from tfnode import data, layers, models, optimizers  # noqa: E402
from tfnode.errors import DataError, TfnodeError  # noqa: E402
from tfnode.models import get_model  # noqa: E402

__all__ = ["DataError", "TfnodeError", "data", "get_model", "layers", "models",
           "optimizers"]
