"""tools.tune: keras-tuner over solver tolerances on generated data; resume, summary,
best.cfg that tools.train takes, bad input, and a chief + worker on loopback."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from absl import flags as absl_flags

from tfnode import attacks
from tfnode.training import trials, tune

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(model="node", model_options={"width": 4}, tuner="random", epochs=1,
            steps_per_epoch=2, batch_size=8, validation_size=16, robust_examples=8,
            pgd_steps=2, rtol_range=(1e-3, 1e-1), atol_range=(1e-3, 1e-1))


def config(mnist_dir, out, **overrides):
    return tune.flat_config(**{**TINY, "data_dir": mnist_dir, "output_dir": str(out),
                               **overrides})


def test_search_writes_trials_pareto_front_and_a_best_cfg_tools_train_takes(
        mnist_dir, tmp_path):
    logs = []
    result = tune.tune(config(mnist_dir, tmp_path / "t", max_trials=2, tuner="bayesian"),
                       log=logs.append)
    rows = result["trials"]
    assert len(rows) == 2 and len({(r["rtol"], r["atol"]) for r in rows}) == 2
    for r in rows:
        assert 1e-3 <= r["rtol"] <= 1e-1 and 1e-3 <= r["atol"] <= 1e-1
        assert 0 <= r["robust_accuracy"] <= 1 and 0 <= r["clean_accuracy"] <= 1
        assert r["mean_nfe"] >= 8 and r["seconds"] > 0  # at least one dopri5 step
        assert r["score"] == pytest.approx(r["robust_accuracy"] - 0.1 * r["mean_nfe"] / 100)
    assert sum(m.startswith("tfnode: trial ") and ", robust " in m for m in logs) == 2
    summary = json.loads((tmp_path / "t" / "trials.json").read_text())
    assert summary["validation"] == "the last 16 of the mnist training split"
    assert summary["best"]["trial"] == max(rows, key=lambda r: r["robust_accuracy"])["trial"]
    assert (tmp_path / "t" / "trials.png").stat().st_size > 0
    assert "| Pareto |" in (tmp_path / "t" / "trials.md").read_text()

    # best.cfg is a flagfile tools.train accepts unchanged, with the best tolerances.
    from flags import configs
    from tfnode import training
    from tools import train  # noqa: F401  (defines the train flags)

    fv = absl_flags.FLAGS
    fv.unparse_flags()
    fv(["train", f"--flagfile={tmp_path / 't' / 'best.cfg'}"])
    recipe = configs.train_config(fv)
    assert recipe.model_options["rtol"] == pytest.approx(summary["best"]["rtol"])
    assert recipe.model_options["atol"] == pytest.approx(summary["best"]["atol"])
    assert recipe.model_options["width"] == 4 and recipe.epochs == 1
    assert recipe.steps_per_epoch == 2  # the trial's budget
    training.check(recipe)
    fv.unparse_flags()


# Slow (--run-slow): the SIGKILL test below checks that a resumed search reruns only
# what is missing.
@pytest.mark.slow
def test_an_interrupted_search_resumes_and_a_finished_one_only_re_renders(
        mnist_dir, tmp_path, monkeypatch):
    fits = []
    real_fit = tune.HyperModel.fit
    monkeypatch.setattr(tune.HyperModel, "fit",
                        lambda self, *a, **k: fits.append(1) or real_fit(self, *a, **k))
    out = tmp_path / "t"
    tune.tune(config(mnist_dir, out, max_trials=1), log=lambda m: None)
    assert len(fits) == 1
    logs = []
    result = tune.tune(config(mnist_dir, out, max_trials=2), log=logs.append)
    assert len(fits) == 2 and len(result["trials"]) == 2  # one more, not two
    assert any("resuming the search" in m and "1 trials done" in m for m in logs)
    logs.clear()
    result = tune.tune(config(mnist_dir, out, max_trials=2), log=logs.append)
    assert len(fits) == 2 and len(result["trials"]) == 2
    assert any("is finished (2 trials)" in m for m in logs)


def test_pareto_front_keeps_trials_no_other_beats_on_both():
    rows = [{"trial": "a", "robust_accuracy": 0.5, "mean_nfe": 20},
            {"trial": "b", "robust_accuracy": 0.6, "mean_nfe": 30},
            {"trial": "c", "robust_accuracy": 0.4, "mean_nfe": 25},  # beaten by a
            {"trial": "d", "robust_accuracy": 0.6, "mean_nfe": 40}]  # beaten by b
    assert trials.pareto_front(rows) == ["a", "b"]


def _threshold_model():
    """Logits ``(0, 10 * (sum(x) - 2))`` on 2x2 images: class 1 iff the mean pixel > 0.5."""
    model = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(2)])
    model.layers[-1].set_weights([np.tile([[0.0, 10.0]], (4, 1)).astype(np.float32),
                                  np.array([0.0, -20.0], np.float32)])
    return model


def _flat(*pixels):
    return np.array([np.full((2, 2, 1), p) for p in pixels], np.float32)


def test_trial_robust_accuracy_is_a_real_pgd_that_breaks_what_eps_can_break():
    # The loss gradient has one sign over every pixel, so each of the 10 steps of eps / 4
    # moves every pixel by eps toward the other class until the ball stops it: 0.55 and
    # 0.45 (0.05 from the boundary) cross it at eps = 0.1, 0.9 and 0.1 cannot.
    model = _threshold_model()
    x, y = _flat(0.55, 0.9, 0.1, 0.45), np.array([1, 1, 0, 0])
    c = tune.flat_config(eps=0.1, pgd_steps=10, seed=0, batch_size=8)
    clean = np.mean(attacks.predict(model, x) == y)
    robust = tune.robust_accuracy(model, x, y, c)
    assert clean == 1.0 and robust == 0.5 < clean
    # The same as attacking and counting directly, with the tuner's settings.
    x_adv = attacks.pgd(model, x, y, eps=0.1, step_size=0.025, num_steps=10, rand_init=True,
                        seed=0)
    np.testing.assert_array_equal(attacks.predict(model, x_adv), [0, 1, 0, 1])
    assert robust == np.mean((attacks.predict(model, x) == y)
                             & (attacks.predict(model, x_adv) == y))


def test_a_clean_wrong_example_is_not_robust_even_if_its_adversarial_is_right(monkeypatch):
    # The evaluation's rule: robust = correct clean AND correct attacked.
    y = np.array([0, 1, 2, 3])
    robust = tune.robust_mask([0, 1, 9, 9], [0, 9, 2, 9], y)
    np.testing.assert_array_equal(robust, [True, False, False, False])
    # Through the trial's judging: an "attack" that moves the clean-wrong example (0.45,
    # labelled 1) across the boundary to its label, and leaves the others.
    model = _threshold_model()
    x, y = _flat(0.45, 0.9, 0.1), np.array([1, 1, 0])
    monkeypatch.setattr(tune.attacks, "pgd", lambda m, x, y, **k: x + _flat(0.1, 0, 0))
    assert tune.robust_accuracy(model, x, y, tune.TuneConfig()) == pytest.approx(2 / 3)


@pytest.mark.parametrize("argv, expected", [
    (["--tune_option=tuner=grid"], "--tune_option=tuner must be one of ['bayesian', 'hyperband', 'random'], got 'grid'"),
    (["--tune_option=objective=loss"], "--tune_option=objective must be one of ['clean', 'robust', 'score'], got 'loss'"),
    (["--model=resnet"], "no solver tolerances to tune"),
    (["--model_option=rtol=1e-3"],
     "--model_option=rtol is searched by tools.tune; give --tune_option=rtol_range instead"),
    (["--tune_option=rtol_range=1e-1,1e-3"], "expected 0 < low < high"),
    (["--tune_option=atol_range=1e-3"], "expected LOW,HIGH"),
    (["--tune_option=rtol_range=a,b"], "comma-separated list of numbers"),
    (["--tune_option=max_trials=0"], "--tune_option=max_trials must be an integer >= 1, got 0"),
    (["--tune_option=solvers=dopri9"], "dopri9"),
    (["--tune_option=eps=0"], "--tune_option=eps must be a number in (0, 1], got 0"),
    (["--output_dir=AFILE/x"], "--output_dir"),
    (["--strategy=multi_worker"], "keras-tuner's chief/worker mode"),
    (["--strategy=gpus"], "unknown strategy 'gpus'"),
])
def test_bad_input_is_a_one_line_error(argv, expected, tmp_path, capsys):
    from tools import tune as app

    (tmp_path / "afile").write_text("")
    argv = [a.replace("AFILE", str(tmp_path / "afile")) for a in argv]
    absl_flags.FLAGS.unparse_flags()
    absl_flags.FLAGS(["tune", f"--output_dir={tmp_path / 'out'}",
                      f"--data_dir={tmp_path / 'nodata'}"] + argv)
    with pytest.raises(SystemExit) as exit_info:
        app.main(["tune"])
    absl_flags.FLAGS.unparse_flags()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "\n" not in err, err
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


# A chief and one worker on loopback, as separate processes (keras-tuner's own gRPC
# oracle); the data is generated, so the driver trusts its md5s as the fixtures do.
def _driver():
    from conftest import CHILD_PRELUDE

    return CHILD_PRELUDE + """
from absl import app
from tools import tune
app.run(tune.main, argv=["tune"] + sys.argv[1:])
"""


def _tiny_args(folder, out, *more):
    return [f"--data_dir={folder}", f"--output_dir={out}", "--model=node", "--width=4",
            "--tune_option=tuner=random", "--epochs=1", "--steps_per_epoch=2", "--batch_size=8",
            "--validation_size=16", "--tune_option=robust_examples=8", "--tune_option=pgd_steps=2", *more]


# The chief binds port 0, so the kernel gives it a free port atomically (a port picked
# by the test, closed, then bound by the chief could be taken in between; and gRPC binds
# with SO_REUSEPORT, so such a clash need not even fail the bind). keras-tuner hands
# KERASTUNER_ORACLE_PORT to gRPC's add_insecure_port as is and drops the port it
# returns: the chief's driver prints it, and the worker is started on it.
CHIEF_PORT = """
import grpc
real_server = grpc.server

def server(*args, **kwargs):
    made = real_server(*args, **kwargs)
    real_add = made.add_insecure_port

    def add_insecure_port(address):
        port = real_add(address)
        print("ORACLE_PORT", port, flush=True)
        return port

    made.add_insecure_port = add_insecure_port
    return made

grpc.server = server
"""


def _wait_for_port(chief, stdout_path, timeout=300):
    """The port the chief's oracle listens on, once its server is up."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        for line in stdout_path.read_text().splitlines():
            if line.startswith("ORACLE_PORT "):
                return line.split()[1]
        if chief.poll() is not None:
            break
        time.sleep(0.2)
    return None


# Behind --run-slow (~75 s on the slower machines): keras-tuner's own chief/worker
# protocol, which tfnode only configures (tfnode.training.tune reads TF_CONFIG).
@pytest.mark.slow
def test_chief_and_worker_share_one_oracle_on_loopback(tmp_path):
    from conftest import CHILD_PRELUDE, child_mnist

    folder, env = child_mnist(tmp_path, KERASTUNER_ORACLE_IP="127.0.0.1")
    out = tmp_path / "t"
    args = _tiny_args(folder, out, "--tune_option=max_trials=2")
    driver = _driver()
    chief_driver = driver.replace(CHILD_PRELUDE, CHILD_PRELUDE + CHIEF_PORT, 1)
    chief_stdout, chief_stderr = tmp_path / "chief.out", tmp_path / "chief.err"
    with open(chief_stdout, "w") as stdout, open(chief_stderr, "w") as stderr:
        chief = subprocess.Popen([sys.executable, "-c", chief_driver] + args, cwd=REPO,
                                 text=True, stdout=stdout, stderr=stderr,
                                 env={**env, "KERASTUNER_TUNER_ID": "chief",
                                      "KERASTUNER_ORACLE_PORT": "0"})
    try:
        port = _wait_for_port(chief, chief_stdout)
        assert port and port != "0", chief_stderr.read_text()[-2000:]
        worker = subprocess.run([sys.executable, "-c", driver] + args, cwd=REPO, text=True,
                                env={**env, "KERASTUNER_TUNER_ID": "tuner0",
                                     "KERASTUNER_ORACLE_PORT": port},
                                capture_output=True, timeout=600)
        assert worker.returncode == 0, worker.stderr[-2000:]
        chief.wait(timeout=300)
    finally:
        chief.kill()
        chief.wait()
    assert chief.returncode == 0, chief_stderr.read_text()[-2000:]
    chief_out = chief_stdout.read_text()
    summary = json.loads((out / "trials.json").read_text())
    # Both trials ran in the worker and landed in the chief's oracle, which wrote them.
    assert len(summary["trials"]) == 2
    assert "best trial" in chief_out and "best trial" not in worker.stdout
    assert (out / "best.cfg").exists()


# Slow (--run-slow): training under the mirrored strategy is checked in
# test_strategies.py.
@pytest.mark.slow
def test_trials_train_under_a_mirrored_strategy(tmp_path):
    from conftest import child_mnist

    folder, env = child_mnist(tmp_path, TEST_LOGICAL_CPUS="2")
    out = tmp_path / "t"
    args = _tiny_args(folder, out, "--tune_option=max_trials=1", "--strategy=mirrored")
    driver = _driver()
    proc = subprocess.run([sys.executable, "-c", driver] + args, cwd=REPO, text=True,
                          env=env, capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (trial,) = json.loads((out / "trials.json").read_text())["trials"]
    assert trial["mean_nfe"] >= 8 and 0 <= trial["robust_accuracy"] <= 1


# The child: a 2-trial search that SIGKILLs itself when the second trial starts training.
KILLED_SEARCH = """
import signal
from tfnode.training import tune
args = json.loads(sys.argv[1])
kill = args.pop("kill")
for key in ("rtol_range", "atol_range"):
    args[key] = tuple(args[key])
real_fit, fits = tune.HyperModel.fit, []

def fit(self, *a, **k):
    fits.append(1)
    print("FIT", len(fits), flush=True)
    if len(fits) == kill:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_fit(self, *a, **k)

tune.HyperModel.fit = fit
logs = []
result = tune.tune(tune.flat_config(**args), log=logs.append)
print("RESULT", json.dumps({"trials": len(result["trials"]), "logs": logs}), flush=True)
"""


# Behind --run-slow (the suite's time on the slower machines, ~75 s): with the resumed
# search above, the tuner's resume is a --run-slow property.
@pytest.mark.slow
def test_a_search_killed_with_sigkill_inside_a_trial_reruns_that_trial(tmp_path):
    import signal

    from conftest import CHILD_PRELUDE, child_mnist

    data_dir, env = child_mnist(tmp_path)
    args = {**TINY, "data_dir": data_dir, "output_dir": str(tmp_path / "t"), "max_trials": 2}

    def run(kill):
        return subprocess.run([sys.executable, "-c", CHILD_PRELUDE + KILLED_SEARCH,
                               json.dumps({**args, "kill": kill})], cwd=REPO, env=env,
                              text=True, capture_output=True, timeout=600)

    killed = run(kill=2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (tmp_path / "t" / "trials.json").exists()
    again = run(kill=0)
    assert again.returncode == 0, again.stderr[-3000:]
    fits = [line for line in again.stdout.splitlines() if line.startswith("FIT")]
    result = json.loads(again.stdout.split("RESULT ", 1)[1])
    # Only the killed trial runs again (keras-tuner re-queues a trial left running).
    assert len(fits) == 1 and result["trials"] == 2
    assert any("resuming the search" in m and "1 trials done" in m for m in result["logs"])
