"""The house rules of docs/architecture.md, measured: the import contracts (import-linter),
every top-level part of tfnode on a floor, and the size and flag budgets, whose
exceptions are the rows of the table "Exceptions to the budgets" in
docs/architecture.md: a new breach fails until it is listed there with its reason, a
listed one may not grow, and a row whose breach is gone fails until it is removed."""

import ast
import configparser
import io
import os
import re
import tokenize

from importlinter import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE_LINES, FUNCTION_LINES, RUNNER_PARAMETERS = 350, 60, 5
TOTAL_FLAGS, APP_FLAGS = 50, 30
# The two entry points that take a config plus a few keyword arguments.
RUNNERS = {"tfnode/training/run.py": "train", "tfnode/evaluation/runner.py": "evaluate"}


def _path(*parts):
    return os.path.join(ROOT, *parts)


def _python_files(folder):
    for base, _, names in os.walk(_path(folder)):
        for name in sorted(names):
            if name.endswith(".py"):
                yield os.path.relpath(os.path.join(base, name), ROOT)


def code_lines(source, node):
    """Lines of code of ``node``: no blank, comment-only or docstring lines."""
    body = getattr(node, "body", [])
    doc = None
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        doc = range(body[0].lineno, body[0].end_lineno + 1)
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
            tokenize.DEDENT, tokenize.ENDMARKER}
    segment = "\n".join(source.splitlines()[node.lineno - 1:node.end_lineno])
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(segment).readline):
        if tok.type not in skip:
            lines.update(n + node.lineno - 1 for n in range(tok.start[0], tok.end[0] + 1))
    return len(lines - set(doc or ()))


def test_code_lines_counts_code_only():
    source = ('def f(a,\n      b):\n    """Doc.\n\n    More."""\n    # why\n\n'
              '    x = [1,\n         2]\n    return x\n')
    node = ast.parse(source).body[0]
    assert code_lines(source, node) == 5  # def (2 lines), x (2 lines), return


def test_the_runners_are_where_the_budget_looks():
    for rel, name in RUNNERS.items():
        tree = ast.parse(open(_path(rel)).read())
        assert any(isinstance(n, ast.FunctionDef) and n.name == name for n in tree.body), rel


def _flag_groups():
    """``{function name: (flags it defines, group functions it calls)}`` of flags/."""
    groups = {}
    for rel in _python_files("flags"):
        for node in ast.parse(open(_path(rel)).read()).body:
            if isinstance(node, ast.FunctionDef):
                groups[node.name] = _defines_and_calls(node)
    return groups


def _defines_and_calls(node):
    defined, called = set(), set()
    for call in ast.walk(node):
        if not isinstance(call, ast.Call):
            continue
        name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(
            call.func, "id", "")
        if name.startswith("DEFINE") and call.args and isinstance(call.args[0], ast.Constant):
            defined.add(call.args[0].value)
        elif name.startswith("define_"):
            called.add(name)
    return defined, called


def app_flags():
    """``{app: flag names}``: what each ``tools/<app>.py`` defines, through its groups."""
    groups = _flag_groups()

    def closure(names, seen=()):
        out = set()
        for name in names:
            if name in groups and name not in seen:
                defined, called = groups[name]
                out |= defined | closure(called, seen + (name,))
        return out
    apps = {}
    for rel in _python_files("tools"):
        if os.path.basename(rel).startswith("_"):
            continue
        defined, called = _defines_and_calls(ast.parse(open(_path(rel)).read()))
        apps[rel] = defined | closure(called)
    return apps


def measure():
    """``{(what, rule): measured}`` for every breach of the budgets."""
    breaches = {}
    for rel in _python_files("tfnode"):
        source = open(_path(rel)).read()
        lines = source.count("\n")
        if lines > MODULE_LINES:
            breaches[(rel, f"module <= {MODULE_LINES} lines")] = lines
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            count = code_lines(source, node)
            if count > FUNCTION_LINES:
                breaches[(f"{rel}:{node.name}",
                          f"function <= {FUNCTION_LINES} lines of code")] = count
            if RUNNERS.get(rel) == node.name:
                args = node.args
                params = len(args.posonlyargs + args.args + args.kwonlyargs)
                if params > RUNNER_PARAMETERS:
                    breaches[(f"{rel}:{node.name}",
                              f"parameters <= {RUNNER_PARAMETERS}")] = params
    apps = app_flags()
    total = len(set().union(*apps.values())
                | {f for defined, _ in _flag_groups().values() for f in defined})
    if total > TOTAL_FLAGS:
        breaches[("flags/ and tools/", f"flags <= {TOTAL_FLAGS}")] = total
    for rel, names in apps.items():
        if len(names) > APP_FLAGS:
            breaches[(rel, f"flags of one app <= {APP_FLAGS}")] = len(names)
    return breaches


def listed_exceptions():
    """The rows of docs/architecture.md's exceptions table: ``{(what, rule): measured}``."""
    text = open(_path("docs", "architecture.md")).read()
    section = text.split("## Exceptions to the budgets", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            assert cells[3], f"{cells[0]}: an exception needs its reason"
            rows[(cells[0].strip("`"), cells[1])] = int(cells[2])
    return rows


def test_the_budgets_hold_or_their_exceptions_are_listed():
    breaches, listed = measure(), listed_exceptions()
    new = {k: v for k, v in breaches.items() if k not in listed}
    assert not new, ("breaches not in docs/architecture.md's exceptions table (split the "
                     f"code, or list them with a reason): {new}")
    grown = {k: (v, listed[k]) for k, v in breaches.items() if v > listed[k]}
    assert not grown, f"listed exceptions that grew (measured, listed): {grown}"
    gone = [k for k in listed if k not in breaches]
    assert not gone, f"exceptions whose breach is gone: remove their rows: {gone}"


def test_the_flag_count_sees_every_app_and_group():
    apps = app_flags()
    assert {os.path.basename(p) for p in apps} >= {"train.py", "evaluate.py", "tune.py"}
    assert "model_path" in apps["tools/evaluate.py"]  # through a nested group
    assert "epochs" in apps["tools/tune.py"] and "epochs" not in apps["tools/evaluate.py"]


def _layers_contract():
    parser = configparser.ConfigParser()
    parser.read(_path("setup.cfg"))
    return [part.strip() for line in parser["importlinter:contract:floors"]["layers"].split("\n")
            for part in re.split(r"[|:]", line) if part.strip()]


def test_every_top_level_part_of_tfnode_is_on_a_floor():
    parts = {f"tfnode.{name[:-3] if name.endswith('.py') else name}"
             for name in os.listdir(_path("tfnode"))
             if (name.endswith(".py") and name != "__init__.py")
             or os.path.isfile(_path("tfnode", name, "__init__.py"))}
    assert parts == set(_layers_contract())


def test_the_import_contracts_hold():
    """import-linter's contracts in setup.cfg: the floors (no import upward, siblings on
    a floor independent) and no cycle between tfnode's modules and packages (imports
    inside functions included)."""
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        assert cli.lint_imports(config_filename="setup.cfg") == 0
    finally:
        os.chdir(cwd)
