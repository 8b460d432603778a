"""Training under tf.distribute: a mirrored run over two logical CPUs computes what one
device computes (with per-sample ODE steps). Each runs in its own process: logical
devices must be set before TensorFlow starts."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import h5_arrays
from tfnode.training import strategies
from tfnode.errors import TfnodeError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Then tfnode.training.train, on generated MNIST-format files (conftest.CHILD_PRELUDE).
TRAIN = """
from tfnode import training
metrics = training.train(training.TrainConfig(**json.loads(sys.argv[1])), verbose=0,
                         log=lambda m: None)
print(json.dumps({"replicas": metrics["replicas"], "export": metrics["export_path"],
                  "accuracy": metrics["clean_accuracy"]}))
"""


@pytest.fixture
def generated(tmp_path):
    from conftest import child_mnist

    return child_mnist(tmp_path)


def _kwargs(data_dir, tmp_path, name, **overrides):
    return {"model": "node", "model_options": {"width": 4, "per_sample_steps": True},
            "data_dir": data_dir, "epochs": 1, "steps_per_epoch": 2, "batch_size": 8,
            "eval_batch_size": 16, "learning_rate": 0.1, "optimizer": "sgd",
            "model_dir": str(tmp_path / name), "export_dir": str(tmp_path / "sm"),
            "export_name": name, **overrides}


def _run(kwargs, env, **popen):
    from conftest import CHILD_PRELUDE

    return subprocess.Popen([sys.executable, "-c", CHILD_PRELUDE + TRAIN, json.dumps(kwargs)],
                            cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **popen)


def _finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])




def _max_difference(a, b):
    assert a.keys() == b.keys() and a
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def test_mirrored_over_two_logical_cpus_matches_one_device(generated, tmp_path):
    data_dir, env = generated
    one = _finish(_run(_kwargs(data_dir, tmp_path, "one"), env))
    two = _finish(_run(_kwargs(data_dir, tmp_path, "two", strategy="mirrored"),
                       {**env, "TEST_LOGICAL_CPUS": "2"}))
    init = _finish(_run(_kwargs(data_dir, tmp_path, "init", learning_rate=1e-30), env))
    assert one["replicas"] == init["replicas"] == 1 and two["replicas"] == 2
    weights = {name: h5_arrays(tmp_path / name / "checkpoints" / "epoch_001.weights.h5")
               for name in ("one", "two", "init")}
    # Two SGD steps of tools.train's ODE-Net (its while loop, the compiled dopri5 step,
    # GroupNorm, the NFE metric, the shuffled input), each replica on half of every batch.
    assert _max_difference(weights["one"], weights["init"]) > 1e-3  # it trained
    diff = _max_difference(weights["one"], weights["two"])
    assert diff < 1e-5, diff


def test_a_defense_under_two_replicas_trains_what_one_device_trains(generated, tmp_path):
    """PGD-AT (no random start: each replica's noise would be its own draw) over two
    logical CPUs: each replica's loss is its half's mean, and the optimizer sums the
    replicas' gradients, so unscaled the step would be twice one device's."""
    data_dir, env = generated
    defended = dict(defense="pgd_at", defense_options={
        "rand_init": False, "num_steps": 2, "eps": 0.1, "step_size": 0.05})
    one = _finish(_run(_kwargs(data_dir, tmp_path, "one", **defended), env))
    two = _finish(_run(_kwargs(data_dir, tmp_path, "two", strategy="mirrored", **defended),
                       {**env, "TEST_LOGICAL_CPUS": "2"}))
    init = _finish(_run(_kwargs(data_dir, tmp_path, "init", learning_rate=1e-30, **defended),
                        env))
    assert one["replicas"] == 1 and two["replicas"] == 2
    weights = {name: h5_arrays(tmp_path / name / "checkpoints" / "epoch_001.weights.h5")
               for name in ("one", "two", "init")}
    assert _max_difference(weights["one"], weights["init"]) > 1e-3  # it trained
    diff = _max_difference(weights["one"], weights["two"])
    assert diff < 1e-5, diff


# Slow (--run-slow): two epochs under the mirrored strategy; its exactness against one
# device is the test above.
@pytest.mark.slow
def test_train_runs_two_epochs_mirrored_and_refuses_a_batch_the_replicas_cannot_split(
        generated, tmp_path):
    data_dir, env = generated
    env = {**env, "TEST_LOGICAL_CPUS": "2"}
    kwargs = _kwargs(data_dir, tmp_path, "two", strategy="mirrored", epochs=2)
    first = _finish(_run(kwargs, env))
    assert first["replicas"] == 2 and first["export"].endswith(os.path.join("two", "1"))
    assert sorted(os.listdir(tmp_path / "two" / "checkpoints")) == [
        "epoch_001.weights.h5", "epoch_002.weights.h5"]
    # A batch that does not split over the replicas is a one-line error.
    proc = _run({**kwargs, "batch_size": 7, "model_dir": str(tmp_path / "odd")}, env)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "does not split over the 2 replicas" in err


def test_multi_worker_is_refused_with_the_keras_issue(generated, tmp_path):
    # Keras 3's fit cannot run under MultiWorkerMirroredStrategy (its log reduction
    # fails; keras-team/keras#20585): a one-line error before any work, not a crash.
    from tests.conftest import train_run

    data_dir, _ = generated
    with pytest.raises(TfnodeError, match="keras-team/keras#20585"):
        train_run(**_kwargs(data_dir, tmp_path, "mw", strategy="multi_worker"))
    assert not (tmp_path / "mw").exists() and not (tmp_path / "sm").exists()


def test_strategy_names_and_bad_input():
    assert strategies.available() == ["default", "mirrored", "multi_worker", "tpu"]
    with pytest.raises(TfnodeError, match="unknown strategy 'gpu'"):
        strategies.check("gpu")
    os.environ.pop("TF_CONFIG", None)
    with pytest.raises(TfnodeError, match="needs TF_CONFIG"):
        strategies.get("multi_worker")
