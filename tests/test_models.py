"""Model zoo: registry, shapes, published sizes, save/load round trips."""

import keras
import numpy as np
import pytest

from tfnode import models
from tfnode.errors import TfnodeError

SMALL = {"node": dict(width=8), "resnet": dict(width=8, num_blocks=2),
         "resnet56": dict(depth=8), "resnet50": {}, "preact_resnet18": {}}


def test_registry_has_the_papers_models():
    assert {"node", "resnet", "resnet56", "resnet50", "preact_resnet18"} <= set(
        models.available())


@pytest.mark.parametrize("name", ["node", "resnet", "resnet56"])
@pytest.mark.parametrize("dataset,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_models_map_images_to_logits(name, dataset, shape):
    model = models.get_model(name, dataset=dataset, **SMALL[name])
    assert model.input_shape == (None,) + shape
    x = np.random.default_rng(0).random((2,) + shape).astype("float32")
    assert model(x).shape == (2, 10)


@pytest.mark.parametrize("name,params", [
    ("resnet56", 0.85e6), ("resnet50", 23.5e6), ("preact_resnet18", 11.17e6), ("node", 0.21e6)])
def test_published_sizes(name, params):
    model = models.get_model(name, dataset="cifar10")
    assert abs(model.count_params() - params) / params < 0.02, model.count_params()


@pytest.mark.parametrize("name", ["node", "resnet", "resnet56"])
def test_save_load_gives_identical_logits(name, tmp_path):
    model = models.get_model(name, dataset="mnist", **SMALL[name])
    x = np.random.default_rng(1).random((3, 28, 28, 1)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)


def test_step_size_scales_the_residual_branch():
    x = np.random.default_rng(2).random((2, 28, 28, 1)).astype("float32")
    full = models.get_model("resnet", dataset="mnist", width=8, num_blocks=1, step_size=1.0)
    tiny = models.get_model("resnet", dataset="mnist", width=8, num_blocks=1, step_size=1e-10)
    skip = models.get_model("resnet", dataset="mnist", width=8, num_blocks=0)
    tiny.set_weights(full.get_weights())
    # With h -> 0 the block is the identity: same logits as no block at all.
    skip.set_weights([w for layer in full.layers if not layer.name.startswith("block")
                      for w in layer.get_weights()])
    np.testing.assert_allclose(tiny(x), skip(x), atol=1e-5)
    assert not np.allclose(full(x), skip(x), atol=1e-3)


def test_unknown_model_and_option_are_one_line_errors():
    with pytest.raises(TfnodeError, match="unknown model 'resnet57'"):
        models.get_model("resnet57", dataset="mnist")
    with pytest.raises(TfnodeError, match="has no option 'rtol'"):
        models.get_model("resnet56", dataset="mnist", rtol=1e-3)
    with pytest.raises(TfnodeError, match="unknown dataset"):
        models.get_model("node", dataset="imagenet")


def test_with_solver_options_keeps_weights_and_changes_the_solver():
    keras.utils.set_random_seed(0)
    net = models.get_model("node", dataset="mnist", width=4)
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    tight = models.with_solver_options(net, rtol=1e-6, atol=1e-6)
    per_sample = models.with_solver_options(net, per_sample_steps=True)
    base = net(x).numpy()
    assert tight.get_layer("ode_block").rtol == 1e-6
    assert net.get_layer("ode_block").rtol == 1e-3  # the original is untouched
    np.testing.assert_allclose(tight(x), base, atol=5e-3)  # same weights, other tolerance
    np.testing.assert_allclose(per_sample(x[:1]), per_sample(x)[:1], atol=1e-5)
    assert tight.get_layer("ode_block").nfe > net.get_layer("ode_block").nfe
    assert models.with_solver_options(net) is net
    with pytest.raises(TfnodeError):
        models.with_solver_options(net, width=8)
