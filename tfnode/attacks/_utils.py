"""What every attack shares: the result type, the projection/clip step, argument checks,
the logits callable."""

import dataclasses
import weakref

import numpy as np
import tensorflow as tf

from tfnode.errors import TfnodeError

NORMS = (np.inf, 2)


@dataclasses.dataclass
class AttackResult:
    """What every registered attack returns (`tfnode.attacks.registry.AttackSpec.run`).

    Attributes:
      x_adv: the adversarials, numpy ``[N, ...]`` float32.
      is_adv: per sample, whether the attack itself saw the model misclassify ``x_adv``
        (None for attacks that do not query the decision, e.g. FGSM). The evaluation
        decides robustness by predicting ``x_adv`` itself; this is the attack's view.
      queries: model queries per sample, for attacks that count them (None otherwise).
      details: attack-specific diagnostics (per-sample arrays or lists), e.g. the
        Boundary Attack's ``initial_l2`` or the Square Attack's ``window_sides``.
    """
    x_adv: np.ndarray
    is_adv: np.ndarray | None = None
    queries: np.ndarray | None = None
    details: dict = dataclasses.field(default_factory=dict)


def check_norm(norm):
    """Raises `TfnodeError` unless ``norm`` is ``np.inf`` or ``2``."""
    if norm not in NORMS:
        raise TfnodeError(f"norm must be np.inf or 2, got {norm!r}")


def check_eps(eps, *, name="eps", norm=np.inf, clip_min=0.0, clip_max=1.0):
    """Raises `TfnodeError` unless ``eps >= 0`` and, for Linf, ``eps <= clip_max - clip_min``."""
    if not float(eps) >= 0.0:
        raise TfnodeError(f"{name} must be >= 0, got {eps!r}")
    if norm == np.inf and float(eps) > float(clip_max) - float(clip_min):
        raise TfnodeError(f"{name} must lie in [0, {clip_max - clip_min:g}] (the input "
                          f"range) for an Linf attack, got {eps!r}")


def check_positive_int(value, name):
    if not isinstance(value, (int, np.integer)) or value < 1:
        raise TfnodeError(f"{name} must be an integer >= 1, got {value!r}")


def project(x_adv, x, *, eps, norm=np.inf, clip_min=0.0, clip_max=1.0):
    """Projects ``x_adv`` onto ``{x + d : |d|_norm <= eps} ∩ [clip_min, clip_max]``.

    The one projection all tfnode attacks use. For ``np.inf`` the result is exactly the
    Euclidean projection onto the intersection (both sets are boxes); for ``2`` it is the
    L2-ball projection followed by the clip (the clip can only shrink the perturbation, so
    the result is still inside the ball).
    """
    x = tf.convert_to_tensor(x, tf.float32)
    delta = tf.convert_to_tensor(x_adv, tf.float32) - x
    if norm == np.inf:
        delta = tf.clip_by_value(delta, -eps, eps)
    else:
        check_norm(norm)
        axes = list(range(1, len(delta.shape)))
        # The 1e-12 goes inside the sqrt so that a zero delta has a finite gradient.
        length = tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(delta), axes, keepdims=True),
                                    1e-12))
        delta = delta * tf.minimum(1.0, eps / length)
    return tf.clip_by_value(x + delta, clip_min, clip_max)


def sample_ids(ids, n):
    """Per-sample random keys: ``ids`` as int64 (default ``0..n-1``), checked."""
    if ids is None:
        return np.arange(n, dtype=np.int64)
    ids = np.asarray(ids, np.int64).reshape(-1)
    if len(ids) != n or (n and ids.min() < 0):
        raise TfnodeError(f"ids must be {n} integers >= 0 (one per sample), got {len(ids)}")
    return ids


def per_sample_rngs(seed, ids, stream):
    """One numpy generator per sample, keyed by ``(seed, stream, id)``.

    A sample's random draws (a PGD start, an APGD start) then depend on its id and the
    seed alone, never on which other samples share its batch: an evaluation that drops
    finished samples, re-batches the survivors or runs a shard of the examples draws the
    same numbers for every sample as one run over everything.
    """
    return [np.random.default_rng((int(seed), int(stream), int(i))) for i in ids]


def per_sample_uniform(shape, *, seed, ids, stream, low=-1.0, high=1.0):
    """``[len(ids), *shape]`` float32, row k uniform in ``[low, high)`` from sample
    ``ids[k]``'s own generator (`per_sample_rngs`)."""
    rows = [g.uniform(low, high, shape) for g in per_sample_rngs(seed, ids, stream)]
    return np.asarray(rows, np.float32).reshape((len(rows),) + tuple(shape))


# Compiled shapes of the shrinking active set: the batch, then halvings down to this.
MIN_BUCKET = 8


def bucket(count, batch):
    """The call size for ``count`` active samples of a batch of ``batch``: the smallest of
    ``batch, ceil(batch / 2), ceil(batch / 4), ...`` (not below `MIN_BUCKET`) that
    holds them, so a shrinking batch traces a few shapes, not one per size."""
    size = batch
    while size > MIN_BUCKET and (size + 1) // 2 >= count:
        size = (size + 1) // 2
    return size


def call_active(fn, idx, batch, *arrays):
    """``fn(*rows)`` on the rows ``idx`` of ``arrays``, padded to `bucket` size.

    The padding repeats the first active row and its outputs are dropped: with a model
    that treats samples independently (an ODE-Net with per-sample steps) it changes no
    active sample's result.

    Returns:
      ``fn``'s outputs (a tuple), each cut to ``len(idx)`` rows, as numpy arrays.
    """
    take = padded(idx, bucket(len(idx), batch))
    outs = fn(*[tf.constant(np.asarray(a)[take]) for a in arrays])
    return tuple(np.asarray(o)[:len(idx)] for o in outs)


def padded(idx, size):
    """``idx`` followed by copies of its first entry, ``size`` entries in all."""
    idx = np.asarray(idx)
    return np.concatenate([idx, np.full(size - len(idx), idx[0], idx.dtype)])


def first_success(state, idx, logits, y):
    """Early exit: keeps the iterates of ``idx`` the model misclassifies as their
    adversarials and drops them from the active set; returns the still-active part.

    ``state`` holds the run's ``x_adv``, ``x_first``, ``fooled`` and ``active`` arrays
    (updated in place); ``logits`` are those of the rows ``idx``.
    """
    wrong = np.argmax(logits, axis=-1) != y[idx]
    done = idx[wrong]
    state["x_first"][done] = state["x_adv"][done]
    state["fooled"][done] = True
    state["active"][done] = False
    return ~wrong


def row_mask(mask, ndim):
    """A per-sample boolean ``mask [N]`` shaped to broadcast over ``ndim``-d inputs."""
    return np.reshape(mask, (-1,) + (1,) * (ndim - 1))


def distances(x_adv, x):
    """Per-sample ``(l2, linf)`` distances as numpy arrays."""
    d = np.reshape(np.asarray(x_adv, np.float64) - np.asarray(x, np.float64), (len(x), -1))
    return np.sqrt(np.sum(d * d, axis=1)), np.max(np.abs(d), axis=1, initial=0.0)


_LOGITS_FNS = {False: weakref.WeakKeyDictionary(), True: weakref.WeakKeyDictionary()}


def logits_fn(model, *, per_shape=False):
    """A graph-compiled ``x -> logits`` for ``model``; the same object for the same model.

    A Keras model is called with ``training=False``. Any other callable is used as is,
    wrapped in a ``tf.function``: an ODE block's solver loop run eagerly would execute
    op by op in Python. The wrapper is cached per model so that repeated attack calls
    (and CleverHans' ``@tf.function`` gradient, which retraces for every new callable)
    trace once.

    Args:
      model: a Keras model or any logits callable.
      per_shape: trace once per input shape. For gradient attacks, which see one or two
        batch shapes: an ODE-Net's XLA-compiled solver steps ran slower in a graph
        traced for an unknown batch size (measured: benchmarks/README.md). The default,
        for attacks that query shrinking subsets (Square; Boundary with ``xla=False``)
        and for confirming their decisions: a Keras model is traced ONCE, for an unknown batch size, so
        that every query and its confirmation run the same graph (one traced for a
        known size would compile an ODE block's steps, and an adaptive solver turns
        that rounding into other steps at the decision boundary); any other callable
        is relaxed to an unknown batch size after its second shape.

    Returns:
      A ``tf.function`` (or ``model`` itself if it already is one).
    """
    if isinstance(model, tf.types.experimental.GenericFunction):
        return model  # already a graph function: used as is, never re-wrapped
    cache = _LOGITS_FNS[bool(per_shape)]
    try:
        return cache[model]
    except (KeyError, TypeError):
        pass
    if hasattr(model, "compute_output_spec"):  # a Keras layer or model
        ref = weakref.ref(model)  # the cache must not keep the model alive
        signature = None
        if not per_shape and getattr(model, "inputs", None):
            shape = (None,) + tuple(model.inputs[0].shape[1:])
            signature = [tf.TensorSpec(shape, tf.float32)]
        fn = tf.function(lambda x: ref()(x, training=False), input_signature=signature,
                         reduce_retracing=not per_shape)
    else:
        fn = tf.function(model, reduce_retracing=not per_shape)
    try:
        cache[model] = fn
    except TypeError:  # not weak-referenceable: no caching
        pass
    return fn


_FORWARD_FNS = weakref.WeakKeyDictionary()


def forward_fn(model):
    """``x -> logits`` for queries that need no gradient; XLA-compiled for Keras models.

    XLA compiles an ODE block's solver loop forward well on CPU; the loop's gradient it
    compiles badly (both measured: benchmarks/README.md), so attacks that differentiate
    use `logits_fn`, where each step is compiled but the loop is not. XLA
    compiles once per input shape, so this is for callers with a fixed batch size
    (`predict`, and the Boundary Attack's oracle, which pads every query to one shape);
    the Square Attack, which queries shrinking subsets, uses the relaxed `logits_fn`,
    whose unknown batch size also keeps the block from compiling its step.
    Any other callable gets `logits_fn`'s wrapper.
    """
    if not hasattr(model, "compute_output_spec"):
        return logits_fn(model)
    try:
        return _FORWARD_FNS[model]
    except (KeyError, TypeError):
        pass
    ref = weakref.ref(model)
    fn = tf.function(lambda x: ref()(x, training=False), jit_compile=True,
                     reduce_retracing=True)
    try:
        _FORWARD_FNS[model] = fn
    except TypeError:
        pass
    return fn


def predict(model, x, *, batch_size=None, xla=True, pad_to_batch=False):
    """Top-1 predictions of ``model`` on ``x`` (numpy), in batches of ``batch_size``.

    With ``xla`` a short last batch is padded to a `bucket` size by repeating a row, so
    that predicting subsets of every size compiles a few shapes, not one per size.

    Args:
      model: logits callable.
      x: inputs.
      batch_size: images per model call (default: all at once).
      xla: through `forward_fn` (XLA-compiled, for fixed-size evaluation batches); False:
        through the relaxed `logits_fn`, the computation the query-based attacks use,
        so that a decision they found at the decision boundary is confirmed by the same
        arithmetic (an adaptive solver turns a rounding difference into other steps).
      pad_to_batch: with ``xla``, pad every batch to ``batch_size`` itself: one
        compiled shape for every call. At a fixed shape the XLA-compiled model gives
        each row the same bits whatever the other rows hold (per-sample steps;
        checked in tests/test_attacks.py), so a query-based attack that queries this
        way (the Boundary Attack's ``xla`` oracle) and its confirmation agree exactly.
    """
    if pad_to_batch and not xla:
        raise TfnodeError("predict: pad_to_batch needs xla=True (the relaxed graph "
                          "takes any batch size)")
    fn = forward_fn(model) if xla else logits_fn(model)
    x = np.asarray(x, np.float32)
    batch_size = batch_size or max(len(x), 1)
    out = []
    for i in range(0, len(x), batch_size):
        rows = np.arange(i, min(i + batch_size, len(x)))
        if xla:  # XLA compiles per shape: a short batch is padded to a `bucket` size
            rows = padded(rows, batch_size if pad_to_batch else bucket(len(rows), batch_size))
        logits = fn(tf.constant(x[rows])).numpy()[:min(batch_size, len(x) - i)]
        if not np.isfinite(logits).all():  # argmax of NaN would be a silent class 0
            raise TfnodeError(f"the model returned non-finite logits for inputs {i}.."
                              f"{i + len(logits) - 1} (an ODE solve that did not reach t1?)")
        out.append(np.argmax(logits, axis=-1))
    return np.concatenate(out) if out else np.zeros((0,), np.int64)
