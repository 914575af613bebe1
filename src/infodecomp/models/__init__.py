"""Models that implement the :class:`infodecomp.Denoiser` protocol."""

from .diffusers import DiffusersModel, ModelNotFoundError, PaddedPrompt
from .reference import Gaussian, GaussianMixture, example_mixture

__all__ = [
    "DiffusersModel",
    "Gaussian",
    "GaussianMixture",
    "ModelNotFoundError",
    "PaddedPrompt",
    "example_mixture",
]
