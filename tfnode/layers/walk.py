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


def through_graph(model, inputs, apply):
    """Runs a functional ``model``'s graph on ``inputs`` with ``apply(layer, *args,
    **kwargs)`` in place of each layer's call: what flows along the edges may be any
    object (`tfnode.bounds` sends intervals).

    Keras 3 has no public graph walk either; this is the one place that calls its
    private ``_run_through_graph`` (node order, the arguments of each call).
    """
    return model._run_through_graph(
        inputs, operation_fn=lambda layer: layer,
        call_fn=lambda layer, *args, **kwargs: apply(layer, *args, **kwargs))
