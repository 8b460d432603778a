"""Loading a model to evaluate: a ``.keras`` file or an export folder, and its ODE blocks."""

import hashlib
import json
import os
import re
import zipfile

import keras
import numpy as np
import tensorflow as tf

# optimizers: imported for its registration (a model.keras holds its compiled optimizer);
# the layers register on import of tfnode.layers below.
from tfnode import attacks, models, ode, optimizers  # noqa: F401
from tfnode.exports import layout
from tfnode.errors import ConfigError, TfnodeError
from tfnode.layers import ODEBlock, sublayers

# The ODEBlock attributes that describe how a block is solved (recorded in reports).
BLOCK_FIELDS = ("name", *ode.OPTIONS)


def _load_failure(field, path, what, err):
    return ConfigError(field, f"{path!r}: cannot load {what} "
                       f"({type(err).__name__}: {str(err).splitlines()[0][:200]})")


def check_keras_file(keras_file, *, field="model_path"):
    """Refuses a ``.keras`` file that would need code from the file, naming the layer.

    A ``Lambda`` layer stores Python bytecode, and a class that is neither Keras' own
    nor registered (tfnode's are) would need its code from somewhere: loading either is
    how a model file runs code. Keras' safe mode refuses them too, with a long message
    that does not name the layer; this reads the file's ``config.json`` first.

    Raises:
      ConfigError: naming ``field``: the file is not a Keras archive, or holds such a
        layer.
    """
    try:
        with zipfile.ZipFile(keras_file) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise ConfigError(field, f"{keras_file!r} is not a Keras model archive "
                          f"({type(err).__name__}: {str(err)[:120]})") from None
    for obj, owner in _objects(config, None):
        fields = obj.get("config")
        name = fields.get("name") if isinstance(fields, dict) else None
        where = f"layer {name or owner!r} ({obj['class_name']})"
        if obj["class_name"] in ("Lambda", "__lambda__"):
            raise ConfigError(field, f"{keras_file!r}: {where} holds Python code; tfnode does "
                              "not load code from model files (rebuild the model without "
                              "Lambda layers)")
        registered = obj.get("registered_name")
        module = obj.get("module") or ""
        if registered and ">" in registered:
            known = keras.saving.get_registered_object(registered) is not None
        else:
            known = module == "keras" or module.startswith("keras.")
        # Keras' own markers (__keras_tensor__, __slice__, __numpy__, __tensor__, ...)
        # hold values, not classes; __lambda__ (Python bytecode) is refused above.
        marker = re.fullmatch(r"__\w+__", obj["class_name"]) is not None
        if not known and not marker:
            raise ConfigError(field, f"{keras_file!r}: {where} is of a class neither Keras nor "
                              f"tfnode knows ({registered or module + '.' + obj['class_name']}); "
                              "tfnode does not load code from model files")


def _objects(node, owner):
    """Every serialized object (a dict with ``class_name``) in a Keras config, with the
    name of the nearest enclosing named object."""
    if isinstance(node, dict):
        if "class_name" in node:
            yield node, owner
            config = node.get("config")
            if isinstance(config, dict) and isinstance(config.get("name"), str):
                owner = config["name"]
        for value in node.values():
            yield from _objects(value, owner)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value, owner)


def fingerprint(named_weights):
    """A model's weights in 12 hex digits: sha256 over each weight's name, shape and
    float32 bytes, in order.

    Args:
      named_weights: ``[(name, value)]`` in ``model.weights`` order. Only a name's last
        part counts (``kernel``, ``gamma``): the path before it depends on how the model
        was built (a freshly built nested layer's variable is ``block1/block1_fn/...``,
        the same one loaded from ``model.keras`` is ``block1_fn/...``) and a SavedModel
        appends ``:0``; so the model in training, its ``.keras`` file and its SavedModel
        agree (`weights_of`).

    Returns:
      The first 12 hex digits: a short name that tells two models at one path apart.
    """
    digest = hashlib.sha256()
    for name, value in named_weights:
        array = np.ascontiguousarray(np.asarray(value, dtype="<f4"))
        digest.update(_short_name(name).encode() + b"\0")
        digest.update(repr(tuple(array.shape)).encode() + b"\0")
        digest.update(array.tobytes())
    return digest.hexdigest()[:12]


def _short_name(name):
    """``"block1/block1_fn/norm1/gamma:0"`` -> ``"gamma"``."""
    return re.sub(r":\d+$", "", name).rsplit("/", 1)[-1]


def weights_of(model):
    """``[(name, value)]`` of a Keras model (``model.weights``: the variable paths) or a
    loaded SavedModel (its ``variables``, which `tfnode.exports.write` tracks in the
    same order)."""
    if isinstance(model, keras.Model):
        return [(w.path, w.numpy()) for w in model.weights]
    return [(v.name, v.numpy()) for v in model.variables]


def load_model(path, *, field="model_path"):
    """Loads a logits model from a ``.keras`` file or an export folder.

    An export folder of `tfnode.exports.write` holds ``model.keras`` next to the SavedModel; that
    is preferred (it differentiates exactly as the trained model). A bare SavedModel
    folder is used through its ``serving_default`` signature's ``logits``.

    Args:
      path: the file or folder.
      field: the config field that named it, for error messages.

    Returns:
      ``(model, info)``: a logits callable and a dict with ``path``, ``format``,
      ``input_shape`` ``(H, W, C)``, ``fingerprint`` (of its weights, `fingerprint`)
      and, when known, ``name``, ``ode_blocks`` (see
      `ode_blocks`) and ``trained`` (from the export's ``metrics.json``).
    """
    keras_file = path
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "model.keras")):
        keras_file = os.path.join(path, "model.keras")
    info = {"path": path}
    if os.path.isfile(keras_file) and keras_file.endswith(".keras"):
        check_keras_file(keras_file, field=field)
        try:
            # safe_mode (Keras' default, given here so that no caller can drop it): no
            # Python code in the file is ever run; check_keras_file names the culprit.
            model = keras.models.load_model(keras_file, safe_mode=True)
        except Exception as err:  # noqa: BLE001  any load failure is a user error here
            raise _load_failure(field, path, repr(keras_file), err) from None
        info.update(format="keras", name=model.name, input_shape=tuple(model.input_shape[1:]),
                    ode_blocks=ode_blocks(model), fingerprint=fingerprint(weights_of(model)))
    elif os.path.isfile(os.path.join(path, "saved_model.pb")):
        model, input_shape, loaded = _signature_logits(path, field)
        info.update(format="saved_model", name=_export_name(path), input_shape=input_shape,
                    fingerprint=fingerprint(weights_of(loaded)))
    else:
        raise ConfigError(field, f"{path!r} is not a model: expected a .keras file or a "
                          "SavedModel folder (savedmodels/<name>/<version>)")
    metrics = layout.extra_file(path, "metrics.json") if os.path.isdir(path) else None
    if metrics:
        try:
            with open(metrics) as f:
                saved = json.load(f)
        except (OSError, ValueError):
            saved = {}  # metrics only label the report; a broken file is not fatal
        info["trained"] = {k: saved.get(k) for k in (
            "model", "dataset", "model_options", "clean_accuracy", "mean_nfe_test", "defense",
            "fingerprint")}
        info["trained"]["seed"] = (saved.get("settings") or {}).get("seed")
    return model, info


def _signature_logits(path, field):
    """``(logits tf.function, input shape, the loaded SavedModel)`` of a SavedModel's
    ``serving_default``."""
    try:
        loaded = tf.saved_model.load(path)
    except Exception as err:  # noqa: BLE001
        raise _load_failure(field, path, "the SavedModel", err) from None
    if "serving_default" not in loaded.signatures:
        raise ConfigError(field, f"{path!r}: SavedModel has no serving_default signature")
    signature = loaded.signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    if len(inputs) != 1:
        raise ConfigError(field, f"{path!r}: serving_default takes {len(inputs)} inputs; "
                          "expected one image tensor")
    (arg, spec), = inputs.items()
    if "logits" not in signature.structured_outputs:
        raise ConfigError(field, f"{path!r}: serving_default returns no 'logits'")

    def logits(x):
        assert loaded is not None  # the closure keeps the SavedModel's variables alive
        return signature(**{arg: x})["logits"]

    return tf.function(logits, reduce_retracing=True), tuple(spec.shape[1:]), loaded


def _export_name(path):
    """``savedmodels/node_mnist/3`` -> ``node_mnist/3``; other folders: their name."""
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    return "/".join(parts[-2:]) if parts[-1].isdigit() else parts[-1]


def _ode_block_layers(model):
    return sublayers(model, ODEBlock)  # a SavedModel's signature: none


def solve_stats(model):
    """``{block name: ODEBlock.stats}``: each ODE block's last solve (NFE and, where
    counted, accepted and rejected steps); empty for a model without blocks."""
    return {layer.name: layer.stats for layer in _ode_block_layers(model)}


def ode_blocks(model):
    """Each `ODEBlock` (subclasses included) of ``model``: a dict of `BLOCK_FIELDS`."""
    return [{k: getattr(layer, k) for k in BLOCK_FIELDS} for layer in _ode_block_layers(model)]


def resolved(model, info, options, *, field="solver_options"):
    """The model's ODE blocks solved with ``options`` (same weights,
    `tfnode.models.with_solver_options`) and its info saying so: ``solver_options``, and
    the blocks' new fields. A trained ODE-Net at a finer step or tolerance, or with
    another solver, is the gradient-masking check of a robustness gain that vanishes
    when the same weights are solved more accurately.

    Raises:
      ConfigError: a model without ODE blocks, a bare SavedModel (its solver is fixed),
        or options its blocks cannot be solved with (named as ``field``).
    """
    if not options:
        return model, info
    if info.get("format") != "keras":
        raise ConfigError(field, "cannot re-solve a SavedModel (its solver is fixed): give "
                                 "the export folder with its model.keras")
    if not info.get("ode_blocks"):
        raise ConfigError(field, f"given, but {info.get('path')} has no ODE blocks to "
                                 "re-solve")
    try:
        model = models.with_solver_options(model, **options)
    except (TfnodeError, TypeError, ValueError) as e:  # float("abc") in the block's checks
        raise ConfigError(field, f"{dict(options)}: {e}") from None
    blocks = ode_blocks(model)  # as the rebuilt blocks hold them (1 as 1.0)
    return model, {**info, "solver_options": dict(options), "ode_blocks": blocks}


def with_per_sample_steps(model, info):
    """The model with per-sample ODE steps where they apply; ``info`` says what was done.

    Per-sample steps give each sample its own adaptive step size and error norm, so no
    prediction, and no attack on it, depends on its batch-mates. They apply to adaptive
    blocks differentiated by tfnode's own loop; fixed-step blocks have no step-size
    control to share, and TFP's solver (``gradient="adjoint"``) has one step per batch.
    """
    blocks = info.get("ode_blocks")
    if info.get("format") != "keras":
        reason = ("not applied: a SavedModel's solver cannot be changed; give the export "
                  "folder with its model.keras")
    elif not blocks:
        reason = "not applicable: no ODE blocks"
    elif not any(ode.adaptive(b["solver"]) for b in blocks):
        reason = "not applicable: fixed-step ODE blocks (no step-size control to share)"
    elif any(ode.uses_tfp(b["solver"], b["gradient"]) for b in blocks):
        reason = ("not applied: TFP's DormandPrince (gradient='adjoint') has one step size "
                  "per batch")
    else:
        info = {**info, "per_sample_steps": "applied",
                "ode_blocks": [{**b, "per_sample_steps": True} for b in blocks]}
        return models.with_solver_options(model, per_sample_steps=True), info
    return model, {**info, "per_sample_steps": reason}


def model_label(info):
    """A short name for a loaded model: its trained model name, else its file/export name."""
    trained = info.get("trained") or {}
    if trained.get("model"):
        return f"{trained['model']}"
    base = os.path.basename(os.path.normpath(info["path"]))
    return info.get("name") or os.path.splitext(base)[0]


def check_input_shape(info, shape, dataset, path):
    """Raises a one-line `TfnodeError` unless the model takes images of ``shape``."""
    if tuple(info["input_shape"]) != tuple(shape):
        raise TfnodeError(f"model {path!r} takes inputs of shape {tuple(info['input_shape'])}, "
                          f"but {dataset} images are {tuple(shape)}")


def probe(model, x, y, batch_size):
    """Cheap measurements of a model on the first batch: whether two identical calls give
    the same logits, whether a sample's logits change alone vs in the batch, and the
    fraction of zero or non-finite input gradients (`tfnode.evaluation.checks` judges them); and
    each ODE block's solve statistics on that batch."""
    fn = attacks.logits_fn(model)
    xb, yb = tf.constant(x[:batch_size]), y[:batch_size]
    a = fn(xb).numpy()
    stats = solve_stats(model)
    b = fn(xb).numpy()
    out = {"logits_max_diff_repeat": float(np.max(np.abs(a - b)))}
    if stats:
        out["solve_stats"] = stats
    if len(yb) > 1:
        alone = fn(xb[:1]).numpy()
        out["logits_max_diff_alone_vs_batch"] = float(np.max(np.abs(alone[0] - a[0])))
    with tf.GradientTape() as tape:
        tape.watch(xb)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=fn(xb))
    grad = tape.gradient(loss, xb)
    g = (np.zeros((len(yb), 1)) if grad is None else grad.numpy().reshape(len(yb), -1))
    out["zero_gradient_fraction"] = float(np.mean(np.all(g == 0, axis=1)))
    out["nonfinite_gradient_fraction"] = float(np.mean(~np.all(np.isfinite(g), axis=1)))
    return out
