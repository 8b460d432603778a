"""Files tfnode writes: always atomically (temp file in the same folder, then rename)."""

import contextlib
import json
import os
import re
import shutil
import tempfile

from tfnode.errors import ConfigError
from tfnode.version import __version__


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path next to ``path``; renames it to ``path`` if the block succeeds.

    Works for files and for directories (the block creates whichever it wants). Readers
    never see a half-written ``path``: on an exception the temporary is removed and
    ``path`` is left as it was. A file replaces an older file; a directory never replaces
    anything (the rename fails if ``path`` exists), so two writers cannot clobber a
    version folder.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    remove_stale_temporaries(path)
    # A name TF Serving will not take for a version (not all digits), with the writer's
    # process id, so that the leftovers of a killed writer can be told from a live one's.
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-{os.getpid()}-", dir=parent)
    target = os.path.join(tmp, "out")
    try:
        yield target
        if os.path.isdir(target) and os.path.lexists(path):
            raise FileExistsError(f"{path} exists already")
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temporaries(path):
    """Removes what killed writers of ``path`` left beside it (their temporaries).

    A writer killed with SIGKILL cannot clean up: its temporary ``.<name>.tmp-<pid>-*``
    stays (never ``path`` itself, which is only ever renamed into place). One is stale
    when its process is gone; a live writer's is left alone. Process ids are those of
    this machine: on a folder shared between machines a foreign writer's temporary can
    look stale, so such a folder should have one writer per path.
    """
    parent, name = os.path.split(os.path.abspath(path))
    pattern = re.compile(re.escape(f".{name}.tmp-") + r"(\d+)-")
    try:
        entries = os.listdir(parent)
    except OSError:
        return
    for entry in entries:
        match = pattern.match(entry)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def _alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def check_writable(folder, *, field):
    """Raises `ConfigError` naming the config's ``field`` unless ``folder`` exists or can
    be made, writable."""
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write-probe-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as err:
        raise ConfigError(field, f"{folder!r} is not writable ({err.strerror or err})") from None


def write_json(path, obj):
    """Writes ``obj`` as indented JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=_jsonable)
            f.write("\n")


def write_text(path, text):
    """Writes ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def _jsonable(obj):
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    return str(obj)


def versions():
    """Versions of the packages a result depends on, for the record."""
    import platform

    import keras
    import numpy as np
    import tensorflow as tf
    import tensorflow_probability as tfp

    return {"tfnode": __version__, "tensorflow": tf.__version__,
            "keras": keras.__version__, "tensorflow_probability": tfp.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "machine": f"{platform.machine()} {os.cpu_count()} cpus"}


def saved_settings_differ(path, settings):
    """`differing_settings` of the settings saved as JSON at ``path`` (none saved: [])."""
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return differing_settings(json.load(f), settings)


def differing_settings(saved, settings, *, ignore=()):
    """The keys of either whose value differs between ``saved`` and ``settings``, sorted: the one
    "refuse a folder whose saved settings differ" check (training runs, evaluation
    progress, sweeps, shards). Values compare as JSON (a tuple equals its list; a key
    ``saved`` lacks compares as None, i.e. as settings recorded before it existed, and
    so does an empty list or mapping: a setting added with an empty default, such as
    ``solver_options``, leaves older runs' folders and shards comparable).
    """
    def norm(value):
        if isinstance(value, (dict, list, tuple)) and not value:
            value = None
        return json.dumps(value, sort_keys=True, default=str)
    return sorted(k for k in set(settings) | set(saved) if k not in ignore
                  and norm(saved.get(k)) != norm(settings.get(k)))
