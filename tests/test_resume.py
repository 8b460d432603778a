"""Training survives kill -9: real training processes are killed at several points (mid
epoch, inside a checkpoint write, inside the export), run again, and must end with the
weights of an uninterrupted run; a finished run is not trained again; a NaN loss stops
training with the last good state kept. Each run is a child process (conftest.CHILD_PRELUDE)
on generated MNIST-format files."""

import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.conftest import h5_arrays
from tfnode.training import TrainConfig, fit, resume

from tests.conftest import train_run
from tfnode.errors import TfnodeError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The child: tfnode.training.train, with one fault injected where the test says ("fault"), then
# SIGKILL: the process gets no chance to clean up, as with kill -9 or a lost machine.
CHILD = """
import signal
import keras
from tfnode import training
from tfnode.training import resume
args = json.loads(sys.argv[1])
fault = args.pop("fault", None)

def die():
    os.kill(os.getpid(), signal.SIGKILL)

class KillAtStep(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == fault["step"]:
            die()

callbacks = []
if fault and fault["at"] == "step":
    callbacks.append(KillAtStep())
if fault and fault["at"] == "checkpoint_write":
    real_save, calls = resume.save, [0]
    def save(trainer, backup_dir, meta):
        calls[0] += 1
        if calls[0] == fault["call"]:
            write = trainer.save_weights
            def write_then_die(path, *a, **k):
                write(path, *a, **k)  # the weights are on disk, the state is not complete
                die()
            trainer.save_weights = write_then_die
        return real_save(trainer, backup_dir, meta)
    resume.save = save
if fault and fault["at"] == "export":
    real_keras_save = keras.Model.save
    def save_then_die(self, *a, **k):
        real_keras_save(self, *a, **k)  # model.keras is written, the SavedModel not renamed
        die()
    keras.Model.save = save_then_die
lines = []
metrics = training.train(training.TrainConfig(**args), verbose=0, log=lines.append,
                          callbacks=callbacks)
print(json.dumps({"export": metrics["export_path"], "lines": lines,
                  "accuracy": metrics["clean_accuracy"], "history": metrics["train_history"],
                  "loss": metrics["train_history"]["loss"], "note": metrics["resume_note"]}))
"""

# 64 generated training images, batch 8: 8 steps per epoch, 16 in all, a state every 3.
# With TF's op determinism: the tests compare runs of different processes exactly (the
# same seed, the same bits), which nothing but op determinism promises.
KWARGS = {"model": "resnet", "model_options": {"width": 4, "num_blocks": 1}, "epochs": 2,
          "batch_size": 8, "eval_batch_size": 16, "checkpoint_steps": 3, "seed": 3,
          "deterministic": True}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Generated data for the children, and one uninterrupted run on it."""
    from conftest import child_mnist

    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    data_dir, env = child_mnist(tmp_path)
    common = {**KWARGS, "data_dir": data_dir}
    reference = _ok(_child({**common, "model_dir": str(tmp_path / "ref"),
                            "export_dir": str(tmp_path / "ref_sm")}, env))
    return common, env, reference


def _child(kwargs, env):
    from conftest import CHILD_PRELUDE

    return subprocess.run([sys.executable, "-c", CHILD_PRELUDE + CHILD, json.dumps(kwargs)],
                          cwd=REPO, env=env, text=True, capture_output=True, timeout=600)


def _ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])




def _model_weights(export_path):
    return keras.models.load_model(os.path.join(export_path, "model.keras")).get_weights()


@pytest.mark.parametrize("fault,resumed_from", [
    # Mid epoch 1: the state of step 3 is the last; steps 4 and 5 are lost and redone.
    ({"at": "step", "step": 5}, "step 3: 0 epoch(s) done and 3 step(s) of the next"),
    # Inside the second state's write (step 6): that state never becomes complete.
    ({"at": "checkpoint_write", "call": 2}, "step 3: 0 epoch(s) done and 3 step(s)"),
    # Mid epoch 2, after the epoch-1 state (step 8) and the step-9 one. Behind --run-slow
    # (the suite's time on the slower machines): the same kind of fault as step 5's.
    pytest.param({"at": "step", "step": 11},
                 "step 9: 1 epoch(s) done and 1 step(s) of the next", marks=pytest.mark.slow),
    # Inside the export, after all training: the last state (step 16) is still there.
    ({"at": "export"}, "step 16: 2 epoch(s) done"),
])
def test_a_killed_run_run_again_ends_as_an_uninterrupted_one(uninterrupted, tmp_path, fault,
                                                             resumed_from):
    common, env, reference = uninterrupted
    run = {**common, "model_dir": str(tmp_path / "run"), "export_dir": str(tmp_path / "sm")}
    killed = _child({**run, "fault": fault}, env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    sm = tmp_path / "sm" / "resnet_mnist"
    # Nothing half-written is visible: no version folder, only a dead writer's temporary.
    assert not sm.exists() or not [v for v in os.listdir(sm) if v.isdigit()]
    again = _ok(_child(run, env))
    assert any("resuming from" in line and resumed_from in line for line in again["lines"]), \
        again["lines"]
    assert again["export"] == str(sm / "1")
    assert os.listdir(sm) == ["1"]  # the killed export's temporary is cleaned up
    # Same batches, same optimizer state and learning-rate position: the same weights.
    for a, b in zip(_model_weights(reference["export"]), _model_weights(again["export"])):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert again["accuracy"] == reference["accuracy"]
    # The epoch logs (loss and accuracy) too, the interrupted epoch's included.
    assert again["note"] is None and again["history"].keys() == reference["history"].keys()
    for key, values in reference["history"].items():
        np.testing.assert_allclose(again["history"][key], values, rtol=1e-6, err_msg=key)
    assert not (tmp_path / "run" / "backup").exists()
    # Run a third time: it is finished, nothing is trained or exported.
    third = _ok(_child(run, env))
    assert third["export"] == again["export"] and os.listdir(sm) == ["1"]
    assert any("nothing to do" in line for line in third["lines"]), third["lines"]


def test_the_same_seed_and_flags_give_the_same_run_in_another_process(uninterrupted, tmp_path):
    common, env, reference = uninterrupted
    other = _ok(_child({**common, "model_dir": str(tmp_path / "other"),
                        "export_dir": str(tmp_path / "sm")}, env))
    # Bit for bit on the same machine, under TF's op determinism (KWARGS); without it
    # these CPU ops happened to reduce in a fixed order (docs/training.md,
    # "Reproducibility"), which TF does not promise.
    for a, b in zip(_model_weights(reference["export"]), _model_weights(other["export"])):
        np.testing.assert_array_equal(a, b)
    assert other["loss"] == reference["loss"] and other["accuracy"] == reference["accuracy"]
    with open(os.path.join(other["export"], "assets.extra", "metrics.json")) as f:
        assert json.load(f)["op_determinism"] is True
    seeded = _ok(_child({**common, "seed": 4, "model_dir": str(tmp_path / "seeded"),
                         "export_dir": str(tmp_path / "sm4")}, env))
    assert seeded["loss"] != reference["loss"]  # the seed matters


class _Stop(keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            raise KeyboardInterrupt


class _Seen(keras.callbacks.Callback):
    # A mid-epoch resume calls fit twice (the rest of the epoch, then the others).
    iterations = None

    def on_train_begin(self, logs=None):
        if self.iterations is not None:
            return
        self.weights = [w.numpy().copy() for w in self.model.weights]
        self.iterations = int(self.model.optimizer.iterations.numpy())
        self.optimizer = [v.numpy().copy() for v in self.model.optimizer.variables]


def test_resume_restores_the_weights_optimizer_and_step_of_the_last_state(mnist_dir, tmp_path):
    common = dict(model="resnet", model_options={"width": 4, "num_blocks": 1}, epochs=2,
                  batch_size=8, checkpoint_steps=3, data_dir=mnist_dir, verbose=0,
                  model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "sm"),
                  log=lambda *_: None)
    with pytest.raises(KeyboardInterrupt):
        train_run(**common, callbacks=[_Stop(7)])
    (step, folder), _ = resume.states(str(tmp_path / "run" / "backup"))
    assert step == 6 and folder.endswith("state-000000006")
    saved = h5_arrays(os.path.join(folder, "weights.weights.h5"))
    seen = _Seen()
    metrics = train_run(**common, callbacks=[seen])
    assert seen.iterations == 6  # the schedule's position and Adam's step continue
    state_model = [v for k, v in sorted(saved.items()) if k.startswith("layers/")]
    assert sorted(np.concatenate([w.ravel() for w in state_model])) == pytest.approx(
        sorted(np.concatenate([w.ravel() for w in seen.weights])))
    state_opt = [v for k, v in saved.items() if k.startswith("optimizer/")]
    assert sorted(np.concatenate([np.ravel(v) for v in state_opt])) == pytest.approx(
        sorted(np.concatenate([np.ravel(v) for v in seen.optimizer])))
    # The history covers both epochs, the one before the interruption included.
    assert len(metrics["train_history"]["loss"]) == 2 and metrics["resumed"].startswith("step 6")
    with open(os.path.join(metrics["export_path"], "assets.extra", "metrics.json")) as f:
        assert json.load(f)["resumed"] == metrics["resumed"]


def test_a_finished_run_is_not_trained_again_unless_overwrite(mnist_dir, tmp_path):
    common = dict(model="resnet", model_options={"width": 4, "num_blocks": 1}, epochs=1,
                  batch_size=8, steps_per_epoch=2, data_dir=mnist_dir, verbose=0,
                  model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "sm"))
    first = train_run(**common, log=lambda *_: None)
    lines = []
    again = train_run(**common, log=lines.append)
    assert again["export_path"] == os.path.abspath(first["export_path"])
    assert again["clean_accuracy"] == first["clean_accuracy"]
    assert len(lines) == 1 and "nothing to do" in lines[0] and "--overwrite" in lines[0]
    fresh = train_run(**common, overwrite=True, log=lambda *_: None)
    assert fresh["export_path"].endswith(os.sep + "2") and not fresh["resumed"]
    # Other settings, or another export target: a new run over the finished one's folder.
    lines = []
    other = train_run(**{**common, "epochs": 2}, log=lines.append)
    assert "holds a finished run with other settings (epochs;" in lines[0]
    assert other["export_path"].endswith(os.sep + "3")
    moved = train_run(**{**common, "epochs": 2, "export_name": "elsewhere"},
                            log=lambda *_: None)
    assert moved["export_path"].endswith(os.path.join("elsewhere", "1"))


def _tiny(mnist_dir, tmp_path, **overrides):
    """A 2-epoch run of a tiny ResNet, 8 steps per epoch, a state every 2 steps."""
    return {**dict(model="resnet", model_options={"width": 4, "num_blocks": 1}, epochs=2,
                   batch_size=8, checkpoint_steps=2, data_dir=mnist_dir, verbose=0,
                   model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "sm"),
                   log=lambda *_: None), **overrides}


class _Poison(keras.callbacks.Callback):
    """Multiplies ``variables(model)`` by NaN at the end of global step ``step``."""

    def __init__(self, step, variables):
        super().__init__()
        self.step, self.variables = step, variables

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            for v in self.variables(self.model):
                v.assign(v * np.nan)


def test_a_defended_run_resumed_mid_epoch_ends_as_an_uninterrupted_defended_run(
        mnist_dir, tmp_path):
    """PGD-AT stopped at step 7 resumes from the state of step 6 and must end with the
    weights and epoch logs of the same run never stopped (not merely with its own
    checkpoints): the Adam moments, the step (the learning rate's position) and the
    running metrics restored, the batches trained on skipped, and the random starts
    continuing from the seed state they had reached."""
    defended = dict(defense="pgd_at", defense_options={"num_steps": 2, "eps": 0.1})
    reference = train_run(**_tiny(mnist_dir, tmp_path, **defended,
                                        model_dir=str(tmp_path / "ref"),
                                        export_dir=str(tmp_path / "ref_sm")))
    common = _tiny(mnist_dir, tmp_path, **defended)
    with pytest.raises(KeyboardInterrupt):
        train_run(**common, callbacks=[_Stop(7)])
    resumed = train_run(**common)
    assert resumed["resumed"] == "step 6: 0 epoch(s) done and 6 step(s) of the next"
    assert resumed["defense"] == reference["defense"] == "pgd_at"
    for a, b in zip(_model_weights(reference["export_path"]),
                    _model_weights(resumed["export_path"])):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
    for key, values in reference["train_history"].items():
        np.testing.assert_allclose(resumed["train_history"][key], values, rtol=1e-6,
                                   err_msg=key)


def test_the_resume_state_holds_the_defenses_seed_state(tmp_path):
    """save_weights leaves the seed generator out; the state holds it (before, a resumed
    defended run restarted its random starts from the seed)."""
    from tfnode import models
    from tfnode.training import defenses

    def trainer():
        net = models.get_model("resnet", dataset="mnist", width=4, num_blocks=1)
        wrapped = defenses.DefendedModel(net, "pgd_at", defenses.get("pgd_at").options(),
                                         seed=3)
        fit.compile_for_training(wrapped, TrainConfig(learning_rate=1e-3,
                                                      lr_schedule="constant"), 10)
        wrapped.optimizer.build(wrapped.trainable_variables)
        return wrapped

    stopped = trainer()
    for _ in range(3):  # what 3 training steps' random starts draw
        keras.random.uniform((2,), seed=stopped.seed_generator)
    drawn = stopped.seed_generator.state.numpy()
    resume.save(stopped, str(tmp_path / "backup"), {"step": 0})
    again = trainer()
    assert resume.restore(again, str(tmp_path / "backup"), log=lambda *_: None) is not None
    np.testing.assert_array_equal(again.seed_generator.state.numpy(), drawn)


def test_a_nan_loss_stops_training_and_names_the_last_good_state(mnist_dir, tmp_path):
    common = _tiny(mnist_dir, tmp_path)
    # After step 5 every weight is NaN: step 6's loss is NaN.
    poison = _Poison(5, lambda model: model.trainable_weights)
    with pytest.raises(TfnodeError, match=r"loss became nan at step 6 \(epoch 1\).*"
                                          r"state-000000004 \(step 4\), is kept; a rerun "
                                          r"resumes from it"):
        train_run(**common, callbacks=[poison])
    (step, folder), *_ = resume.states(str(tmp_path / "run" / "backup"))
    assert step == 4
    assert all(np.isfinite(v).all() for v in
               h5_arrays(os.path.join(folder, "weights.weights.h5")).values())
    assert not (tmp_path / "run" / "checkpoints").exists()  # no epoch ended
    assert not (tmp_path / "sm").exists() or not os.listdir(tmp_path / "sm")


def test_training_that_blows_up_stops_with_the_solver_failure_and_the_kept_state(
        mnist_dir, tmp_path):
    # Two trial steps cannot reach t1 at these tolerances: the first training step fails.
    with pytest.raises(TfnodeError, match=r"^ODE block '\w+': dopri5 did not reach t1=1 "
                                          r"\(rtol=1e-06, atol=1e-06, max_num_steps=2\); "
                                          r"trial steps taken: 2.*Training stopped; no state "
                                          r"was saved before it") as info:
        train_run(model="node", model_options={"width": 4, "rtol": 1e-6, "atol": 1e-6,
                                                 "max_num_steps": 2},
                    epochs=1, batch_size=8, steps_per_epoch=2, data_dir=mnist_dir, verbose=0,
                    model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "sm"),
                    log=lambda *_: None)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "sm").exists() or not os.listdir(tmp_path / "sm")


def test_a_finite_loss_with_non_finite_weights_is_not_saved(mnist_dir, tmp_path):
    common = _tiny(mnist_dir, tmp_path)
    # After step 3 Adam's moments are NaN: step 4's loss (computed before its update) is
    # finite, its update makes every weight NaN, and step 4 is a save step.
    poison = _Poison(3, lambda model: [v for v in model.optimizer.variables
                                       if "float" in str(v.dtype) and len(v.shape)])
    with pytest.raises(TfnodeError, match=r"^training left a non-finite value in \S+ at step 4 "
                                          r"\(epoch 1\).*state-000000002 \(step 2\), is kept"):
        train_run(**common, callbacks=[poison])
    assert [step for step, _ in resume.states(str(tmp_path / "run" / "backup"))] == [2]


def test_a_resume_state_of_an_older_tfnode_is_refused(mnist_dir, tmp_path):
    backup = tmp_path / "run" / "backup"
    backup.mkdir(parents=True)
    (backup / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')
    with pytest.raises(TfnodeError, match=r"holds the resume state of an older tfnode "
                                          r"\(Keras' BackupAndRestore\).*pass overwrite to "
                                          r"start over") as info:
        train_run(model="resnet", model_options={"width": 4, "num_blocks": 1}, epochs=1,
                        batch_size=8, steps_per_epoch=1, data_dir=mnist_dir, verbose=0,
                        model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "sm"),
                        log=lambda *_: None)
    assert "pass --overwrite to start over" in info.value.flag_message()
