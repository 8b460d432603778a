"""Optimizers with weight decay as the published recipes apply it.

Registered with Keras (package ``tfnode``): an exported ``model.keras`` holds its
compiled optimizer, so loading one needs these classes (`tfnode.exports.read` imports this
module).
"""

import keras


class _CoupledL2:
    """Weight decay as PyTorch's optimizers apply it: ``wd * w`` added to each gradient
    before the update (and so before SGD's momentum), not Keras' decoupled
    ``w -= lr * wd * w``. With momentum 0.9 the two differ about tenfold in their
    steady-state shrinkage, and the published recipes (He et al., Madry et al., TRADES,
    YOPO) give PyTorch's (or TF1's L2 loss, the same gradient)."""

    def __init__(self, *args, l2=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.l2 = float(l2)

    def apply(self, grads, trainable_variables=None):
        variables = (self._trainable_variables if trainable_variables is None
                     else trainable_variables)
        if self.l2:
            grads = [g if g is None else g + self.l2 * v for g, v in zip(grads, variables)]
        return super().apply(grads, trainable_variables)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


@keras.saving.register_keras_serializable(package="tfnode")
class SGDWithL2(_CoupledL2, keras.optimizers.SGD):
    """`keras.optimizers.SGD` with PyTorch's coupled weight decay ``l2``."""


@keras.saving.register_keras_serializable(package="tfnode")
class AdamWithL2(_CoupledL2, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with PyTorch's coupled weight decay ``l2``."""
