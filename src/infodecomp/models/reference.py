"""Exact reference models: denoisers with known answers, the ground truth for the estimators.

Both models compute in float64 and return eps_hat in the dtype of the noisy input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..results import Estimate
from ..sampling import Sampling, check_sampling
from .checks import check_batch

# Log-SNR margin beyond the data's scales; the integrand decays like exp(-margin) outside it.
_MARGIN = 12.0


def _covering_range(min_var: float, max_second_moment: float) -> tuple[float, float]:
    """A log-SNR range outside which the I-MMSE integrands are negligible (~exp(-12) relative)."""
    return (-math.log(max_second_moment) - _MARGIN, -math.log(min_var) + _MARGIN)


class Gaussian:
    """A multivariate normal N(mean, cov) with its exact MMSE denoiser.

    Args:
        mean: shape ``data_shape``.
        cov: covariance over the flattened data, shape ``(d, d)``, positive definite.

    Unconditional: the only condition it accepts is ``None``.
    """

    def __init__(self, mean: Any, cov: Any) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float64)
        self.data_shape = tuple(self.mean.shape)
        d = self.mean.numel()
        self.cov = torch.as_tensor(cov, dtype=torch.float64)
        if self.cov.shape != (d, d):
            raise ValueError(f"cov must have shape ({d}, {d}), got {tuple(self.cov.shape)}")
        self.eigvals, self.eigvecs = torch.linalg.eigh(self.cov)
        if self.eigvals.min() <= 0:
            raise ValueError("cov must be positive definite")
        self.logsnr_range = _covering_range(
            self.eigvals.min().item(), self.eigvals.max().item() + self.mean.pow(2).max().item()
        )

    def __call__(self, x_noisy: torch.Tensor, logsnr: torch.Tensor, conds: Sequence[Any]):
        check_batch(x_noisy, logsnr, conds, self.data_shape)
        if any(c is not None for c in conds):
            raise ValueError("Gaussian is unconditional: its only condition is None")
        z = x_noisy.to(torch.float64).flatten(1)
        a2 = torch.sigmoid(logsnr.to(torch.float64))[:, None]
        b2 = torch.sigmoid(-logsnr.to(torch.float64))[:, None]
        # E[eps | z] = b (a^2 cov + b^2 I)^-1 (z - a mean), in the eigenbasis of cov.
        centred = (z - a2.sqrt() * self.mean.flatten()) @ self.eigvecs
        eps_hat = (b2.sqrt() * centred / (a2 * self.eigvals + b2)) @ self.eigvecs.T
        return eps_hat.view_as(x_noisy).to(x_noisy.dtype)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) in nats, shape ``(n,)`` for ``x`` of shape ``(n, *data_shape)``."""
        centred = torch.as_tensor(x, dtype=torch.float64).flatten(1) - self.mean.flatten()
        proj = centred @ self.eigvecs
        d = self.eigvals.numel()
        return -0.5 * (
            (proj**2 / self.eigvals).sum(1) + self.eigvals.log().sum() + d * math.log(2 * math.pi)
        )

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` draws, shape ``(n, *data_shape)``."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.eigvals.numel(), generator=g, dtype=torch.float64)
        x = (z * self.eigvals.sqrt()) @ self.eigvecs.T + self.mean.flatten()
        return x.view(n, *self.data_shape)


class GaussianMixture:
    """A labelled Gaussian mixture with its exact (conditional) MMSE denoiser.

    Args:
        means: component means, shape ``(K, *data_shape)``.
        variances: per-component isotropic variances ``(K,)`` or diagonal ``(K, *data_shape)``.
        weights: mixture weights ``(K,)``, normalised here; uniform if omitted.
        labels: one label per component: any comparable value, or a dict of factor values
            such as ``{"shape": "circle", "colour": "red"}``. Defaults to the component index.

    Conditions: ``None`` is the whole mixture; a dict keeps the components whose label agrees on
    every given factor (a partial assignment); any other value keeps the components with that label.
    """

    def __init__(
        self,
        means: Any,
        variances: Any,
        weights: Any | None = None,
        labels: Sequence[Any] | None = None,
    ) -> None:
        self.means = torch.as_tensor(means, dtype=torch.float64)
        k = self.means.shape[0]
        self.data_shape = tuple(self.means.shape[1:])
        var = torch.as_tensor(variances, dtype=torch.float64)
        if var.shape == (k,):
            self.isotropic = True
            var = var[:, None].expand(k, self.means[0].numel())
        elif var.shape == self.means.shape:
            self.isotropic = False
            var = var.reshape(k, -1)
        else:
            raise ValueError(
                f"variances must have shape ({k},) or {tuple(self.means.shape)}, "
                f"got {tuple(var.shape)}"
            )
        if var.min() <= 0:
            raise ValueError("variances must be positive")
        self.variances = var.contiguous()  # (K, d)
        w = (
            torch.ones(k, dtype=torch.float64)
            if weights is None
            else torch.as_tensor(weights, dtype=torch.float64)
        )
        if w.shape != (k,) or w.min() < 0 or w.sum() <= 0:
            raise ValueError(f"weights must be {k} non-negative numbers with a positive sum")
        self.log_weights = (w / w.sum()).log()
        self.labels = list(range(k)) if labels is None else list(labels)
        if len(self.labels) != k:
            raise ValueError(
                f"need one label per component: {k} components, {len(self.labels)} labels"
            )
        flat_means = self.means.flatten(1)
        self.logsnr_range = _covering_range(
            self.variances.min().item(), (self.variances + flat_means**2).max().item()
        )

    # --- conditioning -------------------------------------------------------------------------
    def components(self, cond: Any) -> torch.Tensor:
        """Indices of the components that ``cond`` keeps (see the class docstring)."""
        if cond is None:
            return torch.arange(len(self.labels))
        if isinstance(cond, dict):
            keep = [
                i
                for i, lab in enumerate(self.labels)
                if isinstance(lab, dict) and all(k in lab and lab[k] == v for k, v in cond.items())
            ]
        else:
            keep = [i for i, lab in enumerate(self.labels) if lab == cond]
        if not keep:
            raise ValueError(f"no component of the mixture matches the condition {cond!r}")
        return torch.tensor(keep)

    # --- exact quantities ---------------------------------------------------------------------
    def _component_logpdf(
        self, z: torch.Tensor, scale: torch.Tensor, noise_var: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """log N(z; scale*mu_k, scale^2 v_k + noise_var) per row and kept component, shape (n, K'),
        and the per-row, per-component total variances (n, K', 1) or (n, K', d)."""
        mu, v = self.means.flatten(1)[idx], self.variances[idx]
        d = mu.shape[1]
        s, nv = scale[:, None], noise_var[:, None]
        if self.isotropic:
            var = s**2 * v[None, :, 0] + nv  # (n, K')
            # ||z - s mu||^2 expanded so that memory stays (n, K') for many components.
            sq = (z**2).sum(1, keepdim=True) - 2 * s * (z @ mu.T) + s**2 * (mu**2).sum(1)
            logpdf = -0.5 * (sq.clamp(min=0) / var + d * torch.log(2 * math.pi * var))
            return logpdf, var.unsqueeze(-1)
        var = s[:, :, None] ** 2 * v[None] + nv[:, :, None]  # (n, K', d)
        diff = z[:, None, :] - s[:, :, None] * mu[None]
        logpdf = -0.5 * (diff**2 / var + torch.log(2 * math.pi * var)).sum(-1)
        return logpdf, var

    def log_prob(self, x: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """Exact log p(x | cond) in nats, shape ``(n,)`` for ``x`` of shape ``(n, *data_shape)``."""
        z = torch.as_tensor(x, dtype=torch.float64).flatten(1)
        idx = self.components(cond)
        ones = torch.ones(z.shape[0], dtype=torch.float64)
        logpdf, _ = self._component_logpdf(z, ones, torch.zeros_like(ones), idx)
        log_w = self.log_weights[idx] - torch.logsumexp(self.log_weights[idx], 0)
        return torch.logsumexp(logpdf + log_w, dim=1)

    def __call__(
        self, x_noisy: torch.Tensor, logsnr: torch.Tensor, conds: Sequence[Any]
    ) -> torch.Tensor:
        check_batch(x_noisy, logsnr, conds, self.data_shape)
        z = x_noisy.to(torch.float64).flatten(1)
        alpha = logsnr.to(torch.float64)
        out = torch.empty_like(z)
        done = torch.zeros(len(conds), dtype=torch.bool)
        for i, c in enumerate(conds):  # one pass per distinct condition in the batch
            if done[i]:
                continue
            rows = torch.tensor([j for j, other in enumerate(conds) if not done[j] and other == c])
            done[rows] = True
            out[rows] = self._denoise(z[rows], alpha[rows], self.components(c))
        return out.view_as(x_noisy).to(x_noisy.dtype)

    def _denoise(self, z: torch.Tensor, alpha: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        # E[eps | z] = sum_k r_k(z) b (z - a mu_k) / (a^2 v_k + b^2), responsibilities in log space
        a, b2 = torch.sigmoid(alpha).sqrt(), torch.sigmoid(-alpha)
        logpdf, var = self._component_logpdf(z, a, b2, idx)
        resp = torch.softmax(logpdf + self.log_weights[idx], dim=1).unsqueeze(-1)  # (n, K', 1)
        mu = self.means.flatten(1)[idx]
        # sum_k r_k (z - a mu_k) / var_k, written so that only (n, K') arrays are formed when
        # the variances are isotropic.
        r_over_var = resp / var
        weighted = z * r_over_var.sum(1) - a[:, None] * (
            (r_over_var[..., 0] @ mu) if self.isotropic else (r_over_var * mu[None]).sum(1)
        )
        return b2.sqrt()[:, None] * weighted

    def sample(self, n: int, seed: int = 0, cond: Any = None) -> tuple[torch.Tensor, list[Any]]:
        """``n`` draws (from the mixture restricted by ``cond``) and the label of each draw's
        component: a tensor ``(n, *data_shape)`` and a list of ``n`` labels."""
        g = torch.Generator().manual_seed(seed)
        idx = self.components(cond)
        probs = self.log_weights[idx].softmax(0)
        comp = idx[torch.multinomial(probs, n, replacement=True, generator=g)]
        noise = torch.randn(n, self.means[0].numel(), generator=g, dtype=torch.float64)
        x = self.means.flatten(1)[comp] + noise * self.variances[comp].sqrt()
        return x.view(n, *self.data_shape), [self.labels[k] for k in comp.tolist()]

    def mutual_info(
        self,
        factor: str | None = None,
        given: str | Sequence[str] | None = None,
        n_samples: int = 20000,
        seed: int = 0,
    ) -> Estimate:
        """The exact I(X; Y | G) in nats by an independent route: Monte Carlo over joint draws
        of E[log p(x | y, g) - log p(x | g)] = H(Y | G) - H(Y | X, G), with its standard error.

        Args:
            factor: the factor Y of dict labels; ``None`` means the whole label.
            given: factor name(s) G to condition on, or ``None``.
        """
        given = [given] if isinstance(given, str) else list(given or [])
        x, labels = self.sample(n_samples, seed)

        def restrict(label: Any, names: list[str]) -> Any:
            return {k: label[k] for k in names} if names else None

        full = [label if factor is None else restrict(label, [factor, *given]) for label in labels]
        ctx = [restrict(label, given) for label in labels]
        ratio = torch.empty(n_samples, dtype=torch.float64)
        todo = torch.ones(n_samples, dtype=torch.bool)
        for i in range(n_samples):  # one exact evaluation per distinct (y, g) pair
            if not todo[i]:
                continue
            rows = torch.tensor(
                [j for j in range(n_samples) if todo[j] and full[j] == full[i] and ctx[j] == ctx[i]]
            )
            todo[rows] = False
            ratio[rows] = self.log_prob(x[rows], full[i]) - self.log_prob(x[rows], ctx[i])
        return Estimate(
            quantity="exact_mutual_info",
            value=ratio.mean().reshape(1),
            stderr=(ratio.std() / math.sqrt(n_samples)).reshape(1),
            n_evaluations=0,
            seed=seed,
            settings={
                "method": "monte_carlo_log_ratio",
                "factor": factor,
                "given": given,
                "n_samples": n_samples,
                "data_dims": self.means[0].numel(),
            },
        )


def example_mixture(variance: float = 0.3) -> GaussianMixture:
    """A small labelled world with known answers: six components in 8 dimensions, labelled by
    ``{"shape": circle|square, "colour": red|blue|green}``. Shape lives in coordinates 0-3, colour
    in 4-6 (one coordinate per colour), and coordinate 7 carries nothing."""
    colours = ["red", "blue", "green"]
    labels = [{"shape": s, "colour": c} for s in ["circle", "square"] for c in colours]
    means = torch.zeros(len(labels), 8, dtype=torch.float64)
    for k, lab in enumerate(labels):
        sign = 1.0 if lab["shape"] == "circle" else -1.0
        means[k, :4] = sign * torch.tensor([1.0, -1.0, 1.0, -1.0])
        means[k, 4 + colours.index(lab["colour"])] = 1.5
    return GaussianMixture(means, torch.full((len(labels),), variance), labels=labels)


@dataclass
class ReferenceCheck:
    """The estimators against exact answers on :func:`example_mixture`: ``rows`` of (quantity,
    estimate, pair index, exact value in nats or ``None`` where there is no pointwise target),
    and the estimates by name (``"nll"``, ``"standard"``, ``"orthogonal"``)."""

    label: dict[str, str]
    rows: list[tuple[str, Estimate, int, float | None]]
    estimates: dict[str, Estimate]


def reference_check(sampling: Sampling | None = None, progress: bool = True) -> ReferenceCheck:
    """Draw x from :func:`example_mixture` (with the sampling's seed) and estimate -log p(x),
    -log p(x | label), i(x; label) and i(x; colour | shape) with both estimators, beside the
    exact values. The information pairs share one pass of denoiser calls."""
    from ..estimators import conditional_mutual_info, log_likelihood

    sampling = check_sampling(sampling)
    model = example_mixture()
    x, (label,) = model.sample(1, seed=sampling.seed)
    shape_only = {"shape": label["shape"]}
    nll = log_likelihood(model, x, [None, label], sampling=sampling, progress=progress)
    # The label against nothing, and colour given shape: two pairs on shared draws.
    info = conditional_mutual_info(
        model,
        x,
        [label, label],
        [None, shape_only],
        estimator=("standard", "orthogonal"),
        sampling=sampling,
        progress=progress,
    )
    exact_logp = [model.log_prob(x, c).item() for c in (None, label, shape_only)]
    rows = [
        ("-log p(x)", nll, 0, -exact_logp[0]),
        ("-log p(x | label)", nll, 1, -exact_logp[1]),
        ("i^s(x; label)", info["standard"], 0, exact_logp[1] - exact_logp[0]),
        ("i^s(x; colour | shape)", info["standard"], 1, exact_logp[1] - exact_logp[2]),
        ("i^o(x; label)", info["orthogonal"], 0, None),
        ("i^o(x; colour | shape)", info["orthogonal"], 1, None),
    ]
    return ReferenceCheck(label, rows, {"nll": nll, **info})
