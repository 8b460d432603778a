"""Loading a model file never runs code from it: Lambda layers and unknown classes are
refused with a one-line error naming the layer, before Keras deserializes anything; and
`loading.probe` sees a model whose logits change from one call to the next."""

import os
import zipfile

import keras
import numpy as np
import pytest

from tfnode import models
from tfnode.exports import read as loading
from tfnode.errors import TfnodeError


def _save(model, tmp_path, name):
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    return path


def test_a_lambda_layer_is_refused_by_name(tmp_path):
    ran = []

    def double(x):
        ran.append(1)  # would mark that code from the file ran
        return x * 2

    model = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(double, name="doubler"),
                              keras.layers.Dense(2)])
    path = _save(model, tmp_path, "lambda")
    ran.clear()
    with pytest.raises(TfnodeError, match=r"^model_path .*layer 'doubler' \(Lambda\) holds "
                                          r"Python code") as err:
        loading.load_model(path)
    assert "\n" not in str(err.value) and not ran
    assert err.value.flag_message().startswith("--model_path ")


def test_an_unknown_class_is_refused_by_name(tmp_path):
    @keras.saving.register_keras_serializable(package="elsewhere")
    class Shifty(keras.layers.Layer):
        def call(self, x):
            return x + 1.0

    model = keras.Sequential([keras.Input((3,)), Shifty(name="shifty_layer"),
                              keras.layers.Dense(2)])
    path = _save(model, tmp_path, "unknown")
    # A later process, where nothing registered the class.
    del keras.saving.get_custom_objects()["elsewhere>Shifty"]
    with pytest.raises(TfnodeError, match=r"layer 'shifty_layer' \(Shifty\) is of a class "
                                          r"neither Keras nor tfnode knows \(elsewhere>Shifty\)"):
        loading.load_model(path, field="source_model_path")


def test_tfnode_models_and_non_archives(tmp_path):
    path = _save(models.get_model("resnet", dataset="mnist", width=4, num_blocks=1), tmp_path,
                 "resnet")
    loading.check_keras_file(path)  # Keras' and tfnode's classes only
    inputs = keras.Input((6,))
    sliced = keras.Model(inputs, keras.layers.Dense(2)(inputs[:, :3]))
    sliced_path = _save(sliced, tmp_path, "sliced")
    with zipfile.ZipFile(sliced_path) as archive:
        assert b"__slice__" in archive.read("config.json")
    loading.check_keras_file(sliced_path)  # Keras' value markers are not classes
    model, info = loading.load_model(path)
    assert info["format"] == "keras" and model.name == "resnet"
    fake = tmp_path / "fake.keras"
    fake.write_text("not a zip")
    with pytest.raises(TfnodeError, match=r"^model_path .*fake.keras' is not a Keras model "
                                          r"archive \(BadZipFile") as info:
        loading.load_model(str(fake))
    assert info.value.flag_message().startswith("--model_path ")
    assert os.path.exists(fake)


def test_the_evaluate_app_refuses_a_lambda_model_in_one_line(tmp_path, capsys):
    from tests.test_evaluate import run_app

    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Lambda(lambda x: x, name="identity"),
                              keras.layers.Dense(10)])
    path = _save(model, tmp_path, "lambda")
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as exit_info:
        run_app([f"--model_path={path}", f"--output_dir={out}", "--num_examples=8"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --model_path") and "'identity' (Lambda)" in err
    assert "\n" not in err and not out.exists()


class _Noisy(keras.layers.Layer):
    """Adds fresh standard normal noise to its input at every call, inference included
    (a randomized defense): its state advances with each call, traced or not."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed = keras.random.SeedGenerator(0)

    def call(self, x):
        return x + keras.random.normal(keras.ops.shape(x), stddev=1.0, seed=self.seed)


def _linear(noisy):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    return keras.Sequential(layers + ([_Noisy()] if noisy else []))


def test_probe_flags_a_model_randomized_at_inference_and_not_a_deterministic_one():
    from tfnode.evaluation import checks

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (8, 4, 4, 1)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    # Unit noise on 80 logits: two calls differ by far more than float noise.
    noisy = loading.probe(_linear(noisy=True), x, y, batch_size=8)
    assert noisy["logits_max_diff_repeat"] > 100 * checks.REPEAT_LIMIT
    (finding,) = checks.deterministic({"probes": noisy})
    assert not finding["passed"] and finding["flag"] == "masking"
    plain = loading.probe(_linear(noisy=False), x, y, batch_size=8)
    assert plain["logits_max_diff_repeat"] <= checks.REPEAT_LIMIT
    assert checks.deterministic({"probes": plain})[0]["passed"]
