"""Training: fit with checkpoints and resume, evaluate on the test split, export, record."""

import json
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from tfnode import data, defenses, errors, export, files, models, optimizers, resume, strategies
from tfnode.errors import TfnodeError

OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("cosine", "constant", "step")


def _learning_rate(schedule, learning_rate, total_steps):
    if schedule == "constant":
        return learning_rate
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, total_steps)
    # "step": x0.1 at 50% and 75% of training, the shape of Chen et al.'s schedule.
    bounds = [max(1, total_steps // 2), max(2, (3 * total_steps) // 4)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        bounds, [learning_rate, learning_rate * 0.1, learning_rate * 0.01])


def _optimizer(name, learning_rate, weight_decay):
    if name == "adam":
        return optimizers.AdamWithL2(learning_rate, l2=weight_decay)
    return optimizers.SGDWithL2(learning_rate, momentum=0.9, l2=weight_decay)  # Chen et al.'s momentum


def compile_for_training(model, *, optimizer, learning_rate, lr_schedule, total_steps,
                         weight_decay=0.0):
    """Compiles ``model`` as every tfnode training does: cross-entropy on logits, accuracy,
    and ``optimizer`` with ``lr_schedule`` over ``total_steps`` steps."""
    model.compile(optimizer=_optimizer(optimizer, _learning_rate(
                      lr_schedule, learning_rate, total_steps), weight_decay),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])


def validate(*, model, dataset, epochs, batch_size, learning_rate, optimizer, lr_schedule,
             steps_per_epoch, checkpoint_steps, model_options, eval_batch_size=None,
             defense=None, defense_options=None, weight_decay=0.0, validation_size=0,
             strategy="default"):
    """Raises `TfnodeError` (one line) for options that cannot work, before any work.

    Returns:
      The defense's options (its published defaults for ``dataset``, then
      ``defense_options``), or None without a defense.
    """
    data.info(dataset)
    strategies.check(strategy)
    accepted = models.model_options(model)
    for key in model_options:
        if key not in accepted:
            raise TfnodeError(f"--{key} does not apply to --model={model}; it takes "
                              f"{sorted(accepted)}")
    checks = [("epochs", epochs, 1), ("batch_size", batch_size, 1)]
    checks += [(k, v, 1) for k, v in (("steps_per_epoch", steps_per_epoch),
                                      ("checkpoint_steps", checkpoint_steps),
                                      ("eval_batch_size", eval_batch_size)) if v is not None]
    for name, value, low in checks:
        if not isinstance(value, (int, np.integer)) or value < low:
            raise TfnodeError(f"--{name} must be an integer >= {low}, got {value!r}")
    if not learning_rate > 0:
        raise TfnodeError(f"--learning_rate must be > 0, got {learning_rate!r}")
    if not weight_decay >= 0:
        raise TfnodeError(f"--weight_decay must be >= 0, got {weight_decay!r}")
    if not isinstance(validation_size, (int, np.integer)) or validation_size < 0:
        raise TfnodeError(f"--validation_size must be an integer >= 0, got "
                          f"{validation_size!r}")
    if optimizer not in OPTIMIZERS:
        raise TfnodeError(f"unknown --optimizer {optimizer!r}; expected one of {OPTIMIZERS}")
    if lr_schedule not in LR_SCHEDULES:
        raise TfnodeError(f"unknown --lr_schedule {lr_schedule!r}; expected one of "
                          f"{LR_SCHEDULES}")
    if defense is None:
        if defense_options:
            raise TfnodeError("defense options were given without a defense (--defense)")
        return None
    return defenses.get(defense).options(defense_options, dataset=dataset)


def train(*, model="node", dataset="mnist", model_options=None, epochs=1, batch_size=128,
          learning_rate=1e-3, optimizer="adam", lr_schedule="cosine", weight_decay=0.0,
          seed=0, data_dir=None,
          model_dir=None, export_dir="savedmodels", export_name=None, steps_per_epoch=None,
          checkpoint_steps=None, eval_batch_size=None, defense=None, defense_options=None,
          validation_size=0, strategy="default", overwrite=False, deterministic=False,
          verbose=1, record=None, log=print, callbacks=()):
    """Trains a registered model, evaluates it on the test split and exports it.

    Args:
      model: registered model name (``tfnode.models.available()``).
      dataset: dataset name.
      model_options: options for `tfnode.models.get_model` (``rtol``, ``step_size``, ...).
      epochs: training epochs.
      batch_size: training batch size.
      learning_rate: peak learning rate.
      optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
      lr_schedule: ``"cosine"`` decay to 0, ``"constant"``, or ``"step"`` (x0.1 at 50% and
        75% of the steps).
      weight_decay: L2 weight decay added to the gradients before the update, as
        PyTorch's optimizers apply it (`tfnode.optimizers`; 0: none).
      seed: seed of weight init and shuffling.
      data_dir: see `tfnode.data.load`.
      model_dir: checkpoints (``backup/`` for resume, ``checkpoints/`` per epoch) and
        TensorBoard logs (``logs/``); default ``runs/<model>_<dataset>``.
      export_dir: SavedModel base folder; the model goes to ``<export_dir>/<name>/<v>/``.
      export_name: name of the export; default ``<model>_<dataset>``, plus
        ``_<defense>`` with a defense.
      steps_per_epoch: cut epochs short (the training data repeats).
      checkpoint_steps: also save the resume state every this many steps.
      eval_batch_size: test batch size (default: ``batch_size``). It is recorded, because an
        adaptive ODE solver's steps, and so a sample's logits, depend on its batch.
      defense: a registered defense (`tfnode.defenses.available`): ``fit`` trains with its
        train step (`tfnode.defenses.DefendedModel`). None: standard training.
      defense_options: options of ``defense`` over its published defaults for ``dataset``.
      validation_size: hold out the last this many training examples and report the
        accuracy on them after every epoch (``val_accuracy``), for choosing settings
        without the test split. 0: train on the whole training split.
      strategy: a `tfnode.strategies` name (``default``, ``mirrored``, ``tpu``;
        ``multi_worker`` is refused, see `tfnode.strategies`); ``batch_size`` is the
        global batch.
      overwrite: delete ``model_dir``'s resume state, finished record and epoch
        checkpoints and train from scratch. Without it a run resumes from its last saved
        state (`tfnode.resume`), and a finished one returns its metrics without training.
      deterministic: turn on TensorFlow's op determinism (for GPUs, whose kernels may
        reduce in any order; on CPU tfnode's training repeats bit for bit without it,
        see docs/training.md). It stays on in this process.
      verbose: Keras progress-bar verbosity.
      record: extra settings to store in ``metrics.json`` (e.g. all flags of the app).
      log: where progress lines go.
      callbacks: extra Keras callbacks for ``fit``.

    Returns:
      The metrics dict that is also written to ``metrics.json`` next to the export, with
      ``export_path``.

    Raises:
      TfnodeError: bad options; ``model_dir`` holds another run; the training loss became
        NaN or Inf (the last good state is kept and named).
    """
    start = time.time()
    model_options = dict(model_options or {})
    defense_options = validate(
        model=model, dataset=dataset, epochs=epochs, batch_size=batch_size,
        learning_rate=learning_rate, optimizer=optimizer, lr_schedule=lr_schedule,
        steps_per_epoch=steps_per_epoch, checkpoint_steps=checkpoint_steps,
        model_options=model_options, eval_batch_size=eval_batch_size, defense=defense,
        defense_options=defense_options, weight_decay=weight_decay,
        validation_size=validation_size, strategy=strategy)
    export_name = export_name or "_".join([model, dataset] + ([defense] if defense else []))
    # A defended run gets its own folders: it must not overwrite a standard run's
    # checkpoints and logs.
    model_dir = model_dir or os.path.join(
        "runs", "_".join([model, dataset] + ([defense] if defense else [])))
    eval_batch_size = eval_batch_size or batch_size

    if deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
    strat = strategies.get(strategy)
    if batch_size % strat.num_replicas_in_sync:
        raise TfnodeError(f"--batch_size {batch_size} does not split over the "
                          f"{strat.num_replicas_in_sync} replicas of --strategy={strategy}")
    # The model first: its option errors must come before any folder is made or any
    # data is read or fetched. Variables are made in the strategy's scope (mirrored).
    with strat.scope():
        net = models.get_model(model, dataset=dataset, **model_options)
    export.check_writable(export_dir)
    settings = {"model": model, "dataset": dataset, "model_options": model_options,
                "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                "optimizer": optimizer, "lr_schedule": lr_schedule,
                # None for 0, as in runs started before the option existed (resume).
                "weight_decay": weight_decay or None, "seed": seed,
                "steps_per_epoch": steps_per_epoch, "defense": defense,
                "defense_options": defense_options,
                "validation_size": validation_size or None,
                # Recorded so that a run started when the last partial batch was still
                # trained on (469 steps per epoch, not 468) is not resumed on another
                # learning-rate schedule.
                "train_batches": "full",
                # None for the default, as in runs started before the option existed.
                "strategy": None if strategy == "default" else strategy}
    backup_dir = os.path.join(model_dir, "backup")
    if overwrite:
        for name in ("backup", _SETTINGS, _FINISHED, "checkpoints"):
            target = os.path.join(model_dir, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            elif os.path.exists(target):
                os.remove(target)
    finished = _finished_run(model_dir, {**settings, "export_dir": export_dir,
                                         "export_name": export_name}, log)
    if finished is not None:
        log(f"tfnode: {model_dir} holds this run, finished and exported to "
            f"{finished['export_path']}; nothing to do (--overwrite trains it again)")
        return finished
    _check_resume_settings(model_dir, backup_dir, settings)

    def train_stream(skip):
        # Full batches only (the last partial one, 96 of MNIST's 60,000 images, different
        # ones each epoch as the data is reshuffled, is dropped): Keras then traces the
        # train step for a known batch size. With an unknown one the ODE block's
        # XLA-compiled GroupNorm and its adaptive loop took longer (benchmarks/README.md);
        # and the block compiles its solver step with XLA only for a known batch size.
        # One endless stream, so that a resumed run can skip what it has trained on.
        return data.load(dataset, "train", batch_size=batch_size, data_dir=data_dir, seed=seed,
                         repeat=True, drop_remainder=True, validation_size=validation_size,
                         whole_passes=steps_per_epoch is None, skip_batches=skip)

    first = train_stream(0)
    val_ds = data.load(dataset, "validation", batch_size=eval_batch_size, data_dir=data_dir,
                       validation_size=validation_size) if validation_size else None
    test_ds = data.load(dataset, "test", batch_size=eval_batch_size, data_dir=data_dir)

    steps = steps_per_epoch or _batches_per_pass(dataset, batch_size, validation_size, data_dir)
    # A defense trains through a wrapper whose train step is the defense's; it shares the
    # weights, so checkpoints, evaluation and the export are those of the model itself.
    with strat.scope():
        trainer = net if defense is None else defenses.DefendedModel(net, defense,
                                                                     defense_options, seed=seed)
        compile_for_training(trainer, optimizer=optimizer, learning_rate=learning_rate,
                             lr_schedule=lr_schedule, total_steps=epochs * steps,
                             weight_decay=weight_decay)

    _refuse_old_backup(backup_dir, model_dir)
    with strat.scope():
        state = resume.restore(trainer, backup_dir, log=log)
    start_step = state["step"] if state else 0
    if strategy != "default" or (state and state.get("metrics")):
        # Under a strategy, see build_for_strategy. Without one Keras builds its compiled
        # metrics only when it traces the first step, after the epoch began: a mid-epoch
        # resume needs them before, to start from the saved running sums
        # (`resume.Checkpointer.on_epoch_begin`).
        build_for_strategy(trainer, strat, first)
    resumed = ""
    if state:
        resumed = (f"step {start_step}: {state['epoch']} epoch(s) done"
                   + (f" and {state['step_in_epoch']} step(s) of the next"
                      if state["step_in_epoch"] else ""))
        log(f"tfnode: resuming from {state['folder']} ({resumed})")
    # The resume state is kept until the export is written: a failure in evaluation or
    # export must not lose it. User callbacks come last, so the state of an epoch is saved
    # before any of them can stop training.
    checkpointer = resume.Checkpointer(
        backup_dir, weights_pattern=os.path.join(model_dir, "checkpoints",
                                                 "epoch_{epoch:03d}.weights.h5"),
        model=net, steps_per_epoch=steps, every_steps=checkpoint_steps,
        history=state["history"] if state else None,
        metrics=state.get("metrics") if state else None)
    callbacks = [checkpointer, keras.callbacks.TensorBoard(os.path.join(model_dir, "logs")),
                 *callbacks]
    log(f"tfnode: training {model} on {dataset} for {epochs} epoch(s) of {steps} steps, "
        f"batch {batch_size}, {optimizer} lr {learning_rate} ({lr_schedule})"
        + (f", defense {defense} {defense_options}" if defense else ""))
    fit_start = time.time()
    epoch, done_in_epoch = divmod(start_step, steps)
    try:
        # shuffle=False: the dataset shuffles itself (seeded); Keras would only warn.
        if epoch < epochs and done_in_epoch:
            # The rest of an interrupted epoch first, then whole epochs: Keras' fit starts
            # an epoch only at its first step.
            trainer.fit(train_stream(start_step), initial_epoch=epoch, epochs=epoch + 1,
                        steps_per_epoch=steps - done_in_epoch, shuffle=False,
                        validation_data=val_ds, callbacks=callbacks, verbose=verbose)
            epoch += 1
        if epoch < epochs and not checkpointer.failure and not trainer.stop_training:
            trainer.fit(first if epoch == 0 else train_stream(epoch * steps),
                        initial_epoch=epoch, epochs=epochs, steps_per_epoch=steps,
                        shuffle=False, validation_data=val_ds, callbacks=callbacks,
                        verbose=verbose)
    except tf.errors.OpError as err:
        failure = errors.solver_failure(err)
        if failure is None:
            raise
        raise TfnodeError(f"{failure}. Training stopped; {_last_good(backup_dir)}") from None
    if checkpointer.failure:
        raise TfnodeError(f"{checkpointer.failure}; training stopped and nothing after it "
                          f"was saved (try a lower --learning_rate). {_last_good(backup_dir)}")
    history = checkpointer.history
    fit_seconds = time.time() - fit_start

    log(f"tfnode: evaluating on the {dataset} test split (batch {eval_batch_size})")
    eval_start = time.time()
    test = trainer.evaluate(test_ds, verbose=verbose, return_dict=True)
    eval_seconds = time.time() - eval_start

    metrics = {
        "model": model, "dataset": dataset, "model_options": model_options,
        "defense": defense, "defense_options": defense_options,
        "validation": None if not validation_size else {
            "size": validation_size, "examples": f"the last {validation_size} of the "
                                                 f"{dataset} training split",
            "accuracy": float(history["val_accuracy"][-1])},
        "clean_accuracy": float(test["accuracy"]), "test_loss": float(test["loss"]),
        "mean_nfe_test": float(test["nfe"]) if "nfe" in test else None,
        # Mean accepted / rejected trial steps per solve (tfnode's adaptive loop only).
        **{f"mean_{k}_test": float(test[k]) for k in ("accepted_steps", "rejected_steps")
           if k in test},
        "train_history": history,
        "train_seconds": fit_seconds, "eval_seconds": eval_seconds,
        "eval_batch_size": eval_batch_size, "resumed": resumed or None,
        "resume_note": checkpointer.note,
        "num_params": int(net.count_params()), "settings": {
            **settings, "data_dir": data_dir, "model_dir": model_dir},
        "record": record or {}, "versions": files.versions(),
        "op_determinism": bool(deterministic),
    }
    metrics["wall_seconds"] = time.time() - start
    metrics["replicas"] = int(strat.num_replicas_in_sync)
    path = export.export(net, export_dir, export_name, extra_files={
        export.METRICS: lambda p: files.write_json(p, metrics),
        "model.keras": net.save,
    })
    metrics["export_path"] = path
    # The run is complete and exported: the finished record replaces the resume state
    # (a kill between the two leaves the state; the run then evaluates and exports again).
    files.write_json(os.path.join(model_dir, _FINISHED), {
        "settings": {**settings, "export_dir": export_dir, "export_name": export_name},
        "export_path": os.path.abspath(path)})
    shutil.rmtree(backup_dir, ignore_errors=True)
    os.remove(os.path.join(model_dir, _SETTINGS))
    log(f"tfnode: test accuracy {metrics['clean_accuracy']:.4f}"
        + (f", mean NFE {metrics['mean_nfe_test']:.1f}" if metrics["mean_nfe_test"] else "")
        + (f" ({metrics['mean_accepted_steps_test']:.1f} accepted, "
           f"{metrics['mean_rejected_steps_test']:.1f} rejected steps)"
           if "mean_accepted_steps_test" in metrics else "")
        + f", wall time {metrics['wall_seconds'] / 60:.1f} min")
    log(f"tfnode: SavedModel  {path}  (saved_model_cli show --dir {path} --all)")
    log(f"tfnode: Keras model {os.path.join(path, 'model.keras')}")
    log(f"tfnode: metrics     {os.path.join(path, export.METRICS)}")
    log(f"tfnode: checkpoints {os.path.join(model_dir, 'checkpoints')}, TensorBoard logs "
        f"{os.path.join(model_dir, 'logs')}")
    return metrics


_SETTINGS = "run_settings.json"
_FINISHED = "finished.json"


def build_for_strategy(trainer, strat, dataset):
    """Builds the compiled metrics, loss and optimizer from ``dataset``'s spec, once.

    Keras 3's fit and evaluate under a tf.distribute strategy first pull a batch from the
    distributed iterator and reduce it across replicas to build them
    (``Trainer._maybe_symbolic_build``). Under MultiWorkerMirroredStrategy that reduce
    fails (keras-team/keras#20585, open since TF 2.16); under MirroredStrategy the pulled
    batch is never trained on. Only the batch's shapes and dtypes are used, so zeros of
    the dataset's spec build the same state, and the per-call build is switched off.
    """
    batch = tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), dataset.element_spec)
    with strat.scope():
        trainer._symbolic_build(data_batch=batch)
    trainer._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def _check_resume_settings(model_dir, backup_dir, settings):
    """Refuses to resume a run whose settings differ; records them for a later resume."""
    path = os.path.join(model_dir, _SETTINGS)
    if os.path.isdir(backup_dir) and os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
        differ = _differing(saved, settings)
        if differ:
            raise TfnodeError(f"--model_dir {model_dir!r} holds an unfinished run with other "
                              f"settings ({', '.join(differ)}); resume it with the same flags, "
                              "or pass another --model_dir")
    files.write_json(path, settings)


def _finished_run(model_dir, settings, log):
    """The metrics of the finished run in ``model_dir`` with these settings, else None.

    A finished run with other settings (or another export target) is replaced: its
    export stays, and the new run trains from scratch over its checkpoints and logs.
    """
    path = os.path.join(model_dir, _FINISHED)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        finished = json.load(f)
    differ = _differing(finished["settings"], settings)
    if differ:
        log(f"tfnode: {model_dir} holds a finished run with other settings "
            f"({', '.join(differ)}; exported to {finished['export_path']}); training this one "
            "from scratch there")
        os.remove(path)
        return None
    export_path = finished["export_path"]
    metrics_path = export.extra_file(export_path, export.METRICS)
    if not metrics_path:
        raise TfnodeError(f"--model_dir {model_dir!r} holds a finished run whose export "
                          f"{export_path!r} is gone; pass --overwrite to train it again")
    with open(metrics_path) as f:
        metrics = json.load(f)
    metrics["export_path"] = export_path
    return metrics


def _differing(saved, settings):
    return sorted(k for k in settings if json.dumps(saved.get(k), sort_keys=True)
                  != json.dumps(settings[k], sort_keys=True))


def _last_good(backup_dir):
    kept = resume.states(backup_dir)
    return ((f"the last good state, {kept[0][1]} (step {kept[0][0]}), is kept; a rerun "
             "resumes from it" if kept else "no state was saved before it")
            + " (other settings need --overwrite or another --model_dir)")


def _refuse_old_backup(backup_dir, model_dir):
    if (os.path.isfile(os.path.join(backup_dir, "training_metadata.json"))
            and not resume.states(backup_dir)):
        raise TfnodeError(f"--model_dir {model_dir!r} holds the resume state of an older "
                          "tfnode (Keras' BackupAndRestore), which this one does not read: "
                          "finish it with that version, or pass --overwrite to start over")


def _batches_per_pass(dataset, batch_size, validation_size, data_dir):
    """Full batches in one pass over the training split (the last partial one dropped)."""
    return data.split_size(dataset, "train", data_dir=data_dir,
                           validation_size=validation_size) // batch_size
