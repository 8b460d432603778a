"""Writes ``node_tiny.keras`` and ``node_tiny.npz`` beside this script.

The files are a ``model.keras`` written by the current code and what it computes; the
test ``tests/test_models.py::test_a_stored_model_keras_still_loads_to_its_logits``
checks that today's code still reads them. Run it again only when the saved format changes
on purpose (and say so in the commit)::

    python tests/data/make_node_model.py

The model: a tiny ODE-Net (``node``, width 4, on MNIST's 28x28x1 input) that solves with
rk4 and a fixed step of 0.5, so its logits are a fixed sequence of float32 operations (no
adaptive step that rounding could change). ``node_tiny.npz`` holds four images in [0, 1]
(of four brightnesses) and their logits.
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repository's tfnode

import keras  # noqa: E402

from tfnode import models  # noqa: E402

OPTIONS = dict(width=4, solver="rk4", step_size=0.5)


def main():
    keras.utils.set_random_seed(0)
    model = models.get_model("node", dataset="mnist", **OPTIONS)
    # Four images of different brightness, so that their logits differ.
    brightness = np.linspace(0.25, 1.0, 4).reshape(4, 1, 1, 1)
    images = (np.random.default_rng(0).random((4, 28, 28, 1)) * brightness).astype(np.float32)
    logits = model(images).numpy()
    model.save(os.path.join(HERE, "node_tiny.keras"))
    np.savez(os.path.join(HERE, "node_tiny.npz"), images=images, logits=logits,
             options=repr(OPTIONS))
    print(logits)


if __name__ == "__main__":
    main()
