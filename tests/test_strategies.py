"""Training under tf.distribute: a mirrored run over two logical CPUs computes what one
device computes (with per-sample ODE steps). Each runs in its own process: logical
devices must be set before TensorFlow starts."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import h5_arrays
from tfnode import cluster
from tfnode.training import strategies
from tfnode.errors import TfnodeError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Then tfnode.training.train, on generated MNIST-format files (conftest.CHILD_PRELUDE).
# TEST_KILL_AT_STEP: the process kills itself (SIGKILL) after that training step;
# TEST_TOOL: the run goes through tools.train's flags (argv[1]: a JSON list of flags).
TRAIN = """
import signal
import keras
from tfnode import training

class Kill(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == int(os.environ["TEST_KILL_AT_STEP"]):
            os.kill(os.getpid(), signal.SIGKILL)

def reported(train):
    def run(*args, **kwargs):
        metrics = train(*args, **kwargs)
        print(json.dumps({"replicas": metrics["replicas"], "export": metrics["export_path"],
                          "accuracy": metrics["clean_accuracy"],
                          "fingerprint": metrics["fingerprint"]}))
        return metrics
    return run

if os.environ.get("TEST_TOOL"):  # the user's path: tools.train's flags and main
    from tools import _run, train as tool
    training.train = reported(training.train)
    sys.argv = ["train", *json.loads(sys.argv[1])]
    _run.app_run(tool.main)
reported(training.train)(training.TrainConfig(**json.loads(sys.argv[1])), verbose=0,
                         log=lambda m: None,
                         callbacks=[Kill()] if os.environ.get("TEST_KILL_AT_STEP") else [])
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


def _flags(kwargs):
    """``tools.train``'s flags for `TrainConfig` fields."""
    args = []
    for key, value in kwargs.items():
        if key == "model_options":
            args += [f"--model_option={k}={_text(v)}" for k, v in value.items()]
        elif key == "defense_options":
            args += [f"--defense_option={kwargs['defense']}.{k}={_text(v)}"
                     for k, v in value.items()]
        else:
            args.append(f"--{key}={_text(value)}")
    return args


def _text(value):
    return str(value).lower() if isinstance(value, bool) else str(value)


def _run(kwargs, env, **popen):
    from conftest import CHILD_PRELUDE

    args = _flags(kwargs) if env.get("TEST_TOOL") else kwargs
    return subprocess.Popen([sys.executable, "-c", CHILD_PRELUDE + TRAIN, json.dumps(args)],
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
    steps = dict(epochs=2, steps_per_epoch=1)  # a checkpoint after each of the 2 steps
    one = _finish(_run(_kwargs(data_dir, tmp_path, "one", **steps), env))
    two = _finish(_run(_kwargs(data_dir, tmp_path, "two", strategy="mirrored", **steps),
                       {**env, "TEST_LOGICAL_CPUS": "2"}))
    assert one["replicas"] == 1 and two["replicas"] == 2
    weights = _epochs(tmp_path, ("one", "two"))
    # Two SGD steps of tools.train's ODE-Net (its while loop, the compiled dopri5 step,
    # GroupNorm, the NFE metric, the shuffled input), each replica on half of every batch.
    assert _max_difference(weights["one", 1], weights["one", 2]) > 1e-3  # it trained
    diff = _max_difference(weights["one", 2], weights["two", 2])
    assert diff < 1e-5, diff


def _epochs(tmp_path, names):
    """``{(run, epoch): weights}`` of each run's two epoch checkpoints."""
    return {(name, e): h5_arrays(tmp_path / name / "checkpoints" / f"epoch_00{e}.weights.h5")
            for name in names for e in (1, 2)}


# Slow (--run-slow): test_a_defense_under_two_workers_trains_what_one_process_trains checks
# the same scaling of a defense's loss over two replicas (against one process), cheaper.
@pytest.mark.slow
def test_a_defense_under_two_replicas_trains_what_one_device_trains(generated, tmp_path):
    """PGD-AT (no random start: each replica's noise would be its own draw) over two
    logical CPUs: each replica's loss is its half's mean, and the optimizer sums the
    replicas' gradients, so unscaled the step would be twice one device's."""
    data_dir, env = generated
    defended = dict(defense="pgd_at", defense_options={
        "rand_init": False, "num_steps": 2, "eps": 0.1, "step_size": 0.05},
        epochs=2, steps_per_epoch=1)
    one = _finish(_run(_kwargs(data_dir, tmp_path, "one", **defended), env))
    two = _finish(_run(_kwargs(data_dir, tmp_path, "two", strategy="mirrored", **defended),
                       {**env, "TEST_LOGICAL_CPUS": "2"}))
    assert one["replicas"] == 1 and two["replicas"] == 2
    weights = _epochs(tmp_path, ("one", "two"))
    assert _max_difference(weights["one", 1], weights["one", 2]) > 1e-3  # it trained
    diff = _max_difference(weights["one", 2], weights["two", 2])
    assert diff < 1e-5, diff


# Every other recipe over two replicas (issue 29: each is a per-batch loss of the one
# training loop, so it runs under every strategy). Deterministic recipes must train what
# one device trains; those that draw noise per replica (FGSM-RS's and TRADES's starts,
# RNODE's Hutchinson probe) cannot match one device's draws, so for them: two replicas,
# it trained, and every weight finite. The rk4 ODE-Net (IBP refuses adaptive solvers).
RK4 = {"width": 4, "solver": "rk4", "step_size": 0.25, "norm": "none"}
RECIPES = {
    "ibp": (True, dict(defense="ibp", defense_options={"eps": 0.1, "eps_warmup": 1})),
    "contractivity": (True, dict(
        defense="pgd_at", defense_options={"rand_init": False, "num_steps": 2, "eps": 0.1,
                                           "step_size": 0.05},
        regularizer="contractivity", regularizer_options={"weight": 1.0, "bound": 0.01})),
    "fgsm_rs": (False, dict(defense="fgsm_rs", validation_size=16,  # the guard's batch
                            defense_options={"eps": 0.1, "guard_pgd_steps": 2})),
    "trades": (False, dict(defense="trades", defense_options={"eps": 0.1, "num_steps": 2,
                                                              "step_size": 0.05})),
    "kinetic_jacobian": (False, dict(regularizer="kinetic_jacobian")),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_trains_over_two_replicas(generated, tmp_path, name):
    data_dir, env = generated
    exact, recipe = RECIPES[name]
    recipe = {**recipe, "model_options": RK4, "epochs": 2, "steps_per_epoch": 1}
    two = _finish(_run(_kwargs(data_dir, tmp_path, "two", strategy="mirrored", **recipe),
                       {**env, "TEST_LOGICAL_CPUS": "2"}))
    assert two["replicas"] == 2
    names = ("one", "two") if exact else ("two",)
    if exact:
        _finish(_run(_kwargs(data_dir, tmp_path, "one", **recipe), env))
    weights = _epochs(tmp_path, names)
    assert _max_difference(weights["two", 1], weights["two", 2]) > 1e-4  # it trained
    assert all(np.isfinite(w).all() for w in weights["two", 2].values())
    if name == "fgsm_rs":  # the guard attacked after each epoch, under the strategy
        with open(os.path.join(two["export"], "assets.extra", "metrics.json")) as f:
            assert len(json.load(f)["train_history"]["guard_pgd_accuracy"]) == 2
    if exact:
        diff = _max_difference(weights["one", 2], weights["two", 2])
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


def _workers(kwargs, env, count=2, kill=None):
    """``count`` worker processes on localhost, each with its TF_CONFIG; ``kill``:
    ``(worker, step)``, that worker kills itself after that step."""
    procs = []
    for i, tf_config in enumerate(cluster.local_tf_configs(count)):
        task = {"TF_CONFIG": tf_config}
        if kill and kill[0] == i:
            task["TEST_KILL_AT_STEP"] = str(kill[1])
        procs.append(_run({**kwargs, "strategy": "multi_worker"}, {**env, **task}))
    return procs


# Behind --run-slow (the slowest fast test on the slower machines, ~2 min): resuming after
# a kill is test_resume.py's killed runs, and two workers training is the defense test below.
@pytest.mark.slow
def test_two_workers_resume_after_a_worker_is_killed_and_train_what_two_replicas_train(
        generated, tmp_path):
    """Two worker processes (MultiWorkerMirroredStrategy, one CPU replica each), the
    adaptive ODE-Net: worker 1 is killed (SIGKILL) after step 3 of 6; worker 0 must exit
    with the one-line error in bounded time, not hang; both restarted, they resume from
    the chief's last state and end where an uninterrupted run over two replicas of
    one process ends (each replica on the same half of every batch; a sum of two
    gradients does not depend on its order, so the match is exact by construction)."""
    data_dir, env = generated
    kwargs = _kwargs(data_dir, tmp_path, "mirrored", steps_per_epoch=3, epochs=2,
                     checkpoint_steps=2, strategy="mirrored")
    _finish(_run(kwargs, {**env, "TEST_LOGICAL_CPUS": "2"}))
    two = {**kwargs, "model_dir": str(tmp_path / "two"), "export_name": "two",
           "collective_timeout": 120}
    start = time.time()
    chief, killed = _workers(two, env, kill=(1, 3))
    _, err = chief.communicate(timeout=300)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert chief.returncode == 1 and "restart every worker with the same flags" in err, err[-3000:]
    assert time.time() - start < 240  # bounded: the heartbeats, not a hang
    assert not (tmp_path / "sm" / "two").exists()
    results = [_finish(p) for p in _workers(two, env)]  # resumes from the last state
    assert [r["replicas"] for r in results] == [2, 2]
    assert results[0]["fingerprint"] == results[1]["fingerprint"]  # the workers agree
    assert results[0]["export"].endswith(os.path.join("two", "1")) and results[1]["export"] is None
    assert os.listdir(tmp_path / "sm" / "two") == ["1"]  # one export, the chief's
    assert not [n for n in os.listdir(tmp_path / "two") if n.startswith(".worker")]
    weights = _epochs(tmp_path, ("mirrored", "two"))
    assert _max_difference(weights["mirrored", 1], weights["mirrored", 2]) > 1e-3  # it trained
    for e in (1, 2):
        diff = _max_difference(weights["mirrored", e], weights["two", e])
        assert diff < 1e-6, (e, diff)


def test_a_defense_under_two_workers_trains_what_one_process_trains(generated, tmp_path):
    """PGD-AT over two worker processes against one process with the same global batch,
    two steps. A fixed-step solver: no accept/reject decision that a rounding difference
    could flip, so the gap is the summation order's rounding alone."""
    data_dir, env = generated
    defended = dict(defense="pgd_at", defense_options={
        "rand_init": False, "num_steps": 2, "eps": 0.1, "step_size": 0.05},
        model_options={"width": 4, "solver": "rk4", "step_size": 0.25})
    defended.update(epochs=2, steps_per_epoch=1)  # a checkpoint after each of the 2 steps
    _finish(_run(_kwargs(data_dir, tmp_path, "one", **defended), env))
    # Through tools.train: the strategy must be made before any other TF op of the tool.
    two = [_finish(p) for p in _workers(_kwargs(data_dir, tmp_path, "two", **defended),
                                        {**env, "TEST_TOOL": "1"})]
    assert two[0]["fingerprint"] == two[1]["fingerprint"]
    weights = _epochs(tmp_path, ("one", "two"))
    assert _max_difference(weights["one", 1], weights["one", 2]) > 1e-3  # it trained
    diff = _max_difference(weights["one", 2], weights["two", 2])
    assert diff < 1e-5, diff


def test_strategy_names_and_bad_input():
    assert strategies.available() == ["default", "mirrored", "multi_worker", "tpu"]
    with pytest.raises(TfnodeError, match="unknown strategy 'gpu'"):
        strategies.check("gpu")
    os.environ.pop("TF_CONFIG", None)
    with pytest.raises(TfnodeError, match="needs TF_CONFIG"):
        strategies.get("multi_worker")


def test_cluster_reads_tf_config_with_the_chief_first(monkeypatch):
    spec = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}}
    for task, place in [({"type": "chief", "index": 0}, (0, 3)),
                        ({"type": "worker", "index": 0}, (1, 3)),
                        ({"type": "worker", "index": "1"}, (2, 3))]:
        monkeypatch.setenv("TF_CONFIG", json.dumps({**spec, "task": task}))
        assert cluster.place() == place
    monkeypatch.setenv("TF_CONFIG", "{cluster")
    with pytest.raises(TfnodeError, match="TF_CONFIG is not JSON"):
        cluster.place()
    for bad in ({"cluster": spec["cluster"]}, {**spec, "task": {"type": "worker", "index": 2}},
                {**spec, "task": {"type": "ps", "index": 0}}, ["worker"]):
        monkeypatch.setenv("TF_CONFIG", json.dumps(bad))
        with pytest.raises(TfnodeError, match="naming a chief or worker task"):
            cluster.place()
    configs = cluster.local_tf_configs(3)  # what the worker tests launch with
    for i, text in enumerate(configs):
        monkeypatch.setenv("TF_CONFIG", text)
        assert cluster.place() == (i, 3)
    hosts = json.loads(configs[0])["cluster"]["worker"]
    assert len(set(hosts)) == 3 and all(h.startswith("localhost:") for h in hosts)
    monkeypatch.delenv("TF_CONFIG")
    assert cluster.place() is None
    assert strategies.worker(strategies.get("default")) == (0, 1, True)
