"""What absl rejects before an app runs, for every app, as real processes: a non-numeric
number, an unknown flag, a flagfile that is missing or holds an unknown flag, and a
positional argument each give one ``error: ...`` line, exit code 2 and no file. The
apps' own checks are tested beside each app (test_train, test_evaluate, test_export,
test_tune, test_sweep, test_schedule, test_results, test_loading, test_resume, test_data);
docs/troubleshooting.md lists them all."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# An integer flag of each app (absl's own --verbosity where the app has none).
NUMERIC = {"train": "epochs", "evaluate": "num_examples", "export": "version",
           "tune": "epochs", "sweep": "epochs", "report": "verbosity",
           "merge_shards": "verbosity"}

CASES = {
    "non_numeric": (["--{numeric}=ten"], "flag --{numeric}=ten: invalid literal for int()"),
    "unknown_flag": (["--epoch=3"], "Unknown command line flag 'epoch'"),
    "missing_flagfile": (["--flagfile=missing.cfg"], "Unable to open flagfile"),
    "flagfile_unknown_flag": (["--flagfile=bad.cfg"], "Unknown command line flag 'learning_rat'"),
    "positional": (["mnist"], "unexpected arguments 'mnist'; every option is a --flag"),
}


# A retired flag: what replaced it, where the app has the replacement (flags/retired.py).
RETIRED = {"train": "--rtol was replaced by --model_option=rtol=VALUE",
           "tune": "--rtol was replaced by --tune_option=rtol_range=LOW,HIGH",
           "sweep": "--rtol was replaced by --model_option=rtol=VALUE",
           "export": "--rtol was replaced by --model_option=rtol=VALUE",
           "evaluate": "Unknown command line flag 'rtol'",
           "report": "Unknown command line flag 'rtol'",
           "merge_shards": "Unknown command line flag 'rtol'"}
CASES["retired_flag"] = (["--rtol=1e-3"], "{retired}")
CASES["retired_flag_in_a_flagfile"] = (["--flagfile=old.cfg"], "{retired}")


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("app", sorted(NUMERIC))
def test_flag_errors_are_one_line_exit_2_and_write_nothing(app, case, tmp_path):
    (tmp_path / "bad.cfg").write_text("--learning_rat=0.1\n")
    (tmp_path / "old.cfg").write_text("--rtol=1e-3\n")
    before = sorted(os.listdir(tmp_path))
    argv, expected = CASES[case]
    argv = [a.format(numeric=NUMERIC[app]) for a in argv]
    expected = expected.format(numeric=NUMERIC[app], retired=RETIRED[app])
    proc = subprocess.run([sys.executable, "-m", f"tools.{app}", *argv], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": REPO}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expected in lines[0], lines[0]
    assert sorted(os.listdir(tmp_path)) == before
