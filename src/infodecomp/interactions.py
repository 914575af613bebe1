"""How two words share what they tell about an image: interaction information, with maps that
add up, and DiffusionPID's redundancy, unique and synergistic atoms (all in nats).

For two parts w1, w2 of a condition and the rest r (the condition without both), on one set of
shared draws:

    i1  = i(x; w1 | r)        = log p(x | r + w1) - log p(x | r)
    i2  = i(x; w2 | r)        = log p(x | r + w2) - log p(x | r)
    i12 = i(x; w1, w2 | r)    = log p(x | r + w1 + w2) - log p(x | r)
    ii  = i(x; w1; w2 | r)    = i1 + i2 - i12     (> 0: redundant, < 0: synergistic)
    i(x; w1 | r + w2) = i12 - i2,  i(x; w2 | r + w1) = i12 - i1   (each word's CMI given the other)

Each is a linear combination of integrands evaluated on the same draws, so each has an exact
per-pixel map that sums to it, and a standard error and interval that account for the
correlation of its terms (``estimators._estimate``'s ``combine``). With ``estimator="standard"``
every value targets this image's log-probability combination; the orthogonal estimator's terms
agree with it only on average over images (for one image they are not log-ratios), so its
interaction information is an average-over-data quantity.

DiffusionPID (Dewan et al., NeurIPS 2024, arXiv 2406.05191) splits i12 into redundancy
R = min(i1, i2), unique U1 = i1 - R and U2 = i2 - R, and synergy S = i12 - U1 - U2 - R; image
atoms from the image's informations, pixel atoms from each pixel's. A minimum is not linear:
pixel atoms do not sum to the image's (the pixels' minima sum to at most the image's minimum)
and the plug-in minimum is biased low where i1 ~ i2. Each atom is a monotone function of linear
quantities (R = min(i1, i2), U1 = max(0, i1 - i2), S = min(i12 - i1, i12 - i2)), so its interval
is theirs carried through (:func:`pid_atoms`; no resampling): as good as the linear quantities'.
Measured (benchmarks/interaction_coverage.py, 256 draws): on the exact plain world (136 pairs)
96.3% redundancy, 98.5% / 97.1% unique, 96.3% synergy (a percentile bootstrap over the draws
covered 88%); on the two-factor mixture 93-100%; on the correlated world 83.9% redundancy and
73.2% synergy, whose linear terms cover 79-92% there (small informations carried by rare
posterior switches: heavy-tailed draws). The interaction information and the difference are
contrasts: symmetric intervals (94.9% and 95.6% on the plain world). Note S - R = -ii: the
atoms carry the interaction information and one more number, the minimum.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .estimators import ESTIMATORS, _broadcast_pairs, _estimate
from .files import write_atomic
from .images import prepare_image
from .interaction_terms import ATOMS, CONTRASTS, DEFINITIONS, ESTIMATOR_NOTES, LINEAR
from .models.diffusers.text import PaddedPrompt
from .results import Z95, Estimate, format_entry, versions
from .sampling import Sampling, check_sampling
from .words import check_text, remove_spans, word_spans

# A pair's quantities with its two words swapped: the measured quantity each one is, and those
# that change sign (the others are symmetric: joint, interaction, redundancy, synergy).
SWAPPED = {
    "first": "second",
    "second": "first",
    "first_given_second": "second_given_first",
    "second_given_first": "first_given_second",
    "unique_first": "unique_second",
    "unique_second": "unique_first",
}
NEGATED = ("difference",)

# Two intervals that each cover with 97.5% cover together with at least 95% (Bonferroni).
BONFERRONI_Z = 2.241402727604947


def interaction_information(
    model: Any,
    x: torch.Tensor,
    joint: Any,
    first: Any,
    second: Any,
    rest: Any,
    *,
    estimator: str = "standard",
    sampling: Sampling | None = None,
    per_dim: bool = False,
    sum_channels: bool = False,
    keys: Sequence[Any] | None = None,
    atoms: bool = True,
    progress: bool = True,
) -> dict[str, Estimate]:
    """The interaction of two parts of a condition, in nats, on shared draws.

    Args:
        model: a denoiser ``model(x_noisy, logsnr, conds) -> eps_hat``.
        x: data rows, shape ``(n_x, *data_shape)``.
        joint: the condition with both parts (r + w1 + w2); ``first``: with w1 only (r + w1);
            ``second``: with w2 only; ``rest``: with neither (``None`` for the null condition).
            Each may be a list (one entry per pair of parts; the others broadcast), to measure
            many pairs on the same draws: each distinct condition is evaluated once per draw.
        estimator: ``"standard"`` (each image's log-probability combination; the default) or
            ``"orthogonal"`` (its mean over images only; see the module docstring).
        sampling, per_dim, sum_channels, keys, progress: as in
            :func:`~infodecomp.conditional_mutual_info`.
        atoms: also DiffusionPID's atoms, with intervals (and pixel atoms with ``per_dim``).

    Returns ``{name: Estimate}`` for the names of :data:`LINEAR` (value shape ``(n_x,)``, or
    ``(n_x, n_pairs)`` when a list was given; maps with ``per_dim``) and, with ``atoms``, of
    :data:`ATOMS` (``ci95`` and ``stderr`` as :func:`pid_atoms` says; with ``per_dim`` the pixel
    atoms as ``map``, with ``map_stderr`` and intervals ``map_ci95``). All share
    one set of denoiser calls: ``n_evaluations`` is that total, the same in each.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}")
    many = any(isinstance(c, list) for c in (joint, first, second, rest))
    joints, rests = _broadcast_pairs(joint, rest)
    firsts, seconds = _broadcast_pairs(first, second)
    if len(firsts) != len(joints):
        if len(firsts) == 1:
            firsts, seconds = firsts * len(joints), seconds * len(joints)
        elif len(joints) == 1:
            joints, rests = joints * len(firsts), rests * len(firsts)
        else:
            raise ValueError(
                f"condition lists differ in length ({len(joints)} and {len(firsts)} pairs)"
            )
    n_pairs = len(joints)
    # Base pairs 3p, 3p+1, 3p+2: i1, i2, i12 of pair p; then each pair's linear quantities.
    conds, contexts = [], []
    for p in range(n_pairs):
        conds += [firsts[p], seconds[p], joints[p]]
        contexts += [rests[p]] * 3
    combine = torch.zeros(len(LINEAR) * n_pairs, 3 * n_pairs, dtype=torch.float64)
    for p in range(n_pairs):
        for q, weights in enumerate(LINEAR.values()):
            combine[len(LINEAR) * p + q, 3 * p : 3 * p + 3] = torch.tensor(weights)
    sampling = check_sampling(sampling)
    est = _estimate(
        "conditional_mutual_info",
        model,
        x,
        conds,
        contexts,
        estimators=(estimator,),
        many=True,
        sampling=sampling,
        per_dim=per_dim,
        sum_channels=sum_channels,
        keys=keys,
        progress=progress,
        combine=combine,
        contrasts=[name in CONTRASTS for _ in range(n_pairs) for name in LINEAR],
    )[estimator]
    settings = est.settings | {
        "pairs": [
            {"joint": c[2], "first": c[0], "second": c[1], "rest": r[0]}
            for c, r in zip(
                _chunks(est.settings["conditions"], 3),
                _chunks(est.settings["contexts"], 3),
                strict=True,
            )
        ],
        "shared_draws": "every quantity and pair comes from the same denoiser calls",
    }
    out: dict[str, Estimate] = {}
    for q, name in enumerate(LINEAR):
        columns = [3 * n_pairs + len(LINEAR) * p + q for p in range(n_pairs)]
        out[name] = _columns(est, columns, f"interaction/{name}", settings, many)
    if atoms:
        intervals = {"interval": "carried from the linear quantities (see pid_atoms)"}
        for name, parts in pid_atoms(out).items():
            out[name] = _atom_estimate(parts, out["joint"], f"pid/{name}", settings | intervals)
    return out


def pid_atoms(linear: dict[str, Estimate]) -> dict[str, dict[str, torch.Tensor | None]]:
    """DiffusionPID's atoms from the linear quantities (estimates named as in :data:`LINEAR`,
    values of any shape, maps optional): ``value``, ``stderr``, ``ci95`` and ``map``,
    ``map_stderr``, ``map_ci95`` per atom.

    Each atom is a monotone function of linear quantities, so its interval is theirs carried
    through: unique_first = max(0, d) and unique_second = max(0, -d) with d = first - second
    (the interval of d, clipped at 0: the coverage of d's); redundancy = min(first, second) and
    synergy = min(first_given_second, second_given_first) (the mins of the ends of both
    quantities' 97.5% intervals: both cover with at least 95% probability, so the min does).
    Image intervals come from the quantities' skew-aware intervals, pixel intervals from their
    maps' standard errors. The standard error reported is that of the quantity that gives the
    plug-in value (the smaller one for a min; d for a unique part); an atom is unreliable where
    a quantity it is built on is, truncated where one is."""
    out: dict[str, dict[str, torch.Tensor | None]] = {}
    pairs = {
        "redundancy": ("first", "second"),
        "synergy": ("first_given_second", "second_given_first"),
    }
    for name, (a, b) in pairs.items():
        ea, eb = linear[a], linear[b]
        ia, ib = _interval(ea, BONFERRONI_Z), _interval(eb, BONFERRONI_Z)
        smaller = ea.value <= eb.value
        out[name] = {
            "value": torch.minimum(ea.value, eb.value),
            "stderr": torch.where(smaller, ea.stderr, eb.stderr),
            "ci95": torch.minimum(ia, ib),
            "reliable": ea.reliable & eb.reliable,
            "truncated": ea.truncated | eb.truncated,
        }
        if ea.map is not None and eb.map is not None:
            ma, mb = _map_interval(ea, BONFERRONI_Z), _map_interval(eb, BONFERRONI_Z)
            out[name] |= {
                "map": torch.minimum(ea.map, eb.map),
                "map_stderr": torch.where(ea.map <= eb.map, ea.map_stderr, eb.map_stderr),
                "map_ci95": torch.minimum(ma, mb),
            }
    d = linear["difference"]
    for name, sign in (("unique_first", 1), ("unique_second", -1)):
        interval = (sign * _interval(d, Z95)).sort(-1).values.clamp(min=0)
        out[name] = {
            "value": (sign * d.value).clamp(min=0),
            "stderr": d.stderr,
            "ci95": interval,
            "reliable": d.reliable,
            "truncated": d.truncated,
        }
        if d.map is not None:
            map_interval = (sign * _map_interval(d, Z95)).sort(-1).values.clamp(min=0)
            out[name] |= {
                "map": (sign * d.map).clamp(min=0),
                "map_stderr": d.map_stderr,
                "map_ci95": map_interval,
            }
    return {name: out[name] for name in ATOMS}


def _interval(est: Estimate, z: float) -> torch.Tensor:
    """The estimate's skew-aware 95% interval with each arm scaled to ``z`` standard errors'
    worth (the arms times z / Z95; the skew correction itself is built for 95%: inverted at
    another z near its skewness cap it diverges)."""
    value = est.value.unsqueeze(-1)
    return value + (est.ci95 - value) * (z / Z95)


def _map_interval(est: Estimate, z: float) -> torch.Tensor:
    """Each pixel's normal interval at ``z`` standard errors."""
    return torch.stack([est.map - z * est.map_stderr, est.map + z * est.map_stderr], -1)


def quantities(first: float, second: float, joint: float) -> dict[str, float]:
    """Every quantity of :data:`LINEAR` and :data:`ATOMS` from exact i(x; w1 | rest),
    i(x; w2 | rest) and i(x; w1, w2 | rest) (e.g. from a model's exact log-probabilities), nats."""
    terms = (first, second, joint)
    out = {
        name: float(sum(w * t for w, t in zip(weights, terms, strict=True)))
        for name, weights in LINEAR.items()
    }
    redundancy = min(first, second)
    unique_first, unique_second = first - redundancy, second - redundancy
    return out | {
        "redundancy": redundancy,
        "unique_first": unique_first,
        "unique_second": unique_second,
        "synergy": joint - unique_first - unique_second - redundancy,
    }


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[k : k + size] for k in range(0, len(items), size)]


def _columns(
    est: Estimate, columns: list[int], quantity: str, settings: dict[str, Any], many: bool
) -> Estimate:
    """The estimate's pairs ``columns`` (axis 1) as an estimate of their own (without the pairs
    axis unless ``many``)."""
    picked = replace(est.take_pairs(columns), quantity=quantity, settings=settings)
    if many:
        return picked
    return replace(
        picked,
        **{
            name: None if getattr(picked, name) is None else getattr(picked, name)[:, 0]
            for name in ("value", "stderr", "ci95", "reliable", "truncated", "map", "map_stderr")
        },
        diagnostics={k: v[:, 0] for k, v in picked.diagnostics.items()},
    )


def _atom_estimate(
    parts: dict[str, torch.Tensor | None], joint: Estimate, quantity: str, settings: dict[str, Any]
) -> Estimate:
    """One atom's parts (from :func:`pid_atoms`) as an estimate, with the joint term's counted
    draws and cost."""
    return Estimate(
        quantity=quantity,
        value=parts["value"],
        stderr=parts["stderr"],
        ci95=parts["ci95"],
        reliable=parts["reliable"],
        truncated=parts["truncated"],
        n_evaluations=joint.n_evaluations,
        seed=joint.seed,
        settings=settings,
        map=parts.get("map"),
        map_stderr=parts.get("map_stderr"),
        map_ci95=parts.get("map_ci95"),
        diagnostics={"draws": joint.diagnostics["draws"]},
    )


@dataclass
class Interaction:
    """How pairs of words of a prompt share what they tell about an image (nats).

    Attributes:
        prompt: the prompt.
        pairs: the pairs of words (or phrases), lower case, as asked.
        estimates: per quantity (:data:`LINEAR` and, when computed, :data:`ATOMS`) an
            :class:`~infodecomp.Estimate` with ``value`` of shape ``(1, n_pairs)`` and maps
            ``(1, n_pairs, h, w)`` at the model's input resolution, channels summed.
        image: the image as the model saw it, ``(3, H, W)`` in [-1, 1].
        model_name, model_revision: where the model came from.
        image_note: how the input was fitted to the model's size, or ``None``.
    """

    prompt: str
    pairs: list[tuple[str, str]]
    estimates: dict[str, Estimate]
    image: torch.Tensor
    model_name: str
    model_revision: str | None = None
    image_note: str | None = None

    @property
    def settings(self) -> dict[str, Any]:
        return self.estimates["joint"].settings

    @property
    def estimator(self) -> str:
        return self.settings["estimator"]

    def entry(self, pair: Sequence[str] | int = 0, quantity: str = "interaction") -> dict[str, Any]:
        """One quantity of one pair (index or words) as plain Python: value, stderr, 95%
        interval and flags (:meth:`Estimate.entry`). Words in the other order than measured
        give the pair seen from the other side: ``first`` is then the measured ``second``,
        and ``difference`` is negated (see :data:`SWAPPED`)."""
        self._estimate(quantity)
        index, swapped = self._pair(pair)
        if not swapped:
            return self._estimate(quantity).entry(0, index)
        entry = self._estimate(SWAPPED.get(quantity, quantity)).entry(0, index)
        if quantity in NEGATED:
            low, high = entry["ci95"]
            entry |= {"value": -entry["value"], "ci95": [-high, -low]}
        return entry

    def heat_map(
        self, pair: Sequence[str] | int = 0, quantity: str = "interaction"
    ) -> torch.Tensor:
        """One quantity's map for one pair, nats per model-input pixel, ``(h, w)``. The linear
        quantities' maps sum to their values; the atoms' pixel maps do not. Words in the other
        order than measured: as in :meth:`entry`."""
        self._estimate(quantity)
        index, swapped = self._pair(pair)
        est = self._estimate(SWAPPED.get(quantity, quantity) if swapped else quantity)
        if est.map is None:
            raise ValueError("maps were not computed")
        heat = est.map[0, index].float()
        return -heat if swapped and quantity in NEGATED else heat

    def to_dict(self) -> dict[str, Any]:
        pairs = []
        for p, (w1, w2) in enumerate(self.pairs):
            conditions = self.settings["pairs"][p]
            doc: dict[str, Any] = {"words": [w1, w2], "conditions": conditions}
            doc |= {name: self.entry(p, name) for name in LINEAR}
            if "redundancy" in self.estimates:
                doc["atoms"] = {name: self.entry(p, name) for name in ATOMS}
                if self.estimates["redundancy"].map is not None:
                    doc["pixel_atoms_total"] = {
                        name: self.heat_map(p, name).double().sum().item() for name in ATOMS
                    }
            pairs.append(doc)
        return {
            "model": self.model_name,
            "model_revision": self.model_revision,
            "prompt": self.prompt,
            "units": "nats",
            "definitions": DEFINITIONS,
            "estimator": self.estimator,
            "estimator_note": ESTIMATOR_NOTES[self.estimator],
            "pairs": pairs,
            "n_evaluations": self.estimates["joint"].n_evaluations,
            "seed": self.estimates["joint"].seed,
            "settings": self.settings,
            "image_note": self.image_note,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, out_dir: str | Path, fmt: str = "png") -> Path:
        """Write into ``out_dir``: ``result.json`` (every pair's quantities with intervals,
        conditions, settings, seed), ``maps.safetensors`` (every map in nats per model-input
        pixel with its standard error, the atoms' pixel intervals, and the image: :meth:`load`
        reads it all back), a figure per pair in ``fmt`` (png, pdf or svg) and the viewer
        ``report.html``; each file whole or not at all. Returns the report's path."""
        from .report.figures import interaction_figures
        from .report.viewer import interaction_html

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {"image": self.image.contiguous()}
        for name, est in self.estimates.items():
            if est.map is None:
                continue
            tensors[f"map/{name}"] = est.map[0].float().contiguous()
            tensors[f"map_stderr/{name}"] = est.map_stderr[0].float().contiguous()
            if est.map_ci95 is not None:
                tensors[f"map_ci95/{name}"] = est.map_ci95[0].float().contiguous()
        write_atomic(out / "maps.safetensors", save(tensors))
        write_atomic(out / "result.json", self.to_json() + "\n")  # after its maps
        for name, data in interaction_figures(self, fmt).items():
            write_atomic(out / name, data)
        return write_atomic(out / "report.html", interaction_html(self))

    @classmethod
    def load(cls, path: str | Path) -> Interaction:
        """The result :meth:`save` wrote into the folder ``path``."""
        folder = Path(path)
        try:
            doc = json.loads((folder / "result.json").read_text())
            tensors = load_file(str(folder / "maps.safetensors"))
            names = [*LINEAR, *(ATOMS if "atoms" in doc["pairs"][0] else ())]
            estimates = {}
            for name in names:
                entries = [
                    pair[name] if name in LINEAR else pair["atoms"][name] for pair in doc["pairs"]
                ]
                found = f"map/{name}" in tensors
                estimates[name] = Estimate(
                    quantity=f"{'interaction' if name in LINEAR else 'pid'}/{name}",
                    value=_row(entries, "value"),
                    stderr=_row(entries, "stderr"),
                    ci95=_row(entries, "ci95"),
                    reliable=_row(entries, "reliable", torch.bool),
                    truncated=_row(entries, "truncated", torch.bool),
                    n_evaluations=doc["n_evaluations"],
                    seed=doc["seed"],
                    settings=doc["settings"],
                    map=tensors[f"map/{name}"][None] if found else None,
                    map_stderr=tensors[f"map_stderr/{name}"][None] if found else None,
                    map_ci95=tensors[f"map_ci95/{name}"][None]
                    if f"map_ci95/{name}" in tensors
                    else None,
                )
        except (OSError, ValueError, SafetensorError, KeyError, TypeError, IndexError) as err:
            what = f"missing {err}" if isinstance(err, KeyError) else str(err)
            raise ValueError(f"cannot read an interaction from {str(folder)!r}: {what}") from None
        return cls(
            prompt=doc["prompt"],
            pairs=[tuple(p["words"]) for p in doc["pairs"]],
            estimates=estimates,
            image=tensors["image"],
            model_name=doc["model"],
            model_revision=doc.get("model_revision"),
            image_note=doc.get("image_note"),
        )

    def __repr__(self) -> str:
        shown = []
        for p, (w1, w2) in enumerate(self.pairs):
            e = self.entry(p, "interaction")
            shown.append(f"{w1} & {w2}: {format_entry(e, flags='short')}")
        return (
            f"Interaction({self.prompt!r}, {self.estimator}: interaction information "
            f"{'; '.join(shown)} nats; {self.estimates['joint'].n_evaluations} denoiser "
            f"evaluations, seed {self.estimates['joint'].seed})"
        )

    def _estimate(self, quantity: str) -> Estimate:
        if quantity not in self.estimates:
            raise ValueError(
                f"unknown quantity {quantity!r}; choose one of {', '.join(self.estimates)}"
            )
        return self.estimates[quantity]

    def _pair(self, pair: Sequence[str] | int) -> tuple[int, bool]:
        """The index of the measured pair, and whether its words were given the other way."""
        if isinstance(pair, int):
            if not 0 <= pair < len(self.pairs):
                raise ValueError(f"pair {pair} out of range: {len(self.pairs)} pairs")
            return pair, False
        wanted = tuple(w.strip().lower() for w in pair)
        if wanted in self.pairs:  # as measured first: a pair can be measured both ways
            return self.pairs.index(wanted), False  # type: ignore[arg-type]
        if wanted[::-1] in self.pairs:
            return self.pairs.index(wanted[::-1]), True  # type: ignore[arg-type]
        raise ValueError(
            f"pair {pair!r} was not measured (measured: "
            f"{', '.join(' & '.join(p) for p in self.pairs)})"
        )


def _row(entries: list[dict[str, Any]], key: str, dtype: Any = torch.float64) -> torch.Tensor:
    """One field of a row of entries (as :meth:`Estimate.entry` wrote them), shape (1, n)."""
    return torch.tensor([[e[key] for e in entries]], dtype=dtype)


def interaction(
    model: Any,
    image: Any,
    prompt: str,
    words: Sequence[str] | Sequence[Sequence[str]],
    *,
    estimator: str = "standard",
    sampling: Sampling | None = None,
    context: Literal["remove", "pad"] = "remove",
    atoms: bool = True,
    key: str | int | None = None,
    progress: bool = True,
    x: torch.Tensor | None = None,
) -> Interaction:
    """How two words of ``prompt`` share what they tell about ``image``: redundancy, synergy.

    For each pair (w1, w2), with rest = the prompt without both: i(x; w1 | rest),
    i(x; w2 | rest), i(x; w1, w2 | rest), the interaction information (their sum minus the
    joint: positive redundant, negative synergistic), each word given the other, and
    DiffusionPID's atoms, with maps (see the module docstring). Every pair is measured on the
    same draws; the cost is ``sampling.rows(n_conditions)`` denoiser rows, ``n_conditions``
    the distinct prompts (the prompt, and per pair the prompt without w1, without w2 and
    without both).

    Args:
        model: a text denoiser or a diffusers pipeline, as for :func:`~infodecomp.explain`.
        image: path, PIL image or ``(3, H, W)`` tensor in [-1, 1].
        prompt: the caption.
        words: one pair ``("blue", "triangle")`` or a list of pairs; each word or phrase
            counts every occurrence, or one as ``"a#2"`` (see :func:`~infodecomp.explain`).
        estimator: ``"standard"`` (this image's values; default) or ``"orthogonal"``.
        sampling: the draws (:class:`~infodecomp.Sampling`).
        context: how words are taken out: ``"remove"`` deletes them, ``"pad"`` pads their
            tokens.
        atoms: also DiffusionPID's atoms with intervals.
        key, progress, x: as for :func:`~infodecomp.explain`.
    """
    from .explanation import as_text_denoiser

    model = as_text_denoiser(model)
    pairs = word_pairs(words)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("the prompt is empty")
    prompt = check_text(prompt.strip())
    if hasattr(model, "check_prompt"):
        model.check_prompt(prompt)
    if context not in ("remove", "pad"):
        raise ValueError(f"unknown context {context!r}; choose 'remove' or 'pad'")
    conditions = [pair_conditions(prompt, w1, w2, context) for w1, w2 in pairs]
    pixels, image_note = prepare_image(image, model.image_size)
    if x is not None and (not isinstance(x, torch.Tensor) or x.ndim < 2 or len(x) != 1):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be one image's model input, (1, *data_shape), got {shape}")
    x = model.encode_image(image) if x is None else x
    estimates = interaction_information(
        model,
        x,
        [c["joint"] for c in conditions],
        [c["first"] for c in conditions],
        [c["second"] for c in conditions],
        [c["rest"] for c in conditions],
        estimator=estimator,
        sampling=sampling,
        per_dim=True,
        sum_channels=True,
        keys=None if key is None else [key],
        atoms=atoms,
        progress=progress,
    )
    described = (
        model.describe()
        if hasattr(model, "describe")
        else {"model": model.name, "model_revision": getattr(model, "revision", None)}
    )
    extra = {"context": context, "image_preparation": image_note, "versions": versions()}
    for est in estimates.values():
        est.settings = est.settings | extra | described
    return Interaction(
        prompt=prompt,
        pairs=pairs,
        estimates=estimates,
        image=pixels.cpu(),
        model_name=model.name,
        model_revision=getattr(model, "revision", None),
        image_note=image_note,
    )


def pair_conditions(
    prompt: str, first: str, second: str, context: str = "remove"
) -> dict[str, Any]:
    """The four conditions of a pair of words of ``prompt``: ``joint`` (the prompt), ``first``
    (without the second word: it keeps the first), ``second`` (without the first) and
    ``rest`` (without both); removed (``None`` when nothing is left) or padded."""
    spans_1, spans_2 = word_spans(prompt, first), word_spans(prompt, second)
    if set(spans_1) & set(spans_2) or any(a < d and c < b for a, b in spans_1 for c, d in spans_2):
        raise ValueError(f"the words {first!r} and {second!r} overlap in the prompt {prompt!r}")

    def without(spans: tuple[tuple[int, int], ...]) -> Any:
        if context == "pad":
            return PaddedPrompt(prompt, tuple(sorted(spans)))
        return remove_spans(prompt, list(spans)) or None

    return {
        "joint": prompt,
        "first": without(spans_2),
        "second": without(spans_1),
        "rest": without(spans_1 + spans_2),
    }


def word_pairs(words: Any) -> list[tuple[str, str]]:
    """``words`` as a list of pairs of lower-cased words; one line if it is not one."""
    if isinstance(words, str):
        raise TypeError(f"words must be a pair such as ('blue', 'triangle'), not a str: {words!r}")
    items = list(words)
    if len(items) == 2 and all(isinstance(w, str) for w in items):
        items = [tuple(items)]
    pairs = []
    for pair in items:
        if isinstance(pair, str) or len(pair) != 2 or not all(isinstance(w, str) for w in pair):
            raise ValueError(
                f"each pair must be two words, e.g. ('blue', 'triangle'); got {pair!r}"
            )
        w1, w2 = (w.strip().lower() for w in pair)
        if not w1 or not w2:
            raise ValueError(f"a pair holds an empty word: {pair!r}")
        if w1 == w2:
            raise ValueError(f"a pair needs two different words, got {w1!r} twice")
        pairs.append((w1, w2))
    if not pairs:
        raise ValueError("no pair of words given")
    if len(set(pairs)) != len(pairs):
        raise ValueError("a pair of words is given twice")
    return pairs
