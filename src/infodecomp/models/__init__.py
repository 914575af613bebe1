"""Models that implement the :class:`infodecomp.Denoiser` protocol."""

from .reference import Gaussian, GaussianMixture, example_mixture

__all__ = ["Gaussian", "GaussianMixture", "example_mixture"]
