"""The mid-grey image: an adversarial example of every image once eps reaches 0.5.

Every image with pixels in [0, 1] lies within L-infinity distance 0.5 of the constant
image of 0.5. At eps >= 0.5 that image is therefore inside every example's ball, and the
model gives it one class ``c``: an example labelled other than ``c`` cannot be robust
there, so the true robust accuracy is at most the share of examples labelled ``c``
(about 10% on MNIST). An evaluation that reports an example of another label robust at
such an eps has attacks that missed what a constant image, found without any gradient,
achieves: the sign of gradient masking that Carlini et al. 2019 ("On Evaluating
Adversarial Robustness", Sec. 5) list as accuracy that does not fall at large budgets.
`tfnode.evaluation.checks.grey_image_bound` judges it per example.
"""

import numpy as np

from tfnode import attacks
from tfnode.evaluation import outcomes

# The pixel value of the constant image: the middle of the [0, 1] range.
PIXEL = 0.5
# Below this gap between its two largest logits the grey image's class could differ
# between the batched XLA path the attacks are judged on and this one-image call.
MIN_MARGIN = 1e-4


def measure(model, x, y):
    """The model's class of the constant image and which examples share its label.

    Args:
      model: the model under evaluation.
      x: the evaluated images (numpy, pixels in [0, 1]), for their shape and dtype.
      y: their labels.

    Returns:
      ``{"pixel": PIXEL, "label": c, "margin": m, "possible": encoded mask}``:
      ``possible`` marks the examples that may be robust at eps >= ``PIXEL`` (those
      labelled ``c``); ``m`` is the gap between the grey image's two largest logits (a
      near tie, below `MIN_MARGIN`, leaves its class to float rounding: the check then
      judges nothing).
    """
    grey = np.full((1,) + tuple(x.shape[1:]), PIXEL, dtype=x.dtype)
    # The relaxed logits_fn path, as `attacks.predict(..., xla=False)` takes it.
    logits = np.asarray(attacks.logits_fn(model)(grey))[0]
    label = int(np.argmax(logits))
    top = np.sort(logits)
    return {"pixel": PIXEL, "label": label, "margin": float(top[-1] - top[-2]),
            "possible": outcomes.encode(np.asarray(y) == label)}


def merged(results):
    """The shard results' entries joined in order (`tfnode.evaluation.shards`); None
    where a shard has none (written before it was measured) or the shards disagree on
    the class."""
    entries = [r.get("grey_image") for r in results]
    if any(e is None or (e["label"], e["pixel"]) != (entries[0]["label"], entries[0]["pixel"])
           for e in entries):
        return None  # a shard without it, or (a near tie) one that saw another class
    return {**entries[0], "margin": min(e.get("margin", np.inf) for e in entries),
            "possible": outcomes.encode(np.concatenate(
                [outcomes.decode(e["possible"]) for e in entries]))}
