"""The step-size sweep: trains and evaluates each member once, resumes where it stopped,
re-renders only when everything is done, refuses another sweep's folder."""

import json
import os

import pytest

from tfnode import training
from tfnode.errors import TfnodeError
from tfnode.paper import step_sizes as sweep
from tfnode.paper.step_sizes import SweepConfig


def tiny(mnist_dir, tmp_path, **overrides):
    return SweepConfig(**{**dict(
        model="resnet", dataset="mnist", step_sizes=(1.0, 0.1),
        model_options={"width": 4, "num_blocks": 1},
        train_options={"epochs": 1, "batch_size": 8, "steps_per_epoch": 2},
        source_options={"width": 4, "num_blocks": 3}, eps=(0.1, 0.3), num_examples=16,
        batch_size=8, data_dir=mnist_dir, output_dir=str(tmp_path / "sweep")), **overrides})


@pytest.fixture
def counted_training(monkeypatch):
    """Records which member each train() call trains; can fail the n-th call."""
    calls, real = [], training.train
    fail = {"at": None}

    def counting(config, **kwargs):
        calls.append(config.export_name)
        if fail["at"] == len(calls):
            raise KeyboardInterrupt  # as if the job were killed during this training
        return real(config, **kwargs)

    monkeypatch.setattr(training, "train", counting)
    return calls, fail


def test_a_sweep_trains_evaluates_and_tabulates_each_member(mnist_dir, tmp_path,
                                                             counted_training):
    calls, _ = counted_training
    config = tiny(mnist_dir, tmp_path)
    out = sweep.run_sweep(config, log=lambda *_: None, verbose=0)
    assert calls == ["source", "h_1", "h_0.1"]
    assert out["done_now"] == ["source", "h_1", "h_0.1"]
    assert [r["step_size"] for r in out["members"]] == [1.0, 0.1]
    for row in out["members"]:
        report = json.loads(open(row["report"]).read())
        (model,) = report["models"].values()
        # Every number in the table is the member's own report's.
        assert row["clean_accuracy"] == model["clean_accuracy"]
        assert row["robust_accuracy"]["0.3"] == \
            model["attacks"]["transfer"]["cells"]["0.3"]["robust_accuracy"]
        assert report["config"]["source_model_path"] == out["source"]["export"]
        assert report["attack_options"]["transfer"]["attack"] == "fgsm"
        metrics = json.loads(open(os.path.join(row["export"], "assets.extra", "metrics.json")).read())
        assert metrics["model_options"]["step_size"] == row["step_size"]
    md = open(out["paths"]["md"]).read()
    assert "| 0.1 |" in md and "FGSM crafted on the source model `resnet`" in md
    assert os.path.getsize(out["paths"]["png"]) > 0


def test_a_killed_sweep_resumes_and_a_finished_one_only_rerenders(mnist_dir, tmp_path,
                                                                  counted_training):
    calls, fail = counted_training
    config = tiny(mnist_dir, tmp_path)
    fail["at"] = 3  # killed while training the second member
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(config, log=lambda *_: None, verbose=0)
    assert calls == ["source", "h_1", "h_0.1"]
    fail["at"] = None
    calls.clear()
    out = sweep.run_sweep(config, log=lambda *_: None, verbose=0)
    assert calls == ["h_0.1"]  # the finished members are skipped
    assert out["done_now"] == ["h_0.1"]
    first = open(out["paths"]["json"]).read()
    lines = []
    again = sweep.run_sweep(config, log=lines.append, verbose=0)
    assert calls == ["h_0.1"] and again["done_now"] == []
    assert any("re-rendered only" in line for line in lines)
    assert json.loads(first)["members"] == again["members"]
    # A member whose report is lost is evaluated again, and only it.
    os.remove(again["members"][0]["report"])
    third = sweep.run_sweep(config, log=lambda *_: None, verbose=0)
    assert third["done_now"] == ["h_1"] and calls == ["h_0.1"]
    # A report of other weights (a fresh clone retrains members whose exports are not
    # committed) is evaluated again: for the member's weights and for the source's.
    for row, key in zip(third["members"], ("member", "source")):
        with open(row["report"]) as f:
            report = json.load(f)
        info = (next(iter(report["models"].values()))["info"] if key == "member"
                else report["source_model"])
        info["fingerprint"] = "000000000000"
        with open(row["report"], "w") as f:
            json.dump(report, f)
    fourth = sweep.run_sweep(config, log=lambda *_: None, verbose=0)
    assert fourth["done_now"] == ["h_1", "h_0.1"] and calls == ["h_0.1"]


def test_another_sweep_in_the_same_folder_is_refused(mnist_dir, tmp_path, counted_training):
    sweep.run_sweep(tiny(mnist_dir, tmp_path, step_sizes=(1.0,)), log=lambda *_: None,
                    verbose=0)
    with pytest.raises(TfnodeError, match="holds a sweep with other settings .*step_sizes"):
        sweep.run_sweep(tiny(mnist_dir, tmp_path), log=lambda *_: None, verbose=0)


@pytest.mark.parametrize("overrides,match", [
    ({"step_sizes": (1.0, 1.0)}, "step_sizes has duplicates"),
    ({"step_sizes": (1.0, -0.1)}, "step_sizes must be one or more numbers > 0"),
    ({"step_sizes": ()}, "step_sizes must be one or more numbers > 0, got ()"),
    ({"model_options": {"step_size": 0.5}}, "step_size is what the sweep varies"),
    ({"transfer_attack": "boundary"}, "cannot be transferred"),
    ({"source_options": {"depth": 8}}, "source_options.depth does not apply to source model "
                                       "'resnet'"),
    ({"train_options": {"epoch": 1}}, "unknown option 'epoch'"),
    ({"eps": (0.1, 1.5)}, "eps must be one or more budgets in [0, 1]"),
])
def test_bad_sweeps_fail_before_any_work(mnist_dir, tmp_path, counted_training, overrides,
                                         match):
    calls, _ = counted_training
    with pytest.raises(TfnodeError, match=match.replace("[", r"\[").replace("]", r"\]")):
        sweep.run_sweep(tiny(mnist_dir, tmp_path, **overrides), log=lambda *_: None)
    assert calls == [] and not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("argv,match", [
    (["--model_option=step_size=0.1"], "step_size is what the sweep varies"),
    (["--source_option=depth"], "expected OPTION=VALUE"),
    (["--step_sizes=1,x"], "--step_sizes must be a comma-separated list of numbers"),
    (["--eps=0.1,2"], "outside [0, 1]"),
])
def test_sweep_flags_are_checked_in_one_line(argv, match):
    from absl import flags as absl_flags

    from flags import configs
    from tfnode.paper import step_sizes
    from tools import sweep as app  # noqa: F401  (defines the flags)

    fv = absl_flags.FLAGS
    fv.unparse_flags()
    fv(["sweep"] + argv)
    try:
        with pytest.raises(TfnodeError, match=match.replace("[", r"\[").replace("]", r"\]")):
            step_sizes.validate(configs.sweep_config(fv))  # the app's, then the library's
    finally:
        fv.unparse_flags()


# The child: a tiny sweep; with "kill" it SIGKILLs itself in the first training step of
# that member, as kill -9 would.
CHILD = """
import signal
import keras
from tfnode import training
from tfnode.paper import step_sizes as sweep
from tfnode.paper.step_sizes import SweepConfig
args = json.loads(sys.argv[1])
kill = args.pop("kill", None)
real = training.train

class Die(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        os.kill(os.getpid(), signal.SIGKILL)

def counted(config, **kwargs):
    print("TRAIN", config.export_name, flush=True)
    if config.export_name == kill:
        kwargs["callbacks"] = [Die()]
    return real(config, **kwargs)

training.train = counted
for key in ("step_sizes", "eps"):
    args[key] = tuple(args[key])
out = sweep.run_sweep(SweepConfig(**args), log=lambda *_: None, verbose=0)
print("ROWS", json.dumps([{k: r[k] for k in ("step_size", "clean_accuracy", "robust_accuracy")}
                          for r in out["members"]]), flush=True)
"""


# Slow (--run-slow): test_a_killed_sweep_resumes_and_a_finished_one_only_rerenders checks
# the resume in one process; this one adds a real SIGKILL and the uninterrupted numbers.
@pytest.mark.slow
def test_a_sweep_killed_with_sigkill_finishes_as_an_uninterrupted_one(tmp_path):
    import signal
    import subprocess
    import sys

    from conftest import CHILD_PRELUDE, child_mnist

    data_dir, env = child_mnist(tmp_path)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def run(out, kill=None):
        config = {**tiny(data_dir, tmp_path).__dict__, "output_dir": str(tmp_path / out)}
        config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()}
        return subprocess.run([sys.executable, "-c", CHILD_PRELUDE + CHILD,
                               json.dumps({**config, "kill": kill})], cwd=repo, env=env,
                              text=True, capture_output=True, timeout=600)

    def rows(proc):
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.split("ROWS ", 1)[1])

    def trained(proc):
        return [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("TRAIN")]

    killed = run("sweep", kill="h_0.1")
    assert killed.returncode == -signal.SIGKILL and trained(killed) == ["source", "h_1", "h_0.1"]
    again = run("sweep")
    assert trained(again) == ["h_0.1"]  # the finished members are not trained again
    assert rows(again) == rows(run("whole"))
