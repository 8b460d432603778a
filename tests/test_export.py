"""SavedModel exports as TF Serving takes them: the signature, its input checks, the
warmup records, and versions that are never half-written or overwritten."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnode.exports import write as export
from tfnode.errors import TfnodeError

SHAPE = (6, 6, 1)


def tiny_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    h = keras.layers.Conv2D(3, 3, activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(h)), name="tiny")


def images(n, seed=0):
    return np.random.default_rng(seed).random((n,) + SHAPE).astype("float32")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_model()
    path = export.export(model, str(tmp_path_factory.mktemp("sm")), "tiny_mnist")
    return model, path


def test_signature_reproduces_the_keras_logits_with_probabilities_and_classes(exported):
    model, path = exported
    x = images(5)
    out = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(x))
    np.testing.assert_allclose(out["logits"], model(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["probabilities"], tf.nn.softmax(model(x)), rtol=1e-5,
                               atol=1e-6)
    assert out["classes"].dtype == tf.int64
    np.testing.assert_array_equal(out["classes"], np.argmax(model(x), -1))


@pytest.mark.parametrize("bad, message", [
    (np.nan, "NaN or Inf pixels"), (np.inf, "NaN or Inf pixels"),
    (-0.5, "pixels below 0"), (1.5, "pixels above 1")])
def test_signature_refuses_nan_and_out_of_range_pixels(exported, bad, message):
    _, path = exported
    x = images(2)
    x[1, 2, 3, 0] = bad
    serve = tf.saved_model.load(path).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        serve(images=tf.constant(x))


@pytest.mark.parametrize("x", [np.zeros((2, 5, 5, 1), np.float32),  # shape
                               np.zeros((2, 6, 6), np.float32),  # rank
                               np.zeros((2,) + SHAPE, np.float64)])  # dtype
def test_signature_spec_refuses_wrong_shape_rank_and_dtype(exported, x):
    _, path = exported
    serve = tf.saved_model.load(path).signatures["serving_default"]
    with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError)):
        serve(images=tf.constant(x))


def test_warmup_records_parse_as_prediction_logs_that_the_signature_answers(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    _, path = exported
    warmup = os.path.join(path, "assets.extra", "tf_serving_warmup_requests")
    serve = tf.saved_model.load(path).signatures["serving_default"]
    sizes = []
    for record in tf.data.TFRecordDataset(warmup):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert request.model_spec.name == "tiny_mnist"
        assert request.model_spec.signature_name == "serving_default"
        x = tf.make_ndarray(request.inputs["images"])
        out = serve(images=tf.constant(x))
        assert out["logits"].shape == (len(x), 4) and out["classes"].shape == (len(x),)
        sizes.append(len(x))
    assert sizes == list(export.WARMUP_BATCH_SIZES)


def test_saved_model_cli_lists_the_signature(exported):
    _, path = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    proc = subprocess.run([cli, "show", "--dir", path, "--tag_set", "serve",
                           "--signature_def", "serving_default"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in ("images", "logits", "probabilities", "classes"):
        assert f"['{name}']" in proc.stdout


def test_a_failed_export_leaves_no_version_and_an_existing_one_is_never_touched(tmp_path):
    model = tiny_model()
    base = tmp_path / "sm"

    def crash(path):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        export.export(model, str(base), "tiny_mnist", extra_files={"model.keras": crash})
    # Nothing TF Serving would list as a version (all-digit folder names), no temporary.
    assert os.listdir(base / "tiny_mnist") == []
    first = export.export(model, str(base), "tiny_mnist")
    assert first.endswith(os.path.join("tiny_mnist", "1"))
    before = {f: open(os.path.join(d, f), "rb").read()
              for d, _, fs in os.walk(first) for f in fs}
    with pytest.raises(TfnodeError, match="exists already"):
        export.export(model, str(base), "tiny_mnist", version=1)
    with pytest.raises(TfnodeError, match="expected an integer >= 1"):
        export.export(model, str(base), "tiny_mnist", version=0)
    after = {f: open(os.path.join(d, f), "rb").read()
             for d, _, fs in os.walk(first) for f in fs}
    assert after == before
    assert export.export(model, str(base), "tiny_mnist").endswith(os.path.join("tiny_mnist", "2"))


def test_extra_file_reads_assets_extra_and_the_older_layout(tmp_path):
    (tmp_path / "new" / "assets.extra").mkdir(parents=True)
    (tmp_path / "new" / "assets.extra" / "metrics.json").write_text("{}")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.json").write_text("{}")
    assert export.extra_file(str(tmp_path / "new"), "metrics.json").endswith(
        os.path.join("new", "assets.extra", "metrics.json"))
    assert export.extra_file(str(tmp_path / "old"), "metrics.json").endswith(
        os.path.join("old", "metrics.json"))
    assert export.extra_file(str(tmp_path / "old"), "report.json") is None


# tools.export: a trained model (a .keras file, an export folder, a run's weights) to a
# new TF Serving version.

RESNET = ["--model=resnet", "--width=4", "--dataset=mnist"]


def run_export(argv):
    from absl import flags as absl_flags

    from tools import export as app

    absl_flags.FLAGS.unparse_flags()
    absl_flags.FLAGS(["export"] + argv)
    app.main(["export"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small MNIST resnet saved the ways a run leaves it: an export folder with its
    metrics, the epoch checkpoints, and a report."""
    from tfnode import files, models

    root = tmp_path_factory.mktemp("trained")
    keras.utils.set_random_seed(1)
    net = models.get_model("resnet", dataset="mnist", width=4)
    version = root / "sm" / "resnet_mnist" / "1"
    (version / "assets.extra").mkdir(parents=True)
    net.save(version / "model.keras")
    files.write_json(str(version / "assets.extra" / "metrics.json"), {"clean_accuracy": 0.5})
    (root / "checkpoints").mkdir()
    keras.utils.set_random_seed(2)
    models.get_model("resnet", dataset="mnist", width=4).save_weights(
        root / "checkpoints" / "epoch_001.weights.h5")
    net.save_weights(root / "checkpoints" / "epoch_002.weights.h5")
    files.write_json(str(root / "report.json"), {"models": {"resnet": {}}})
    return net, root


@pytest.mark.parametrize("source", ["sm/resnet_mnist/1", "sm/resnet_mnist/1/model.keras",
                                    "checkpoints", "checkpoints/epoch_002.weights.h5"])
def test_export_app_serves_the_trained_logits(trained, tmp_path, source, capsys):
    net, root = trained
    run_export(RESNET + [f"--model_path={root / source}", "--export_name=served",
                         f"--export_dir={tmp_path}", f"--report={root / 'report.json'}"])
    path = tmp_path / "served" / "1"
    assert f"SavedModel {path}" in capsys.readouterr().out
    x = np.random.default_rng(0).random((3, 28, 28, 1)).astype("float32")
    out = tf.saved_model.load(str(path)).signatures["serving_default"](images=tf.constant(x))
    # The checkpoints folder gives its latest epoch (002, the exported net's weights).
    np.testing.assert_allclose(out["logits"], net(x), rtol=1e-5, atol=1e-5)
    extra = sorted(os.listdir(path / "assets.extra"))
    carried = ["metrics.json"] if source.startswith("sm/resnet_mnist/1") else []
    assert extra == sorted(carried + ["report.json", "tf_serving_warmup_requests"])
    # The next export is the next version; the first is untouched.
    run_export(RESNET + [f"--model_path={root / source}", "--export_name=served",
                         f"--export_dir={tmp_path}"])
    assert sorted(os.listdir(tmp_path / "served")) == ["1", "2"]


@pytest.mark.parametrize("argv, expected", [
    ([], "--model_path is required"),
    (["--model_path=MISSING"], "does not exist"),
    (["--model_path=CKPT/epoch_002.weights.h5", "--model=bogus"], "bogus"),
    (["--model_path=CKPT/epoch_002.weights.h5", "--model=resnet", "--width=8"],
     "does not fit --model=resnet"),
    (["--model_path=CKPT", "--model=node", "--width=4"], "holds 50 variables, the model has 24"),
    (["--model_path=AFILE.weights.h5", "--model=resnet"], "does not fit"),
    (["--model_path=EMPTY"], "holds no epoch_NNN.weights.h5"),
    (["--model_path=SM", "--report=AFILE"], "--report"),
    (["--model_path=SM", "--report=CKPT/../sm/resnet_mnist/1/assets.extra/metrics.json"],
     "is not a tools.evaluate report.json"),
    (["--model_path=SM", "--export_name=a/b"], "--export_name 'a/b'"),
    (["--model_path=SM", "--version=1", "--export_dir=ROOT/sm", "--export_name=resnet_mnist"],
     "exists already"),
    (["--model_path=SM", "--version=0"], "expected an integer >= 1"),
])
def test_export_app_bad_input_is_a_one_line_error(trained, tmp_path, capsys, argv, expected):
    _, root = trained
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("not json")
    (tmp_path / "afile.weights.h5").write_text("not hdf5")
    subs = {"MISSING": str(tmp_path / "missing"), "CKPT": str(root / "checkpoints"),
            "EMPTY": str(tmp_path / "empty"), "AFILE": str(tmp_path / "afile"),
            "SM": str(root / "sm" / "resnet_mnist" / "1"), "ROOT": str(root)}
    for key, value in subs.items():
        argv = [a.replace(key, value) for a in argv]
    before = sorted(os.listdir(root / "sm" / "resnet_mnist"))
    with pytest.raises(SystemExit) as exit_info:
        run_export([f"--export_dir={tmp_path / 'out'}", "--export_name=x"] + argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "\n" not in err, err
    assert not (tmp_path / "out").exists() or not any(
        d.isdigit() for _, ds, _ in os.walk(tmp_path / "out") for d in ds)
    assert sorted(os.listdir(root / "sm" / "resnet_mnist")) == before


def test_a_deeper_models_weights_are_refused_not_silently_half_loaded(trained):
    # Keras itself loads the 6-block file into a 3-block resnet without a word.
    _, root = trained
    with pytest.raises(TfnodeError, match="holds 50 variables, the model has 32"):
        export.export_trained(str(root / "checkpoints"), export_dir=str(root / "out"),
                              name="x", model="resnet",
                              model_options={"width": 4, "num_blocks": 3})
    assert not (root / "out").exists() or not os.listdir(root / "out")


def _block(text, start, end):
    """The lines of ``text`` strictly between the line ``start`` and the next ``end``."""
    lines = text.splitlines()
    i = lines.index(start)
    return "\n".join(lines[i + 1:lines.index(end, i + 1)])


def test_serving_docs_rest_body_fed_to_the_signature_gives_an_answer_of_the_documented_form(
        mnist_dir, tmp_path, monkeypatch, capsys):
    import functools
    import json

    from tfnode import data, models

    readme = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs",
                               "serving.md")).read()
    # docs/serving.md's snippet, run as written (on generated MNIST-format files).
    monkeypatch.setattr(data, "load_arrays", functools.partial(data.load_arrays,
                                                               data_dir=mnist_dir))
    exec(_block(readme, "python - <<'EOF' > body.json", "EOF"), {})
    body = json.loads(capsys.readouterr().out)
    assert body["signature_name"] == "serving_default" and len(body["instances"]) == 1
    # TF Serving's row format: the instances' "images" stacked into the input tensor.
    x = np.array([inst["images"] for inst in body["instances"]], np.float32)
    assert x.shape == (1, 28, 28, 1) and 0 <= x.min() and x.max() <= 1
    keras.utils.set_random_seed(0)
    path = export.export(models.get_model("resnet", dataset="mnist", width=4),
                         str(tmp_path / "sm"), "node_mnist")
    out = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(x))
    served = {"predictions": [{k: v.numpy()[i].tolist() for k, v in out.items()}
                              for i in range(len(x))]}
    # The documented answer: the same keys and shapes, and self-consistent.
    answer = json.loads(_block(readme, "```json", "```"))
    for got, doc in zip(served["predictions"], answer["predictions"]):
        assert set(got) == set(doc) == {"classes", "logits", "probabilities"}
        assert len(got["logits"]) == len(doc["logits"]) == len(doc["probabilities"]) == 10
        assert isinstance(got["classes"], int) and got["classes"] == np.argmax(got["logits"])
    (doc,) = answer["predictions"]
    assert doc["classes"] == np.argmax(doc["logits"])
    np.testing.assert_allclose(doc["probabilities"], tf.nn.softmax(doc["logits"]), atol=2e-3)


def test_docs_grpc_request_is_one_the_signature_answers(mnist_dir, tmp_path, monkeypatch):
    import functools

    from tfnode import data, models

    docs = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs",
                             "serving.md")).read()
    code = _block(docs, "```python", "```")
    # Up to the server call: the stub needs a running TF Serving.
    code = code[:code.index("stub = ")]
    monkeypatch.setattr(data, "load_arrays", functools.partial(data.load_arrays,
                                                               data_dir=mnist_dir))
    scope = {}
    exec(code, scope)
    request = scope["request"]
    assert request.model_spec.signature_name == "serving_default"
    x = tf.make_ndarray(request.inputs["images"])
    assert x.dtype == np.float32 and x.shape == (1, 28, 28, 1)
    keras.utils.set_random_seed(0)
    path = export.export(models.get_model("resnet", dataset="mnist", width=4),
                         str(tmp_path / "sm"), request.model_spec.name)
    out = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(x))
    assert out["classes"].shape == (1,)


def test_saved_model_cli_runs_the_signature_on_an_npy_file(exported, tmp_path):
    model, path = exported
    x = images(2, seed=3)
    np.save(tmp_path / "x.npy", x)
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    proc = subprocess.run([cli, "run", "--dir", path, "--tag_set", "serve", "--signature_def",
                           "serving_default", "--inputs", f"images={tmp_path / 'x.npy'}",
                           "--outdir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "classes.npy"),
                                  np.argmax(model(x), -1))
