"""A killed evaluation, run again, redoes no finished cell and ends with the report of an
uninterrupted run. Real processes, killed with SIGKILL right after the n-th cell was
saved (conftest.CHILD_PRELUDE: generated MNIST-format files)."""

import json
import os
import signal
import subprocess
import sys

import keras
import pytest

from tfnode.errors import TfnodeError
from tfnode.evaluation import progress

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The child evaluates; it prints every (attack, eps) it crafts, and with "kill_after"
# kills itself right after that many units were saved.
CHILD = """
import signal
from tfnode import evaluation
from tfnode.evaluation import batches, progress
args = json.loads(sys.argv[1])
kill_after = args.pop("kill_after", None)
real_craft, real_save, saves = batches.craft, progress.Progress.save, [0]

def craft(sweep, job, eps, idx, **kw):
    print("CRAFT", json.dumps([job.name, eps]), flush=True)
    return real_craft(sweep, job, eps, idx, **kw)

def save(self, model, attack, name, record, arrays):
    real_save(self, model, attack, name, record, arrays)
    print("SAVED", json.dumps([attack, name]), flush=True)
    saves[0] += 1
    if saves[0] == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)

batches.craft, progress.Progress.save = craft, save
report = evaluation.evaluate(evaluation.EvalConfig(**args), log=lambda *_: None, verbose=0)
print("DONE", flush=True)
"""


def _lines(out, tag):
    return [tuple(json.loads(line.split(" ", 1)[1])) for line in out.splitlines()
            if line.startswith(tag + " ")]


def _cells(report):
    """Every number of the report that does not measure time."""
    out = {}
    for label, model in report["models"].items():
        for name, attack in model["attacks"].items():
            for key, cell in attack["cells"].items():
                out[label, name, key] = {k: v for k, v in cell.items() if k != "seconds"}
            out[label, name, "meta"] = attack["meta"]
        out[label, "worst_case"] = model["worst_case"]
    return out


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    from conftest import CHILD_PRELUDE, child_mnist

    tmp = tmp_path_factory.mktemp("progress")
    data_dir, env = child_mnist(tmp)
    keras.utils.set_random_seed(1)
    path = str(tmp / "tiny.keras")
    keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3, strides=2),
                      keras.layers.Flatten(), keras.layers.Dense(10)], name="tiny").save(path)

    def run(output_dir, schedule, kill_after=None):
        config = {"model_path": path, "data_dir": data_dir, "num_examples": 32,
                  "batch_size": 16, "attacks": ["fgsm", "pgd", "boundary"],
                  "eps": [0.1, 0.2, 0.3], "schedule": schedule, "output_dir": output_dir,
                  "attack_options": {"pgd": {"num_steps": 3}, "boundary": {"max_queries": 30}}}
        if kill_after:
            config["kill_after"] = kill_after
        return subprocess.run([sys.executable, "-c", CHILD_PRELUDE + CHILD,
                               json.dumps(config)], cwd=REPO, env=env, text=True,
                              capture_output=True, timeout=600)
    return run


@pytest.mark.parametrize("schedule", ["exhaustive", "fast"])
def test_a_killed_evaluation_redoes_no_finished_cell(child, tmp_path, schedule):
    whole = child(str(tmp_path / "whole"), schedule)
    assert whole.returncode == 0 and "DONE" in whole.stdout, whole.stderr[-3000:]
    with open(tmp_path / "whole" / "report.json") as f:
        expected = _cells(json.load(f))
    assert not (tmp_path / "whole" / progress.FOLDER).exists()  # removed with the report
    out = str(tmp_path / "run")
    # Killed after FGSM's three cells and the whole FGSM job, and PGD's first two cells.
    killed = child(out, schedule, kill_after=6)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    saved = _lines(killed.stdout, "SAVED")
    assert saved == [("fgsm", "eps-0.1"), ("fgsm", "eps-0.2"), ("fgsm", "eps-0.3"),
                     ("fgsm", "job"), ("pgd", "eps-0.1"), ("pgd", "eps-0.2")]
    assert not os.path.exists(os.path.join(out, "report.json"))
    again = child(out, schedule)
    assert again.returncode == 0, again.stderr[-3000:]
    crafted_again = _lines(again.stdout, "CRAFT")
    # Nothing finished is attacked again; what was not finished is.
    assert not [c for c in crafted_again if c[0] == "fgsm" or c in (("pgd", 0.1), ("pgd", 0.2))]
    crafted_whole = _lines(whole.stdout, "CRAFT")
    assert crafted_again == [c for c in crafted_whole
                             if c[0] == "boundary" or c == ("pgd", 0.3)]
    if schedule == "exhaustive":  # every cell attacks every example: all were crafted
        assert len(crafted_whole) == 7
    with open(os.path.join(out, "report.json")) as f:
        assert _cells(json.load(f)) == expected
    assert not os.path.exists(os.path.join(out, progress.FOLDER))


def test_other_settings_are_refused_only_where_cells_were_finished(tmp_path):
    quiet = {"log": lambda *_: None}
    first = progress.Progress(str(tmp_path), {"config": {"eps": [0.1]}}, **quiet)
    assert not first.resumed
    # A run that failed before its first cell locks nothing: other flags may follow.
    second = progress.Progress(str(tmp_path), {"config": {"eps": [0.3]}}, **quiet)
    second.save(0, "fgsm", "eps-0.3", {"robust_accuracy": 0.5}, {"0.3": {"own": [True]}})
    lines = []
    again = progress.Progress(str(tmp_path), {"config": {"eps": [0.3]}}, log=lines.append)
    assert again.resumed and "resuming the evaluation" in lines[0]
    record, arrays = again.load(0, "fgsm", "eps-0.3")
    assert record == {"robust_accuracy": 0.5} and arrays["0.3"]["own"].tolist() == [True]
    with pytest.raises(TfnodeError, match=r"holds the finished cells of an unfinished "
                                          r"evaluation with other settings \(config\)"):
        progress.Progress(str(tmp_path), {"config": {"eps": [0.1]}}, **quiet)
    model = tmp_path / "m.keras"
    model.write_bytes(b"one")
    before = progress.model_fingerprint(str(model))
    # A fresh clone of committed cells and models gives new modification times: the same
    # evaluation. Other bytes at the same path are another.
    os.utime(model, ns=(1, 1))
    assert progress.model_fingerprint(str(model)) == before
    model.write_bytes(b"two")
    assert progress.model_fingerprint(str(model)) != before
    export = tmp_path / "export"
    (export / "variables").mkdir(parents=True)
    (export / "saved_model.pb").write_bytes(b"graph")
    (export / "variables" / "variables.data-00000-of-00001").write_bytes(b"w1")
    first_export = progress.model_fingerprint(str(export))
    (export / "variables" / "variables.data-00000-of-00001").write_bytes(b"w2")
    assert progress.model_fingerprint(str(export)) != first_export
