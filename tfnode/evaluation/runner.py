"""Adversarial evaluation: the (model, attack, eps) cells, and its report.

`evaluate` loads one model (and optionally a second one to compare with, and a source
model for transfer), takes the first ``num_examples`` images of a split in a fixed order,
runs every attack (from `tfnode.attacks.registry`; with ``audit`` also the audit's, from
`tfnode.evaluation.audit.plan`: `tfnode.evaluation.plan`) at every eps in batches of ``batch_size``
(`tfnode.evaluation.batches`) under the fast or the exhaustive schedule
(`tfnode.evaluation.schedule`), and fills
``report["models"][label]["attacks"][name]["cells"][eps_key]``. Each cell keeps which
examples stayed robust (`tfnode.evaluation.outcomes`), so the per-example worst case over attacks
is computed from the cells and can be recomputed from ``report.json`` alone.
"""

import dataclasses
import os
import time

import numpy as np

from tfnode import attacks, data, files
from tfnode.evaluation import arrays as arrays_lib, cells as cells_lib, certify, checks, \
    config as config_lib, grey, measurements, outcomes, plan, progress, render, schedule, shards
from tfnode.errors import TfnodeError
from tfnode.exports import read as loading


def evaluate(config, *, record=None, log=print, verbose=1):
    """Runs the evaluation of ``config`` and writes the report; returns the report dict.

    Args:
      config: an `EvalConfig`.
      record: extra settings to store (e.g. the app's flags).
      log: where progress lines go.
      verbose: show progress bars.

    Returns:
      The report dict (also in ``report.json``), with ``"paths"`` of the files written:
      with ``merge_shards``, shard 0 returns the merged report once every shard is in.
    """
    start = time.time()
    options = config_lib.resolve_options(config)
    loaded, source, source_info = _load_models(config)
    if config.certify:
        certify.check(model for model, _ in loaded)
    output_dir = _output_dir(config, loaded[0][1])
    keep = _progress(config, output_dir, log)
    run, span = _examples(config, options, source, log, verbose, keep)
    report = _start_report(run, source_info, record, span, len(loaded))
    for index, (model, info) in enumerate(loaded):
        label = loading.model_label(info)
        while label in report["models"]:
            label += "'"
        report["models"][label] = _evaluate_model(run, model, info, label, index)
    report = _finish_report(run, report, output_dir, start)
    if config.merge_shards and config.shard_index == 0 and config.num_shards > 1:
        return shards.wait_and_merge(os.path.dirname(os.path.dirname(output_dir)),
                                     config.num_shards, log=log) or report
    return report


def _load_models(config):
    """``(loaded, source, source_info)``: ``[(model, info)]`` of the model and the
    compared one, and the source model where an attack needs it (else None, None)."""
    ds_info = data.info(config.dataset)
    loaded = []
    for path, field in ((config.model_path, "model_path"),
                        (config.compare_model_path, "compare_model_path")):
        if path:
            model, info = loading.load_model(path, field=field)
            loading.check_input_shape(info, ds_info.shape, ds_info.name, path)
            model, info = loading.resolved(model, info, _solver_options(config))
            if config.per_sample_steps:
                model, info = loading.with_per_sample_steps(model, info)
            loaded.append((model, info))
    source = source_info = None
    if config.source_model_path and (config.audit or any(
            attacks.get(n).needs_source for n in config.attacks if n in attacks.available())):
        source, source_info = loading.load_model(config.source_model_path,
                                                 field="source_model_path")
        loading.check_input_shape(source_info, ds_info.shape, ds_info.name,
                                  config.source_model_path)
    return loaded, source, source_info


def _solver_options(config):
    """The options the model is re-solved with: ``solver_options``, and per-sample steps
    off where ``per_sample_steps`` is False (a block trained with them keeps them
    otherwise, and TFP's adjoint refuses them)."""
    options = dict(config.solver_options)
    if options and not config.per_sample_steps:
        options.setdefault("per_sample_steps", False)
    return options


def _output_dir(config, info):
    """The report folder (a shard's below its run's), checked writable."""
    output_dir = config.output_dir or os.path.join(
        "reports", f"{loading.model_label(info)}_{config.dataset}")
    if config.num_shards > 1:
        output_dir = os.path.join(output_dir, "shards",
                                  f"{config.shard_index}-of-{config.num_shards}")
    files.check_writable(output_dir, field="output_dir")
    return output_dir


def _progress(config, output_dir, log):
    """The finished cells on disk (`tfnode.evaluation.progress`), keyed by the settings
    and models."""
    # merge_shards changes what shard 0 does after its cells, not a number in them. Only
    # the fields that differ from their defaults are kept: a field added to EvalConfig
    # later (at its default) leaves unfinished evaluations resumable.
    defaults = config_lib.EvalConfig(model_path="")
    settings = {k: v for k, v in dataclasses.asdict(config).items()
                if k != "merge_shards" and (k == "model_path" or v != getattr(defaults, k))}
    return progress.Progress(output_dir, {
        "config": settings, "tfnode": files.versions()["tfnode"],
        "models": [progress.model_fingerprint(p) for p in (
            config.model_path, config.compare_model_path, config.source_model_path) if p]},
        log=log)


def _examples(config, options, source, log, verbose, keep):
    """``(run, span)``: the `tfnode.evaluation.plan.Run` over this shard's examples of
    the first ``num_examples``, and ``{"start", "stop", "total"}`` of the shard."""
    images, labels = data.load_arrays(config.dataset, config.split, data_dir=config.data_dir)
    total = min(config.num_examples, len(labels))
    lo, hi = cells_lib.shard_range(total, config.num_shards, config.shard_index)
    if hi <= lo:
        raise TfnodeError(f"shard_index {config.shard_index} of num_shards "
                          f"{config.num_shards} holds no example ({total} examples)")
    run = plan.Run(config, options, images[lo:hi].astype(np.float32) / 255.0,
                   labels[lo:hi].astype(np.int64), np.arange(lo, hi, dtype=np.int64),
                   [float(e) for e in config.eps], source, log, verbose, keep)
    return run, {"start": lo, "stop": hi, "total": total}


def _start_report(run, source_info, record, span, num_models):
    """The report's settings (no model yet), logged in one line."""
    config, lo, hi = run.config, span["start"], span["stop"]
    n = hi - lo
    where = (f"the first {n}" if config.num_shards == 1 else
             f"shard {config.shard_index} of {config.num_shards} (examples {lo}..{hi - 1}) "
             f"of the first {span['total']}")
    run.log(f"tfnode: evaluating {num_models} model(s) on {where} {config.dataset} "
            f"{config.split} images, batch {config.batch_size}, {config.schedule} schedule, "
            f"attacks {', '.join(config.attacks)}, eps {', '.join(f'{e:g}' for e in run.eps)}")
    report = {"config": dataclasses.asdict(config), "dataset": config.dataset,
              "split": config.split, "num_examples": n, "batch_size": config.batch_size,
              "eps": run.eps, "eps_scale": config.eps_scale, "seed": config.seed,
              "schedule": config.schedule,
              "conventions": config_lib.conventions(config.schedule),
              "attack_options": run.options, "audit": config.audit, "models": {},
              "source_model": source_info, "record": record or {},
              "versions": files.versions()}
    if config.num_shards > 1:
        report["shard"] = {"index": config.shard_index, "count": config.num_shards, **span}
    return report


def _finish_report(run, report, output_dir, start):
    """The warnings, the files (a shard's per-example arrays too), and the progress
    folder removed."""
    report["warnings"] = [w for label, res in report["models"].items()
                          for w in checks.warnings(label, res["checks"])]
    report["wall_seconds"] = time.time() - start
    report["comparisons"] = cells_lib.comparisons(
        report["models"], [outcomes.eps_key(e) for e in run.eps])
    arrays = {label: res.pop("_arrays") for label, res in report["models"].items()}
    # Every report keeps its per-example arrays (distances, queries): a shard's merge and
    # the paired tests of `tfnode.paper` recompute from them.
    arrays_lib.save(os.path.join(output_dir, arrays_lib.FILE), arrays)
    report["paths"] = render.write_report(report, output_dir)
    run.progress.clear()
    for w in report["warnings"]:
        run.log(f"tfnode: WARNING {w}")
    run.log(f"tfnode: report {report['paths']['md']}")
    return report


def _evaluate_model(run, model, info, label, index=0):
    """One model's result: clean accuracy, probes, every job's cells, checks, verdict."""
    config, x, y = run.config, run.x, run.y
    t0 = time.time()
    correct = attacks.predict(model, x, batch_size=config.batch_size) == y
    target = schedule.Target(model, x, y, run.ids, correct, config.batch_size, config.seed,
                           config.schedule == "fast", run.log, run.verbose, label,
                           progress=run.progress, model_index=index)
    out = {"info": info, "clean_accuracy": float(correct.mean()),
           "clean_correct": outcomes.encode(correct), "clean_seconds": time.time() - t0,
           "probes": loading.probe(model, x, y, config.batch_size),
           "grey_image": grey.measure(model, x, y), "attacks": {}}
    run.log(f"tfnode: {label}: clean accuracy {out['clean_accuracy']:.4f} ({len(y)} images)")
    jobs, skipped = plan.jobs(run, model, info)
    if config.audit or skipped:
        out["audit_skipped"] = skipped
    if target.fast:  # the attacks that run on survivors come after all the others
        jobs.sort(key=lambda job: job.spec.survivors_only)
    for job in jobs:
        saved = target.restore(job, "job")
        if saved is not None:  # finished by a killed run of the same evaluation
            out["attacks"][job.name], arrays = saved
            target.arrays.update({(job.name, key): fields for key, fields in arrays.items()})
            run.log(f"tfnode: {label}: {job.name}: finished before, read back")
            continue
        out["attacks"][job.name] = schedule.run_job(target, job, out["attacks"])
        target.keep(job, "job", out["attacks"][job.name],
                   {key: fields for (name, key), fields in target.arrays.items()
                    if name == job.name})
    # report.json sorts its keys: the order the attacks ran in is kept here.
    out["attack_order"] = list(out["attacks"])
    if config.certify:
        out["certified"] = certify.certify(model, x, y, run.eps, config.batch_size)
    cells_lib.finish(out, [outcomes.eps_key(e) for e in run.eps], audit=config.audit,
                     batch_size=config.batch_size)
    out.update(measurements.measure(run, target, info))
    out["_arrays"] = target.arrays
    return out
