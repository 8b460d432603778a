"""Model zoo: ``get_model(name, *, dataset, **options)`` builds a registered model."""

from tfnode.models import odenet, resnet  # noqa: F401  (registers the models)
from tfnode.models.registry import available, get_model, model_options, register

__all__ = ["available", "get_model", "model_options", "register"]
