"""This process's place in a ``TF_CONFIG`` cluster: the one reading of ``TF_CONFIG``,
shared by training (`tfnode.training.strategies`) and the evaluation's shards.

``TF_CONFIG`` is the JSON TensorFlow's multi-worker strategies read: ``{"cluster":
{"chief": [...], "worker": ["host:port", ...]}, "task": {"type": "worker", "index":
i}}`` (docs/scaling.md).
"""

import json
import os
import socket

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


def local_tf_configs(count):
    """``TF_CONFIG`` values for ``count`` worker processes on this machine, worker i's at
    index i, on ports free when called (to start local workers, as docs/scaling.md does
    by hand and the tests and benchmarks do in code)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        hosts = [f"localhost:{s.getsockname()[1]}" for s in sockets]
    finally:
        for s in sockets:
            s.close()
    return [json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}})
            for i in range(count)]
