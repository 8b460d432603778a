"""SavedModel export in TF Serving's layout ``<export_dir>/<name>/<version>/``.

A version folder holds the SavedModel (``serving_default``), ``model.keras`` (tfnode's
own loader prefers it: it differentiates exactly as the trained model), and under
``assets.extra/`` (which TF Serving reads but does not load as a model):
``metrics.json``, the robustness ``report.json`` when one is given, and
``tf_serving_warmup_requests``, the PredictionLog records TF Serving replays on load.
"""

import json
import os
import re
import shutil
import warnings

import keras
import numpy as np
import tensorflow as tf

from tfnode import files, layers, models
from tfnode.errors import ConfigError, TfnodeError
# The reader loads the model that `export_trained` re-exports; it never imports the writer.
from tfnode.exports import read as loading
# The layout's names, read by the reader too (neither module reaches the other through
# the layout).
from tfnode.exports.layout import (ASSETS_EXTRA, METRICS, WARMUP_BATCH_SIZES,  # noqa: F401
                                   WARMUP_FILE, check_writable, extra_file, next_version)


def serving_function(model):
    """``images float32 [N, H, W, C] in [0, 1] -> {"logits", "probabilities", "classes"}``.

    The signature's spec rejects a wrong rank, shape or dtype before this runs; NaN, Inf
    or pixels outside [0, 1] fail an assertion with a message that says so (an ODE solve
    on them would return garbage or run to ``max_num_steps``).
    """

    def serve(images):
        checks = [
            tf.debugging.assert_all_finite(images, "images: NaN or Inf pixels; expected "
                                           "float32 values in [0, 1]"),
            tf.debugging.assert_greater_equal(images, 0.0, message="images: pixels below 0; "
                                              "expected float32 values in [0, 1]"),
            tf.debugging.assert_less_equal(images, 1.0, message="images: pixels above 1; "
                                           "expected float32 values in [0, 1]"),
        ]
        with tf.control_dependencies([c for c in checks if c is not None]):  # None eagerly
            logits = model(tf.identity(images), training=False)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits),
                "classes": tf.argmax(logits, axis=-1)}

    return serve


def warmup_requests(model_name, input_shape, *, batch_sizes=WARMUP_BATCH_SIZES):
    """TF Serving warmup records: one `PredictionLog` per batch size, serialized.

    Each is a ``serving_default`` PredictRequest for ``model_name`` with mid-grey images
    (0.5 everywhere) of ``input_shape`` ``(H, W, C)``; TF Serving replays them when it
    loads the version, so the first user request does not pay for graph set-up.
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    records = []
    for n in batch_sizes:
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
            name=model_name, signature_name="serving_default"))
        images = np.full((n,) + tuple(input_shape), 0.5, np.float32)
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request))
        records.append(log.SerializeToString())
    return records


def write_warmup(path, model_name, input_shape):
    """Writes `warmup_requests` as the TFRecord file TF Serving reads."""
    with tf.io.TFRecordWriter(path) as writer:
        for record in warmup_requests(model_name, input_shape):
            writer.write(record)


def export(model, export_dir, name, *, version=None, extra_files=None):
    """Exports ``model`` as a SavedModel with a ``serving_default`` signature.

    The signature takes ``images``: float32 ``[None, H, W, C]`` in [0, 1], and returns
    ``logits``, ``probabilities`` and ``classes`` (`serving_function`). The version
    folder is written under a temporary name and renamed at the end, so TF Serving never
    loads a half-written version; ``assets.extra/tf_serving_warmup_requests`` is always
    written (`warmup_requests`).

    Args:
      model: a built Keras model from images to logits.
      export_dir: base folder (``savedmodels``).
      name: model name (``node_mnist``), also the warmup requests' model name.
      version: integer version; default is the next free one.
      extra_files: ``{relative path: callable(path)}`` written into the version folder
        before the rename (e.g. ``assets.extra/metrics.json``, ``model.keras``).

    Returns:
      The path of the version folder.
    """
    check_writable(export_dir)
    model_base = os.path.join(export_dir, name)
    version = next_version(model_base) if version is None else int(version)
    if version < 1:
        raise TfnodeError(f"export version {version}: expected an integer >= 1")
    path = os.path.join(model_base, str(version))
    if os.path.exists(path):
        raise TfnodeError(f"export version {path!r} exists already; versions are never "
                          "overwritten")
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32, name="images")
    try:
        # No XLA-compiled functions in the SavedModel: TF Serving's XLA:CPU JIT is off
        # by default, and a graph that needs it would fail at its first request.
        with files.atomic_path(path) as tmp, layers.no_xla():
            archive.add_endpoint("serving_default", serving_function(model),
                                 input_signature=[spec])
            archive.write_out(tmp, verbose=False)
            os.makedirs(os.path.join(tmp, ASSETS_EXTRA), exist_ok=True)
            write_warmup(os.path.join(tmp, ASSETS_EXTRA, WARMUP_FILE), name,
                         model.input_shape[1:])
            for fname, writer in (extra_files or {}).items():
                os.makedirs(os.path.dirname(os.path.join(tmp, fname)), exist_ok=True)
                writer(os.path.join(tmp, fname))
    except FileExistsError:
        raise TfnodeError(f"export version {path!r} was written by another run meanwhile; "
                          "nothing was overwritten, run again for the next version") from None
    return path


def _latest_weights(folder):
    found = sorted(f for f in os.listdir(folder) if re.fullmatch(r"epoch_\d+\.weights\.h5", f))
    if not found:
        raise ConfigError("model_path",
                          f"{folder!r} holds no epoch_NNN.weights.h5 checkpoint")
    return os.path.join(folder, found[-1])


def _weights_file(source):
    """The weights file ``source`` names (itself, or a checkpoints folder's latest), or
    None for a ``.keras`` file or an export folder."""
    if source.endswith(".weights.h5"):
        return source
    if os.path.isdir(source) and not any(os.path.isfile(os.path.join(source, f))
                                         for f in ("model.keras", "saved_model.pb")):
        return _latest_weights(source)
    return None


def _source_model(source, model, dataset, model_options):
    """``(Keras model, metrics.json path or None)`` of a `export_trained` source."""
    if not os.path.exists(source):
        raise ConfigError("model_path", f"{source!r} does not exist")
    weights = _weights_file(source)
    if weights is None:
        net, info = loading.load_model(source)
        if info["format"] != "keras":
            raise ConfigError("model_path", f"{source!r} is a SavedModel without "
                              "model.keras; expected a .keras file, a tfnode export or a "
                              "run's checkpoints")
        # An export's metrics go along, also when its model.keras is named directly.
        folder = source if os.path.isdir(source) else (
            os.path.dirname(source) if os.path.basename(source) == "model.keras" else None)
        return net, extra_file(folder, "metrics.json") if folder else None
    if model is None:
        raise ConfigError("model_path", f"{weights!r} is a weights file: give {{model}} "
                          "(and the {model_options} and {dataset} it was trained with)")
    net = models.get_model(model, dataset=dataset, **(model_options or {}))
    misfit = f"{weights!r} does not fit {{model}}={model} " \
             f"{dict(model_options or {})} on {dataset}"
    try:
        # Keras loads a file of a deeper model into a shallower one without a word (the
        # extra blocks are ignored), so the variable counts are compared first.
        stored = _stored_variables(weights)
        if stored != len(net.weights):
            raise ConfigError("model_path", f"{misfit} (the file holds {stored} variables, "
                              f"the model has {len(net.weights)})")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "Skipping ...": weights left at their init
            net.load_weights(weights)
    except TfnodeError:
        raise
    except Exception as err:  # noqa: BLE001  a mismatch or a broken file is the user's
        raise ConfigError("model_path", f"{misfit} ({type(err).__name__}: "
                          f"{str(err).splitlines()[0][:160]})") from None
    return net, None


def _stored_variables(weights_file):
    import h5py

    found = []
    with h5py.File(weights_file, "r") as f:
        f.visititems(lambda key, item: found.append(key) if isinstance(item, h5py.Dataset)
                     else None)
    return len(found)


def export_trained(source, *, export_dir, name, version=None, report=None, model=None,
                   dataset="mnist", model_options=None):
    """Exports a trained model to ``<export_dir>/<name>/<version>/`` (``tools.export``).

    Args:
      source: a ``.keras`` file; a tfnode export folder (its ``model.keras``, and its
        ``metrics.json`` goes along); or a run's ``epoch_NNN.weights.h5`` or the
        checkpoints folder holding them (the latest epoch), loaded into
        ``get_model(model, dataset=dataset, **model_options)``.
      export_dir: base folder (``savedmodels``).
      name: the export name.
      version: integer version; default is the next free one.
      report: a ``report.json`` of ``tools.evaluate`` to carry in ``assets.extra/``.
      model, dataset, model_options: the architecture of a weights file.

    Returns:
      The path of the version folder.

    Raises:
      ConfigError: a bad argument, named as the field of ``tools.export`` that gives it
        (``source`` as ``model_path``, ``name`` as ``export_name``).
    """
    if not source:
        raise ConfigError("model_path", "is required: a .keras file, an export folder "
                          "(savedmodels/<name>/<version>) or a run's checkpoints")
    if not name:
        raise ConfigError("export_name", "is required: the folder under {export_dir} and "
                          "the model name TF Serving serves")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError("export_name", f"{name!r}: expected letters, digits, '.', '_' or "
                          "'-' (it is a folder name and TF Serving's model name)")
    if report is not None:
        try:
            with open(report) as f:
                parsed = json.load(f)
        except (OSError, ValueError) as err:
            raise ConfigError("report", f"{report!r}: cannot read it as JSON ({err})") from None
        if not isinstance(parsed, dict) or "models" not in parsed:
            raise ConfigError("report", f"{report!r} is not a tools.evaluate report.json "
                              "(no 'models')")
    check_writable(export_dir)
    net, metrics = _source_model(source, model, dataset, model_options)
    extra = {"model.keras": net.save}
    if metrics:
        extra[METRICS] = lambda p: shutil.copyfile(metrics, p)
    if report:
        extra[os.path.join(ASSETS_EXTRA, "report.json")] = lambda p: shutil.copyfile(report, p)
    return export(net, export_dir, name, version=version, extra_files=extra)
