"""Training state on disk: kill a run at any moment, run it again, lose at most one interval.

A run's resume state lives in ``<model_dir>/backup/state-<step>/``: the trainer's weights
with the optimizer's (its step counter, so the learning-rate schedule's position, and its
moments; a defense's seed state) and ``state.json`` (the global step, the epoch, and the
epoch logs so far). Each state folder is written beside and renamed into place, so every
``state-*`` folder is complete; the newest two are kept, and a state that fails to load
falls back to the one before. Saved at every epoch end and, with ``every_steps``, every
that many steps; never after a non-finite loss.

Keras' own BackupAndRestore (which tfnode used before) writes its weights and its
metadata as two files in place, one after the other (a kill between them pairs one
step's weights with another's epoch), and restarts an interrupted epoch from its first
batch with the mid-epoch weights. Here a resumed run skips the batches it has trained on
(`tfnode.data.load`'s ``skip_batches``), so it sees the same batches in the same order as
an uninterrupted one.
"""

import json
import math
import os
import re
import shutil

import keras
import numpy as np
import tensorflow as tf

from tfnode import files
from tfnode.errors import TfnodeError

KEEP = 2
_STATE = re.compile(r"state-(\d+)$")
_WEIGHTS = "weights.weights.h5"
_META = "state.json"


def states(backup_dir):
    """Complete states in ``backup_dir``, newest first: ``[(step, folder)]``."""
    if not os.path.isdir(backup_dir):
        return []
    found = []
    for entry in os.listdir(backup_dir):
        match = _STATE.match(entry)
        folder = os.path.join(backup_dir, entry)
        if match and os.path.isfile(os.path.join(folder, _META)):
            found.append((int(match.group(1)), folder))
    return sorted(found, reverse=True)


def _unsaved(trainer):
    """The variables ``save_weights`` leaves out: the seed generators' states (a
    defense's random starts, dropout), which a resumed run must continue, not restart."""
    saved = {id(w) for w in trainer.weights}
    return [v for v in trainer.variables if id(v) not in saved]


def save(trainer, backup_dir, meta):
    """Writes ``trainer``'s weights and optimizer state, the seed generators' states and
    ``meta`` as one new state."""
    step = int(meta["step"])
    # In the trainer's order: Keras names a second generator of one process otherwise.
    meta = {**meta, "variables": [v.numpy().tolist() for v in _unsaved(trainer)]}
    path = os.path.join(backup_dir, f"state-{step:09d}")
    if os.path.isdir(path):  # the same step again (an epoch end right after a step save)
        shutil.rmtree(path)
    with files.atomic_path(path) as tmp:
        os.makedirs(tmp)
        trainer.save_weights(os.path.join(tmp, _WEIGHTS))
        with open(os.path.join(tmp, _META), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
    for _, old in states(backup_dir)[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def restore(trainer, backup_dir, log=print):
    """Loads the newest state that loads into ``trainer``; returns its meta or None.

    The meta gets ``"folder"``. A state that fails to load (a disk error after its
    rename) is reported and the one before it is tried.
    """
    for step, folder in states(backup_dir):
        try:
            with open(os.path.join(folder, _META)) as f:
                meta = json.load(f)
            if trainer.optimizer is not None and not trainer.optimizer.built:
                trainer.optimizer.build(trainer.trainable_variables)
            trainer.load_weights(os.path.join(folder, _WEIGHTS))
        except (OSError, ValueError, KeyError) as err:  # h5py raises any of them
            log(f"tfnode: the resume state {folder} does not load ({err}); trying the one "
                "before it")
            continue
        if int(trainer.optimizer.iterations.numpy()) != step:
            raise TfnodeError(f"the resume state {folder} holds optimizer step "
                              f"{int(trainer.optimizer.iterations.numpy())}, not {step}; "
                              f"delete {backup_dir} to start over")
        values = meta.pop("variables", [])  # absent from states of earlier tfnode versions
        unsaved = _unsaved(trainer)
        if len(values) == len(unsaved):
            for v, value in zip(unsaved, values):
                v.assign(np.asarray(value, v.dtype))
        meta["folder"] = folder
        return meta
    return None


class Checkpointer(keras.callbacks.Callback):
    """Saves the resume state, the model's per-epoch weights, and stops on a bad loss.

    Args:
      backup_dir: where the states go (`save`).
      weights_pattern: the model's own weights at each epoch end (``{epoch:03d}`` is
        filled in), also under a defense, whose wrapper names its weights differently.
      model: the model itself (``self.model`` is the trainer, perhaps its wrapper).
      steps_per_epoch: steps of one epoch.
      every_steps: also save every this many steps (None: at epoch ends only).
      history: the epoch logs of the epochs before this run (from the restored state).
      metrics: a mid-epoch state's running metric values (the loss and accuracy sums of
        the epoch so far), set at the start of the resumed epoch so that its logs are
        those of the whole epoch, as without the interruption.
    """

    def __init__(self, backup_dir, *, weights_pattern, model, steps_per_epoch, every_steps=None,
                 history=None, metrics=None):
        super().__init__()
        self.backup_dir = backup_dir
        self.weights_pattern = weights_pattern
        self.target = model
        self.steps_per_epoch = steps_per_epoch
        self.every_steps = every_steps
        self.history = {k: list(v) for k, v in (history or {}).items()}
        self.metrics = metrics
        self.failure = None  # what went non-finite, where: "... at step S (epoch E)"
        self.note = None  # what the resumed epoch's logs cover, if not the whole epoch

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def _meta(self, epoch_done):
        meta = {"step": self._step(), "epoch": epoch_done,
                "step_in_epoch": self._step() - epoch_done * self.steps_per_epoch,
                "steps_per_epoch": self.steps_per_epoch, "history": self.history}
        if meta["step_in_epoch"]:
            meta["metrics"] = [v.numpy().tolist() for v in self.model.metrics_variables]
        return meta

    def on_epoch_begin(self, epoch, logs=None):
        # Keras resets the metrics just before this call (and has built them before
        # on_train_begin, from the first batch's spec).
        if self.metrics is not None:
            variables = self.model.metrics_variables
            if len(variables) == len(self.metrics):
                for variable, value in zip(variables, self.metrics):
                    variable.assign(value)
            else:
                self.note = (f"epoch {epoch + 1}'s logs cover only the steps after the resume "
                             f"(the saved metric state has {len(self.metrics)} values, the "
                             f"model's metrics {len(variables)})")
            self.metrics = None

    def _fail(self, what):
        # Once a step's loss is NaN or Inf the epoch's running loss stays so; the weights
        # may be non-finite now. Nothing is saved from here on.
        step = self._step()
        self.failure = f"{what} at step {step} (epoch {(step - 1) // self.steps_per_epoch + 1})"
        self.model.stop_training = True

    def _finite(self):
        """Whether every weight and optimizer variable is finite: a step with a finite
        loss can still have had a non-finite gradient, which this state must not keep."""
        for v in list(self.model.weights) + list(self.model.optimizer.variables):
            if "float" in str(v.dtype) and not bool(tf.reduce_all(tf.math.is_finite(v))):
                self._fail(f"training left a non-finite value in {v.path}")
                return False
        return True

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            self._fail(f"the training loss became {loss}")
            return
        step = self._step()
        if (self.every_steps and step % self.every_steps == 0 and step % self.steps_per_epoch
                and self._finite()):
            save(self.model, self.backup_dir, self._meta(step // self.steps_per_epoch))

    def on_epoch_end(self, epoch, logs=None):
        if self.failure or not self._finite():
            return
        if self._step() < (epoch + 1) * self.steps_per_epoch:
            # Another callback stopped training inside the epoch: a mid-epoch state, and
            # no epoch logs or epoch weights for an epoch that did not end.
            save(self.model, self.backup_dir, self._meta(epoch))
            return
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        path = self.weights_pattern.format(epoch=epoch + 1)
        with files.atomic_path(path) as tmp:
            # Keras wants the .weights.h5 suffix.
            self.target.save_weights(tmp + ".weights.h5")
            os.replace(tmp + ".weights.h5", tmp)
        save(self.model, self.backup_dir, self._meta(epoch + 1))
