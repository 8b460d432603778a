"""Model zoo: ``get_model(name, *, dataset, **options)`` builds a registered model."""

from tfnode.models import odenet, resnet, skip  # noqa: F401  (registers the models)
from tfnode.models.registry import ModelSpec, available, get_model, model_options, register, spec
from tfnode.models.solver_options import SOLVER_OPTIONS, with_solver_options

__all__ = ["SOLVER_OPTIONS", "ModelSpec", "available", "get_model", "model_options", "register",
           "spec", "with_solver_options"]
