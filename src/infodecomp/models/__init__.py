"""Models that implement the :class:`infodecomp.Denoiser` protocol."""

from .reference import Gaussian, GaussianMixture

__all__ = ["Gaussian", "GaussianMixture"]
