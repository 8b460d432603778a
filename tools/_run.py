"""Shared app plumbing: quiet TF start-up, one-line errors with exit code 2."""

import os
import sys

# Keep TensorFlow's C++ start-up chatter (CPU feature notes) off the user's terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_main(fn):
    """Calls ``fn()``; a user error becomes ``error: <one line>`` on stderr and exit 2."""
    from absl import logging

    import tensorflow as tf

    from tfnode.errors import TfnodeError

    # TF/TFP deprecation notices and SavedModel INFO lines are not for the user.
    logging.set_verbosity(logging.ERROR)
    tf.get_logger().setLevel("ERROR")
    try:
        fn()
    except TfnodeError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
