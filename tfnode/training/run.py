"""`train`: fit a `TrainConfig` with checkpoints and exact resume, evaluate it on the
test split, export it, and record the run."""

import dataclasses
import functools
import os
import re
import time

import keras
import tensorflow as tf

from tfnode import data, errors, files, models
from tfnode.errors import ConfigError
from tfnode.exports import read as reader, write as export
from tfnode.training import (config as config_lib, defenses, regularizers, fit, loop, resume, run_dir,
                             strategies)


@dataclasses.dataclass
class _Run:
    """One training run's parts, made by the steps of `train` in turn."""
    config: config_lib.TrainConfig
    defense_options: dict | None
    regularizer_options: dict | None
    strategy: tf.distribute.Strategy
    net: keras.Model
    settings: dict
    log: callable
    worker: tuple = (0, 1, True)  # strategies.worker: (index, count, is_chief)
    guard: keras.callbacks.Callback | None = None  # the defense's epoch-end guard
    steps: int = 0
    trainer: keras.Model | None = None
    state: dict | None = None
    resumed: str = ""


def train(config, *, record=None, log=print, callbacks=(), verbose=1):
    """Trains ``config``'s model, evaluates it on the test split and exports it.

    Args:
      config: a `tfnode.training.TrainConfig`.
      record: extra settings to store in ``metrics.json`` (e.g. all flags of the app).
      log: where progress lines go.
      callbacks: extra Keras callbacks for the training loop (`tfnode.training.loop`).
      verbose: Keras progress-bar verbosity.

    Returns:
      The metrics dict that is also written to ``metrics.json`` next to the export, with
      ``export_path``.

    Raises:
      TfnodeError: bad options; ``model_dir`` holds another run; the training loss became
        NaN or Inf (the last good state is kept and named).
    """
    start = time.time()
    run = _start(config, log)
    finished = _take_over_folder(run)
    if finished is not None:
        return finished
    try:
        streams = _streams(run)
        _compile_and_restore(run, streams[0])
        history, note, fit_seconds = _fit(run, streams, callbacks, verbose)
        run.log(f"tfnode: evaluating on the {run.config.dataset} test split "
                f"(batch {run.config.eval_batch_size})")
        eval_start = time.time()
        test = loop.evaluate(run.trainer, streams[2], strategy=run.strategy)
    except _CLUSTER_ERRORS as err:
        if run.worker[1] == 1:
            raise
        raise _lost_worker(run, err) from None
    metrics = _metrics(run, test, history, timings={
        "train_seconds": fit_seconds, "eval_seconds": time.time() - eval_start},
        note=note, record=record)
    return _export(run, metrics, start)


# What a collective op raises when a worker of the cluster died (the coordination
# service's heartbeats: Unavailable), did not answer within the collective timeout
# (DeadlineExceeded), or the collectives were aborted after either (Aborted, Cancelled).
_CLUSTER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                   tf.errors.AbortedError, tf.errors.CancelledError)


def _lost_worker(run, err):
    """The one line for a run whose cluster lost a worker: what happened, and that a
    restart of every worker resumes."""
    c = run.config
    index, count, _ = run.worker
    # TF's text: "{{function_node ...}} Collective ops is aborted by: Error reported from
    # /job:worker/task:1: The following tasks are unhealthy ...", over several lines.
    cause = " ".join(re.sub(r"\{\{.*?\}\}", "", str(err.message)).split())
    cause = cause.replace("{", "(").replace("}", ")")
    cause = cause if len(cause) <= 160 else cause[:157] + "..."
    return ConfigError(None, f"worker {index} of {count}: a worker stopped or did not answer "
                             f"within {c.collective_timeout} s ({type(err).__name__}: {cause}); "
                             "restart every worker with the same flags to resume: "
                             f"{run_dir.last_good(c.model_dir)}")


def _start(config, log):
    """Checks the config, seeds, and builds the model (its option errors come before any
    folder is made or any data is read or fetched)."""
    defense_options = config_lib.check(config)
    c = config_lib.resolved(config)
    if c.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(c.seed)
    strat = strategies.get(c.strategy, collective_timeout=c.collective_timeout)
    place = strategies.worker(strat)
    if place[1] > 1:  # every worker's lines on one terminal or log collector stay apart
        log = functools.partial(_worker_log, log, f"[worker {place[0]}/{place[1]}] ")
    if c.batch_size % strat.num_replicas_in_sync:
        raise ConfigError("batch_size", f"{c.batch_size} does not split over the "
                          f"{strat.num_replicas_in_sync} replicas of {{strategy}} "
                          f"{c.strategy!r}")
    with strat.scope():  # variables in the strategy's scope (mirrored)
        net = models.get_model(c.model, dataset=c.dataset, **c.model_options)
    if c.defense:
        defenses.get(c.defense).prepare(net, defense_options, seed=c.seed)
    if c.regularizer:
        regularizers.get(c.regularizer).model_check(net)
    if place[2]:
        export.check_writable(c.export_dir)
    return _Run(c, defense_options, config_lib.regularizer_options(c), strat, net, run_dir.settings(c, defense_options), log,
                worker=place)


def _worker_log(log, prefix, message):
    log(prefix + message)


def _take_over_folder(run):
    """Clears the folder for ``overwrite``; the metrics of this run if it is finished;
    else refuses a resume with other settings and records this run's."""
    c, chief = run.config, run.worker[2]
    if c.overwrite:
        if not chief:  # it starts from scratch without reading what the chief clears
            return None
        run_dir.clear(c.model_dir)
    else:
        finished = run_dir.finished_run(c.model_dir, run_dir.export_target(c, run.settings),
                                        run.log, write=chief)
        if finished is not None:
            run.log(f"tfnode: {c.model_dir} holds this run, finished and exported to "
                    f"{finished['export_path']}; nothing to do (--overwrite trains it again)")
            return finished
    run_dir.check_resume_settings(c.model_dir, run.settings, write=chief)
    return None


def _streams(run):
    """The training stream from its start, the validation and the test batches."""
    c = run.config
    first = fit.train_stream(c, 0)
    val_ds = data.load(c.dataset, "validation", batch_size=c.eval_batch_size,
                       data_dir=c.data_dir, validation_size=c.validation_size) \
        if c.validation_size else None
    test_ds = data.load(c.dataset, "test", batch_size=c.eval_batch_size, data_dir=c.data_dir)
    run.steps = fit.steps_per_epoch(c)
    return first, val_ds, test_ds


def _compile_and_restore(run, first):
    """Compiles the trainer (a defense trains through a wrapper whose train step is the
    defense's; it shares the weights, so checkpoints, evaluation and the export are those
    of the model itself) and restores the last resume state, if any."""
    c, strat = run.config, run.strategy
    with strat.scope():
        run.trainer = run.net if c.defense is None and c.regularizer is None else (
            defenses.DefendedModel(run.net, c.defense, run.defense_options, seed=c.seed,
                                   regularizer=c.regularizer,
                                   regularizer_options=run.regularizer_options))
        fit.compile_for_training(run.trainer, c, c.epochs * run.steps)
    run_dir.refuse_old_backup(c.model_dir)
    if not (c.overwrite and not run.worker[2]):  # the chief clears it for overwrite
        with strat.scope():
            run.state = resume.restore(run.trainer, run_dir.backup_dir(c.model_dir),
                                       log=run.log)
    _check_workers_agree(run)
    if c.strategy != "default" or (run.state and run.state.get("metrics")):
        # Under a strategy, see build_for_strategy. Without one Keras builds its compiled
        # metrics only when it traces the first step, after the epoch began: a mid-epoch
        # resume needs them before, to start from the saved running sums
        # (`resume.Checkpointer.on_epoch_begin`).
        fit.build_for_strategy(run.trainer, strat, first)
    if run.state:
        s = run.state
        run.resumed = (f"step {s['step']}: {s['epoch']} epoch(s) done"
                       + (f" and {s['step_in_epoch']} step(s) of the next"
                          if s["step_in_epoch"] else ""))
        run.log(f"tfnode: resuming from {s['folder']} ({run.resumed})")


def _check_workers_agree(run):
    """Refuses a multi-worker run whose workers start from different states (a
    ``model_dir`` that is not one shared folder: a worker found no state, or another).

    Each worker sums every worker's (step, weights fingerprint) and compares the sum with
    its own times the count: integers below 2**53, so the float sums are exact.
    """
    index, count, _ = run.worker
    if count == 1:
        return
    step = int(run.trainer.optimizer.iterations.numpy())
    mark = int(reader.fingerprint(reader.weights_of(run.net))[:12], 16)
    own = tf.constant([float(step), float(mark)], tf.float64)
    strat = run.strategy
    # In a tf.function: MultiWorkerMirroredStrategy runs eager collectives slowly, and warns.
    total = tf.function(lambda: strat.reduce(tf.distribute.ReduceOp.SUM,
                                             strat.run(lambda: own), axis=None))()
    replicas = strat.num_replicas_in_sync
    if not bool(tf.reduce_all(total == own * replicas)):
        raise ConfigError("model_dir", f"worker {index} of {count} starts from step {step} "
                          "and other workers from another state: {model_dir} must be one "
                          "folder every worker sees (the workers resume from the chief's "
                          "state)")


def _fit(run, streams, callbacks, verbose):
    """Fits the rest of the run; returns ``(epoch logs, resume note, seconds)``.

    The resume state is kept until the export is written: a failure in evaluation or
    export must not lose it. User callbacks come last, so the state of an epoch is saved
    before any of them can stop training.
    """
    c, state, steps = run.config, run.state, run.steps
    first, val_ds, _ = streams
    # Every worker saves as the chief does (reading a metric or an optimizer variable may
    # be a collective op, which every worker must run alike); another worker's files go
    # to a folder of its own, removed at the end (`run_dir.writes`).
    writes = run_dir.writes(c.model_dir, run.worker[0], run.worker[2])
    checkpointer = resume.Checkpointer(
        run_dir.backup_dir(writes), weights_pattern=os.path.join(
            writes, "checkpoints", "epoch_{epoch:03d}.weights.h5"),
        model=run.net, steps_per_epoch=steps, every_steps=c.checkpoint_steps,
        history=state["history"] if state else None,
        metrics=state.get("metrics") if state else None)
    # A defense's guard first: its epoch log then enters the resume state's history.
    callbacks = [*_guard(run, val_ds, checkpointer), checkpointer,
                 keras.callbacks.TensorBoard(os.path.join(writes, "logs")), *callbacks]
    verbose = verbose if run.worker[2] else 0  # one progress bar: the chief's
    run.log(f"tfnode: training {c.model} on {c.dataset} for {c.epochs} epoch(s) of {steps} "
            f"steps, batch {c.batch_size}, {c.optimizer} lr {c.learning_rate} "
            f"({c.lr_schedule})"
            + (f", defense {c.defense} {run.defense_options}" if c.defense else ""))
    fit_start = time.time()
    epoch, done_in_epoch = divmod(state["step"] if state else 0, steps)
    common = dict(strategy=run.strategy, validation_data=val_ds, callbacks=callbacks,
                  verbose=verbose)
    try:
        if epoch < c.epochs and done_in_epoch:
            # The rest of an interrupted epoch first, then whole epochs: an epoch starts
            # at its first step, as in Keras' fit.
            loop.fit(run.trainer, fit.train_stream(c, epoch * steps + done_in_epoch),
                     initial_epoch=epoch, epochs=epoch + 1,
                     steps_per_epoch=steps - done_in_epoch, **common)
            epoch += 1
        if epoch < c.epochs and not checkpointer.failure and not run.trainer.stop_training:
            loop.fit(run.trainer, first if epoch == 0 else fit.train_stream(c, epoch * steps),
                     initial_epoch=epoch, epochs=c.epochs, steps_per_epoch=steps, **common)
    except tf.errors.OpError as err:
        failure = errors.solver_failure(err)
        if failure is None:
            raise
        raise ConfigError(None, f"{failure}. Training stopped; "
                                f"{run_dir.last_good(c.model_dir)}") from None
    if checkpointer.failure:
        raise ConfigError(None, f"{checkpointer.failure}; training stopped and nothing "
                                "after it was saved (try a lower {learning_rate}). "
                                f"{run_dir.last_good(c.model_dir)}")
    return checkpointer.history, checkpointer.note, time.time() - fit_start


def _guard(run, val_ds, checkpointer):
    """The defense's epoch-end guard (`tfnode.training.defenses.DefenseSpec.guard`) on
    the first batch of the validation split, as a list of zero or one callback."""
    c = run.config
    spec = defenses.get(c.defense) if c.defense else None
    if spec is None or not spec.guarded(run.defense_options):
        return []
    x, y = next(iter(val_ds))
    before = checkpointer.history.get(spec.guard_metric) or [None]
    run.guard = spec.guard(run.net, run.defense_options, batch=(x.numpy(), y.numpy()),
                           weights_pattern=checkpointer.weights_pattern, previous=before[-1],
                           log=run.log)
    return [run.guard]


def _metrics(run, test, history, *, timings, note, record):
    """What ``metrics.json`` records: the test split's accuracy, loss and solve
    statistics, the epoch logs, the times and the run's settings."""
    c = run.config
    return {
        "model": c.model, "dataset": c.dataset, "model_options": c.model_options,
        "defense": c.defense, "defense_options": run.defense_options,
        **regularizers.record(c.regularizer, run.regularizer_options, run.net),
        "validation": None if not c.validation_size else {
            "size": c.validation_size, "examples": f"the last {c.validation_size} of the "
                                                   f"{c.dataset} training split",
            "accuracy": float(history["val_accuracy"][-1])},
        "clean_accuracy": float(test["accuracy"]), "test_loss": float(test["loss"]),
        "mean_nfe_test": float(test["nfe"]) if "nfe" in test else None,
        # Mean accepted / rejected trial steps per solve (tfnode's adaptive loop only).
        **{f"mean_{k}_test": float(test[k]) for k in ("accepted_steps", "rejected_steps")
           if k in test},
        "train_history": history, **timings,
        # The epoch whose weights a defense's guard kept when it stopped the run (1-based).
        "stopped_by_guard_after_epoch": getattr(run.guard, "stopped_after", None),
        "eval_batch_size": c.eval_batch_size, "resumed": run.resumed or None,
        "resume_note": note, "num_params": int(run.net.count_params()),
        # Names the model wherever a path could name two (`tfnode.exports.read.fingerprint`).
        "fingerprint": reader.fingerprint(reader.weights_of(run.net)),
        "settings": {**run.settings, "data_dir": c.data_dir, "model_dir": c.model_dir},
        "record": record or {}, "versions": files.versions(),
        "op_determinism": bool(c.deterministic)}


def _export(run, metrics, start):
    """Exports the model with its metrics, records the run as finished, and says where
    everything went."""
    c = run.config
    metrics["wall_seconds"] = time.time() - start
    metrics["replicas"] = int(run.strategy.num_replicas_in_sync)
    chief = run.worker[2]
    writes = run_dir.writes(c.model_dir, run.worker[0], run.worker[2])
    path = export.export(run.net, c.export_dir if chief else os.path.join(writes, "export"),
                         c.export_name, extra_files={
                             export.METRICS: lambda p: files.write_json(p, metrics),
                             "model.keras": run.net.save})
    if not chief:  # its export was the chief's twin, for the same collective ops
        run_dir.remove_writes(writes)
        run.log(f"tfnode: test accuracy {metrics['clean_accuracy']:.4f}; the chief writes "
                "the export and the run's records")
        return {**metrics, "export_path": None}
    metrics["export_path"] = path
    run_dir.finish(c.model_dir, run_dir.export_target(c, run.settings), path)
    run.log(f"tfnode: test accuracy {metrics['clean_accuracy']:.4f}"
            + (f", mean NFE {metrics['mean_nfe_test']:.1f}" if metrics["mean_nfe_test"] else "")
            + (f" ({metrics['mean_accepted_steps_test']:.1f} accepted, "
               f"{metrics['mean_rejected_steps_test']:.1f} rejected steps)"
               if "mean_accepted_steps_test" in metrics else "")
            + f", wall time {metrics['wall_seconds'] / 60:.1f} min")
    run.log(f"tfnode: SavedModel  {path}  (saved_model_cli show --dir {path} --all)")
    run.log(f"tfnode: Keras model {os.path.join(path, 'model.keras')}")
    run.log(f"tfnode: metrics     {os.path.join(path, export.METRICS)}")
    run.log(f"tfnode: checkpoints {os.path.join(c.model_dir, 'checkpoints')}, TensorBoard "
            f"logs {os.path.join(c.model_dir, 'logs')}")
    return metrics
