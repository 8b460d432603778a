"""Shared app plumbing: a quiet TensorFlow start-up, one-line errors with exit code 2."""

import contextlib
import os
import sys

from flags import retired


@contextlib.contextmanager
def _native_stderr_silenced():
    """Sends file descriptor 2 to /dev/null inside the block (Python's and C++'s alike).

    TensorFlow 2.21 logs through absl's C++ logging before it is initialized, which
    ignores TF_CPP_MIN_LOG_LEVEL: importing it printed six lines (oneDNN notes, "Could not
    find cuda drivers", a cuInit "error" on every CPU-only machine) before an app's first
    line. Only the import and the device discovery run in here.
    """
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def parse_flags(argv):
    """absl's flag parsing, with its errors as one ``error: ...`` line and exit 2.

    absl prints ``FATAL Flags parsing error: ...`` and a hint on two lines and exits 1
    (non-numeric values, unknown flags, a flagfile that is missing or holds an unknown
    flag); positional arguments are not taken by any tfnode app.
    """
    from absl import flags

    try:
        rest = flags.FLAGS(argv)
    except flags.Error as err:
        message = " ".join(str(err).replace("ERROR:: ", "").split())
        if isinstance(err, flags.UnrecognizedFlagError):
            app = os.path.splitext(os.path.basename(argv[0]))[0]
            message = retired.hint(err.flagname, flags.FLAGS, app) or message
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    if len(rest) > 1:
        print(f"error: unexpected arguments {' '.join(rest[1:])!r}; every option is a "
              "--flag (--helpfull lists them)", file=sys.stderr)
        sys.exit(2)
    return rest


def app_run(main):
    """``absl.app.run(main)`` with `parse_flags`."""
    from absl import app

    app.run(main, flags_parser=parse_flags)


def run_main(fn, flag_names=None):
    """Starts TensorFlow quietly, calls ``fn()``; a user error becomes ``error: <one
    line>`` on stderr and exit 2.

    A `ConfigError` names a config field; the line names its flag: ``--<field>``, or
    ``--<flag_names[field]>`` where the app's flag has another name.

    ``fn`` imports what it needs from tfnode itself, so that TensorFlow is first imported
    here. With absl's ``--verbosity`` given (e.g. ``-v 0``), nothing is silenced and Python
    logging follows it.
    """
    from absl import flags, logging

    verbose = "verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present
    if not verbose:
        # TensorFlow's C++ INFO/WARNING lines after start-up (CPU feature notes) stay off
        # the user's terminal; errors still show.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with contextlib.nullcontext() if verbose else _native_stderr_silenced():
        import tensorflow as tf

        import tfnode  # noqa: F401  (keras, TFP and the layers: their native libraries)

        tf.config.list_physical_devices()  # the cuInit probe, here rather than mid-run
    from tfnode.errors import TfnodeError

    if not verbose:
        # TF/TFP deprecation notices and SavedModel INFO lines are not for the user.
        logging.set_verbosity(logging.ERROR)
        tf.get_logger().setLevel("ERROR")
    from tfnode.errors import ConfigError, solver_failure

    try:
        fn()
    except TfnodeError as err:
        # The library names a config's field; the user gave its flag (of the same name).
        text = err.flag_message(flag_names) if isinstance(err, ConfigError) else str(err)
        print(f"error: {text}", file=sys.stderr)
        sys.exit(2)
    except tf.errors.OpError as err:
        failure = solver_failure(err)  # an ODE solve that blew up: the user's settings
        if failure is None:
            raise
        print(f"error: {failure}", file=sys.stderr)
        sys.exit(2)
