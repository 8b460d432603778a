"""A cell's numbers from its per-example arrays, and a model result's worst case, checks
and verdict from its cells.

Pure functions over arrays and dicts, shared by the evaluation runner
(`tfnode.evaluation.runner`) and the merge of shards (`tfnode.evaluation.shards`), which
recomputes every number of a sharded run with them: neither imports the other.
"""

from tfnode import stats
from tfnode.evaluation import audit as audit_lib, checks, outcomes


def shard_range(n, num_shards, shard_index):
    """``(start, stop)``: the contiguous slice of ``n`` examples that shard
    ``shard_index`` of ``num_shards`` evaluates (sizes differ by at most one)."""
    return n * shard_index // num_shards, n * (shard_index + 1) // num_shards


def cell(eps, correct, robust, per_example):
    """A cell's numbers from per-example arrays (a pure function: the merge of shards
    recomputes every cell with it from the shards' arrays).

    Args:
      eps: the budget.
      correct: clean-correct examples.
      robust: examples robust in this cell.
      per_example: ``own`` (examples this attack's own adversarial fooled: the distances
        are over them), ``attacked``, ``l2``, ``linf`` and optionally ``queries``,
        ``gradients`` (per example; 0 where not attacked) and ``source_correct``.
    """
    num_correct = int(correct.sum())
    fooled = correct & ~robust
    own, attacked = per_example["own"], per_example["attacked"]
    out = {"eps": eps, "robust": outcomes.encode(robust),
           "robust_accuracy": float(robust.mean()), "num_examples": int(robust.size),
           "ci95": list(stats.wilson(int(robust.sum()), robust.size)),
           "attack_success_rate": float(fooled.sum() / num_correct) if num_correct else None,
           "num_clean_correct": num_correct, "num_fooled": int(fooled.sum()),
           "attacked": int(attacked.sum()),
           "max_linf_all": float(per_example["linf"].max(initial=0.0)),
           **outcomes.norm_stats(per_example["l2"][own], per_example["linf"][own])}
    queries = per_example.get("queries")
    if queries is not None and attacked.any():
        out.update(queries_mean=float(queries[attacked].mean()),
                   queries_max=int(queries[attacked].max()))
    gradients = per_example.get("gradients")
    out["gradients"] = 0 if gradients is None else int(gradients.sum())
    source = per_example.get("source_correct")
    if source is not None and attacked.any():  # over the examples attacked at this eps
        out["source_accuracy"] = float(source[attacked].mean())
    return out


def summary(arrays, correct):
    """A distance-minimizing attack's summary from its per-example arrays (pure, like
    `cell`)."""
    found, candidates, queries = arrays["found"], arrays["candidates"], arrays["queries"]
    return {"num_clean_correct": int(correct.sum()), "attacked": int(candidates.sum()),
            "num_adversarial_found": int(found.sum()),
            "num_found_not_confirmed_in_evaluation_batches": int(arrays["not_confirmed"].sum()),
            "queries_mean": float(queries[candidates].mean()) if candidates.any() else 0.0,
            "queries_max": int(queries.max(initial=0)),
            **outcomes.norm_stats(arrays["l2"][found], arrays["linf"][found])}


def throughput(seconds, examples_x_eps, attacked):
    """An attack's time and rates: cells answered (examples x eps) and examples attacked
    per second."""
    return {"seconds": seconds, "examples_x_eps": examples_x_eps, "attacked": attacked,
            "examples_x_eps_per_second": examples_x_eps / seconds if seconds else None,
            "attacked_per_second": attacked / seconds if seconds else None}


def comparisons(models, eps_keys):
    """Every pair of models of one report, compared on the same examples: their clean
    predictions, then per attack both ran and per eps, and for the per-example worst
    case, the exact McNemar test of "robust" (`tfnode.stats.mcnemar`; ``a_only``: robust,
    or clean-correct, under the first model only).

    Args:
      models: ``report["models"]`` with their cells and worst case filled.
      eps_keys: the eps keys to compare.

    Returns:
      ``[{"a", "b", "attack", "eps", **mcnemar}]``; the clean predictions are attack
      ``"clean"`` with eps None, the worst case attack ``"worst case"``. Empty with
      fewer than two models.
    """
    labels = list(models)
    out = []
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            ra, rb = models[a], models[b]
            out.append({"a": a, "b": b, "attack": "clean", "eps": None,
                        **stats.mcnemar(outcomes.decode(ra["clean_correct"]),
                                        outcomes.decode(rb["clean_correct"]))})
            rows = [(name, ra["attacks"][name]["cells"], rb["attacks"][name]["cells"])
                    for name in outcomes.budget_attacks(ra) if name in rb["attacks"]]
            rows.append(("worst case", ra.get("worst_case") or {},
                         rb.get("worst_case") or {}))
            for name, cells_a, cells_b in rows:
                for key in eps_keys:
                    if key in cells_a and key in cells_b:
                        out.append({"a": a, "b": b, "attack": name, "eps": key,
                                    **stats.mcnemar(_robust(cells_a, key, ra),
                                                    _robust(cells_b, key, rb))})
    return out


def _robust(cells, key, result):
    """The examples robust in a cell (its mask) or in a worst-case entry (recomputed)."""
    if "robust" in cells[key]:
        return outcomes.decode(cells[key]["robust"])
    return outcomes.worst_case_mask(result, cells[key]["attacks"], key)


def finish(out, eps_keys, *, audit, batch_size):
    """Fills a model result's worst case, checks and (with ``audit``) verdict from its
    cells: shared by the evaluation and the merge of shards."""
    out["worst_case"] = outcomes.worst_case(out, eps_keys)
    out["checks"] = checks.run_all(out, eps_keys=eps_keys, batch_size=batch_size)
    if audit:
        out["verdict"] = audit_lib.verdict(out, out["checks"], eps_keys)
