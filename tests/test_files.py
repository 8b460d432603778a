"""Atomic writes: a failure or a kill inside one leaves the old complete file (or none),
never a half; an existing folder (a SavedModel version) is never touched; a killed
writer's temporary is removed by the next writer of that path, a live one's is not."""

import hashlib
import os
import signal
import subprocess
import sys

import pytest

from tfnode import files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _digest(folder):
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_an_exception_inside_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "report.json"
    files.write_json(str(path), {"a": 1})
    old = path.read_bytes()
    with pytest.raises(RuntimeError, match="disk full"):
        with files.atomic_path(str(path)) as tmp:
            with open(tmp, "w") as f:
                f.write('{"a": 2, "half')
            raise RuntimeError("disk full")
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["report.json"]
    files.write_text(str(path), "new")  # a later write replaces it whole
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["report.json"]


def test_an_existing_folder_is_never_touched(tmp_path):
    version = tmp_path / "model" / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"\x00served")
    (version / "variables").mkdir()
    (version / "variables" / "variables.index").write_bytes(b"index")
    before = _digest(version)
    with pytest.raises(FileExistsError, match="exists already"):
        with files.atomic_path(str(version)) as tmp:
            os.makedirs(tmp)
            open(os.path.join(tmp, "saved_model.pb"), "wb").close()
    assert _digest(version) == before
    assert sorted(os.listdir(tmp_path / "model")) == ["1"]


KILLER = """
import os, signal, sys
from tfnode import files
with files.atomic_path(sys.argv[1]) as tmp:
    with open(tmp, "w") as f:
        f.write("half of the new content")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_writer_killed_inside_leaves_the_old_file_and_the_next_writer_cleans_up(tmp_path):
    path = tmp_path / "metrics.json"
    files.write_json(str(path), {"clean_accuracy": 0.99})
    old = path.read_bytes()
    proc = subprocess.run([sys.executable, "-c", KILLER, str(path)], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO}, capture_output=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == old
    leftovers = [n for n in os.listdir(tmp_path) if n != "metrics.json"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".metrics.json.tmp-")
    # A live writer's temporary (this process's) is left alone; the dead one's goes.
    live = tmp_path / f".metrics.json.tmp-{os.getpid()}-x"
    live.mkdir()
    files.write_json(str(path), {"clean_accuracy": 0.5})
    assert sorted(os.listdir(tmp_path)) == sorted(["metrics.json", live.name])
    assert b"0.5" in path.read_bytes()


def test_differing_settings_compare_missing_and_empty_alike():
    """A setting added later with an empty default (``solver_options``) leaves an older
    run's saved settings comparable; a set value or another value differs."""
    saved = {"eps": [0.1, 0.3], "attack_options": {}}
    assert files.differing_settings(saved, {"eps": (0.1, 0.3), "solver_options": {},
                                            "attack_options": {}}) == []
    assert files.differing_settings(saved, {"solver_options": {"step_size": 0.1},
                                            "eps": (0.1,), "shard_index": 1},
                                    ignore=("shard_index",)) == ["eps", "solver_options"]
    # A key only the saved settings have (a shard of newer code against an older one).
    assert files.differing_settings({"solver_options": {"step_size": 0.1}}, {}) == [
        "solver_options"]
