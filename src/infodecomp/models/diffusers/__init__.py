"""Diffusers text-to-image pipelines (SD 1.x / 2.x / XL, SD3 / 3.5, Flux) as denoisers."""

from .load import ModelNotFoundError, load_pipeline
from .model import DiffusersModel, distillation
from .schedules import FlowSchedule, VPSchedule
from .text import PaddedPrompt

__all__ = [
    "DiffusersModel",
    "FlowSchedule",
    "ModelNotFoundError",
    "PaddedPrompt",
    "VPSchedule",
    "distillation",
    "load_pipeline",
]
