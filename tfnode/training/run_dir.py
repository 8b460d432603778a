"""A run folder's bookkeeping: the settings a run was started with (so that a resume
with other settings is refused), the record of a finished run (so that running it
again does nothing), and clearing it for ``overwrite``."""

import json
import os
import shutil

from tfnode import files
from tfnode.errors import ConfigError
from tfnode.exports import layout
from tfnode.training import resume

SETTINGS = "run_settings.json"
FINISHED = "finished.json"


def settings(config, defense_options):
    """What a run must share with the run it resumes (``config`` resolved)."""
    c = config
    return {"model": c.model, "dataset": c.dataset, "model_options": c.model_options,
            "epochs": c.epochs, "batch_size": c.batch_size, "learning_rate": c.learning_rate,
            "optimizer": c.optimizer, "lr_schedule": c.lr_schedule,
            # None for 0, as in runs started before the option existed (resume).
            "weight_decay": c.weight_decay or None, "seed": c.seed,
            "steps_per_epoch": c.steps_per_epoch, "defense": c.defense,
            "defense_options": defense_options,
            "validation_size": c.validation_size or None,
            # Recorded so that a run started when the last partial batch was still
            # trained on (469 steps per epoch, not 468) is not resumed on another
            # learning-rate schedule.
            "train_batches": "full",
            # None for the default, as in runs started before the option existed.
            "strategy": None if c.strategy == "default" else c.strategy,
            # Only when set, as runs started before the option existed have no such key.
            **({"regularizer": c.regularizer,
                "regularizer_options": dict(c.regularizer_options or {})}
               if c.regularizer else {})}


def export_target(config, run_settings):
    """``run_settings`` with where the run exports to: what a finished run must match."""
    return {**run_settings, "export_dir": config.export_dir,
            "export_name": config.export_name}


def clear(model_dir):
    """Removes the resume state, the records and the epoch checkpoints (``overwrite``)."""
    for name in ("backup", SETTINGS, FINISHED, "checkpoints"):
        target = os.path.join(model_dir, name)
        if os.path.isdir(target):
            shutil.rmtree(target)
        elif os.path.exists(target):
            os.remove(target)


def check_resume_settings(model_dir, run_settings, *, write=True):
    """Refuses to resume a run whose settings differ; records them for a later resume
    (``write``: the chief of several workers alone writes)."""
    path = os.path.join(model_dir, SETTINGS)
    differ = (files.saved_settings_differ(path, run_settings)
              if os.path.isdir(backup_dir(model_dir)) else [])
    if differ:
        raise ConfigError("model_dir", f"{model_dir!r} holds an unfinished run with other "
                          f"settings ({', '.join(differ)}); resume it with the same settings, "
                          "or pass another {model_dir}")
    if write:
        files.write_json(path, run_settings)


def finished_run(model_dir, target, log, *, write=True):
    """The metrics of the finished run in ``model_dir`` with the settings and export
    ``target`` (`export_target`), else None.

    A finished run with other settings (or another export target) is replaced: its
    export stays, and the new run trains from scratch over its checkpoints and logs (its
    record is removed if ``write``: by the chief of several workers alone).
    """
    path = os.path.join(model_dir, FINISHED)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        finished = json.load(f)
    differ = files.differing_settings(finished["settings"], target)
    if differ:
        log(f"tfnode: {model_dir} holds a finished run with other settings "
            f"({', '.join(differ)}; exported to {finished['export_path']}); training this one "
            "from scratch there")
        if write:
            os.remove(path)
        return None
    export_path = finished["export_path"]
    metrics_path = layout.extra_file(export_path, layout.METRICS)
    if not metrics_path:
        raise ConfigError("model_dir", f"{model_dir!r} holds a finished run whose export "
                          f"{export_path!r} is gone; pass {{overwrite}} to train it again")
    with open(metrics_path) as f:
        metrics = json.load(f)
    metrics["export_path"] = export_path
    return metrics


def finish(model_dir, target, export_path):
    """Records the run as finished and exported; its resume state and settings go (a
    kill between the two leaves the state: the run then evaluates and exports again)."""
    files.write_json(os.path.join(model_dir, FINISHED), {
        "settings": target, "export_path": os.path.abspath(export_path)})
    shutil.rmtree(backup_dir(model_dir), ignore_errors=True)
    os.remove(os.path.join(model_dir, SETTINGS))


def writes(model_dir, index, is_chief):
    """Where worker ``index`` writes its states, epoch weights and logs: ``model_dir``
    for the chief, ``model_dir/.worker-<index>`` for another worker (it writes what the
    chief writes, since some reads are collective ops every worker must run, and
    `remove_writes` deletes them at the end: Keras' own multi-worker pattern)."""
    return model_dir if is_chief else os.path.join(model_dir, f".worker-{index}")


def remove_writes(folder):
    """Removes a non-chief worker's `writes` folder."""
    shutil.rmtree(folder, ignore_errors=True)


def backup_dir(model_dir):
    """Where the run's resume states live (`tfnode.training.resume`)."""
    return os.path.join(model_dir, "backup")


def last_good(model_dir):
    """The sentence naming the state a rerun resumes from, for a failure's message."""
    kept = resume.states(backup_dir(model_dir))
    return ((f"the last good state, {kept[0][1]} (step {kept[0][0]}), is kept; a rerun "
             "resumes from it" if kept else "no state was saved before it")
            + " (other settings need {overwrite} or another {model_dir})")


def refuse_old_backup(model_dir):
    """Refuses a resume state of Keras' BackupAndRestore (an older tfnode)."""
    if (os.path.isfile(os.path.join(backup_dir(model_dir), "training_metadata.json"))
            and not resume.states(backup_dir(model_dir))):
        raise ConfigError("model_dir", f"{model_dir!r} holds the resume state of an older "
                          "tfnode (Keras' BackupAndRestore), which this one does not read: "
                          "finish it with that version, or pass {overwrite} to start over")
