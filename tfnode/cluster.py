"""This process's place in a ``TF_CONFIG`` cluster: the one reading of ``TF_CONFIG``,
shared by training (`tfnode.training.strategies`) and the evaluation's shards.

``TF_CONFIG`` is the JSON TensorFlow's multi-worker strategies read: ``{"cluster":
{"chief": [...], "worker": ["host:port", ...]}, "task": {"type": "worker", "index":
i}}`` (docs/scaling.md).
"""

import json
import os

from tfnode.errors import TfnodeError


def place():
    """``(index, count)``: this task's index among the cluster's chief and workers (the
    chief first, then the workers in order) and their number; None without ``TF_CONFIG``.

    Raises:
      TfnodeError: ``TF_CONFIG`` is not JSON, or names no chief or worker task of its
        cluster.
    """
    text = os.environ.get("TF_CONFIG")
    if not text:
        return None
    try:
        spec = json.loads(text)
        jobs = spec["cluster"]
        task = spec["task"]
        tasks = [("chief", i) for i in range(len(jobs.get("chief", [])))] + [
            ("worker", i) for i in range(len(jobs.get("worker", [])))]
        return tasks.index((task["type"], int(task["index"]))), len(tasks)
    except json.JSONDecodeError as err:
        raise TfnodeError(f"TF_CONFIG is not JSON ({err})") from None
    except (KeyError, TypeError, AttributeError, ValueError):
        raise TfnodeError("TF_CONFIG must be {\"cluster\": {\"worker\": [\"host:port\", "
                          "...]}, \"task\": {\"type\": \"worker\", \"index\": i}}, naming "
                          "a chief or worker task of its cluster") from None
