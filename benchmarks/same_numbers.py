"""Do two result files hold the same numbers? (A refactoring must change none.)

    python benchmarks/same_numbers.py before/metrics.json after/metrics.json
    python benchmarks/same_numbers.py before/report.json after/report.json

Flattens both JSON files to ``a.b[3].c`` paths, keeps the numeric leaves (not bools),
drops those that measure the run rather than the model (times, throughputs, paths,
versions, the flag record: ``flags``, ``record``), and prints every path whose value
differs or that only one file has. Exit status 0 only when the kept numbers are identical, bit for bit.
"""

import json
import re
import sys

# Path parts that are not results: how long, where, which code, which flags.
NOT_RESULTS = re.compile(r"time|seconds|wall|per_second|throughput|path|dir$|version|date"
                         r"|^flags$|^record$|commit|host|pid", re.IGNORECASE)


def numbers(tree, prefix=""):
    """``{path: number}`` for the numeric leaves of a JSON tree, results only."""
    if isinstance(tree, dict):
        items = [(f"{prefix}.{key}" if prefix else str(key), key, value)
                 for key, value in tree.items()]
    elif isinstance(tree, list):
        items = [(f"{prefix}[{i}]", "", value) for i, value in enumerate(tree)]
    else:
        is_number = isinstance(tree, (int, float)) and not isinstance(tree, bool)
        return {prefix: tree} if is_number else {}
    out = {}
    for path, key, value in items:
        if not NOT_RESULTS.search(str(key)):
            out.update(numbers(value, path))
    return out


def main(before_file, after_file):
    with open(before_file) as f:
        before = numbers(json.load(f))
    with open(after_file) as f:
        after = numbers(json.load(f))
    differ = [p for p in sorted(set(before) | set(after)) if before.get(p) != after.get(p)]
    for path in differ:
        print(f"{path}: {before.get(path, 'missing')} -> {after.get(path, 'missing')}")
    print(f"{len(set(before) | set(after))} numeric result fields, {len(differ)} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python benchmarks/same_numbers.py BEFORE.json AFTER.json")
    sys.exit(main(*sys.argv[1:]))
