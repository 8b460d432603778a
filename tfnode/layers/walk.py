"""The one walk over a model's nested layers."""

import keras


def sublayers(model, kind=keras.layers.Layer):
    """Every layer nested in ``model`` (itself left out), depth first, that is a ``kind``.

    Keras 3 has no public recursive walk (``model.layers`` is one level deep), so this is
    the one place that calls its private ``_flatten_layers``; a model that is not a Keras
    layer (a SavedModel's signature) has none.
    """
    if not isinstance(model, keras.layers.Layer):
        return []
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, kind)]
