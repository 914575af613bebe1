"""The result object every estimator returns: value, standard error, provenance."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save

from .files import is_leftover, naming, remove_leftovers, temporary, write_atomic
from .sampling import precision_target

OUR_FILES = ("result.json", "maps.safetensors", "report.html")  # a result folder's files
FIGURES = (".png", ".pdf", ".svg")


def check_output_folder(
    path: str | Path, marker: str = "result.json", files: Sequence[str] | None = OUR_FILES
) -> Path:
    """``path`` if it is new, empty, or an output folder of ours: it holds ``marker`` and, for
    a folder replaced whole (``files`` given), nothing but ``files`` and figures (``None``: a
    folder written into, that may hold other files). Otherwise ``ValueError``: we never write
    into, nor replace, a folder of other files, nor the current folder. Our temporary and
    lock files (of a run that failed at once, or was killed) count as nothing."""
    path = Path(path)
    if path.resolve() in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
        raise ValueError(f"`out` {str(path)!r} is the current folder (or above it): name a new one")
    if not path.exists():
        return path
    if not path.is_dir():
        raise ValueError(f"`out` {str(path)!r} is a file, not a folder: name a new folder")
    entries = [e for e in path.iterdir() if not is_leftover(e.name)]
    ours = (
        not entries
        or (path / marker).exists()
        and (files is None or all(e.name in files or e.suffix in FIGURES for e in entries))
    )
    if not ours:
        raise ValueError(
            f"`out` {str(path)!r} exists and is not an output folder of ours (it holds other "
            "files): give a new or empty folder"
        )
    return path


@contextlib.contextmanager
def output_folder(
    path: str | Path, marker: str = "result.json", files: Sequence[str] = OUR_FILES
) -> Iterator[Path]:
    """Write a result folder whole or not at all: yields an empty temporary folder beside
    ``path``; when the block ends without error it replaces ``path`` (so no file of an earlier
    run stays, and two runs at once leave one whole result, the last to finish); on an error or
    Ctrl-C it is removed and ``path`` is left as it was. Temporary folders of ``path`` that
    killed runs left are removed.

    An existing ``path`` is replaced only if it is empty or holds an earlier result (its
    ``marker`` file, and nothing but ``files`` and figures): a folder of other files is refused
    with ``ValueError``.
    """
    path = check_output_folder(path, marker, files).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path.parent, path.name)
    tmp, old = temporary(path), temporary(path, "old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with naming(path, inside=tmp):  # an error names the file where it was going
            yield tmp
        if path.exists():
            path.rename(old)
        try:
            tmp.rename(path)
        except BaseException:  # the earlier result back in its place
            if old.exists():
                old.rename(path)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def versions() -> dict[str, str | None]:
    """Versions of the packages that produce the numbers (recorded beside them)."""
    import importlib.metadata

    out: dict[str, str | None] = {}
    for name in ("infodecomp", "torch", "diffusers", "transformers", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal: 95% intervals are +- Z95 SE


@dataclass
class Estimate:
    """An information estimate in nats, with its standard error and how it was made.

    Attributes:
        quantity: what was estimated, e.g. ``"negative_log_likelihood"``, ``"mutual_info"``,
            ``"conditional_mutual_info"``.
        value: estimates in nats, shape ``(n_x,)`` for one condition or ``(n_x, n_conditions)``
            when a list of conditions was given.
        stderr: standard error of ``value`` (same shape), from the Monte Carlo spread.
        n_evaluations: denoiser evaluations spent (one per noisy input row).
        seed: the seed that makes the numbers reproducible.
        settings: everything else that produced the numbers (estimator, sampling, log-SNR
            distribution, conditions, ...), JSON-serialisable.
        map: optional per-coordinate decomposition, shape ``value.shape + data_shape`` (or the data
            shape without its channel axis when channels were summed); sums to ``value``.
        map_stderr: standard error of each entry of ``map`` (i.i.d. formula; conservative for
            stratified sampling).
        map_ci95: 95% interval of each entry of ``map``, shape ``map.shape + (2,)``, where it is
            not ``map +- Z95 map_stderr`` (e.g. bootstrap intervals of nonlinear pixel
            quantities); else ``None``.
        ci95: 95% interval of ``value``, shape ``value.shape + (2,)`` (lower, upper); corrected
            for the skewness of the draws, so not always symmetric. Default ``value +- Z95 SE``.
        reliable: ``False`` where the value rests on a few draws (its 3 largest carry over half
            of it), so its standard error rests on them too: take more draws.
        truncated: ``True`` where the information likely extends beyond the log-SNR range by
            more than the standard error of the sampled part (the model cannot see it: the
            value rests on the extrapolated tails, ``diagnostics["outside_range"]``).
        diagnostics: per-value tensors behind those: ``draws`` (counted draws behind each
            value), ``top_share`` (of the 3 largest draws),
            ``skewness`` (of the mean, the largest among the row's conditions: the one
            ``ci95`` uses), ``outside_range`` and ``outside_range_stderr`` (nats the integrand
            extrapolates to beyond the range, already in ``value``: for information, what the
            model never saw if its range is its trained one; ``settings["tails"]`` is
            ``"added"`` for estimates that include them).
    """

    quantity: str
    value: torch.Tensor
    stderr: torch.Tensor
    n_evaluations: int
    seed: int
    settings: dict[str, Any] = field(default_factory=dict)
    map: torch.Tensor | None = None
    map_stderr: torch.Tensor | None = None
    ci95: torch.Tensor | None = None
    reliable: torch.Tensor | None = None
    truncated: torch.Tensor | None = None
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)
    map_ci95: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.ci95 is None:
            self.ci95 = torch.stack(
                [self.value - Z95 * self.stderr, self.value + Z95 * self.stderr], -1
            )
        if self.reliable is None:
            self.reliable = torch.ones(self.value.shape, dtype=torch.bool)
        if self.truncated is None:
            self.truncated = torch.zeros(self.value.shape, dtype=torch.bool)

    def entry(self, *index: int) -> dict[str, Any]:
        """One value with its uncertainty as plain Python: ``value``, ``stderr``, ``ci95``
        ``[lower, upper]``, ``reliable``, ``truncated`` (nats; index as into ``value``); with a
        precision target also ``target`` (the standard error it asked for, nats) and ``draws``
        (the counted draws it took) and ``draws_most`` (the most it could take)."""
        entry = {
            "value": self.value[index].item(),
            "stderr": self.stderr[index].item(),
            "ci95": self.ci95[index].tolist(),
            "reliable": bool(self.reliable[index]),
            "truncated": bool(self.truncated[index]),
        }
        target_se, target_rel = self.settings.get("target_se"), self.settings.get("target_rel")
        if target_se or target_rel:
            entry["target"] = precision_target(target_se, target_rel, entry["value"])
            entry["draws"] = int(self.diagnostics["draws"][index].item())
            entry["draws_most"] = self.settings["stages"]["counted_at_most"]
        return entry

    def take_pairs(self, index: Sequence[int]) -> Estimate:
        """The pairs ``index`` (axis 1 of every tensor; the conditions and contexts of its
        settings, where they list those pairs) of an estimate of several pairs."""
        index = list(index)

        def take(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[:, index]

        settings = dict(self.settings)
        for name in ("conditions", "contexts"):
            listed = settings.get(name)
            if isinstance(listed, list) and all(i < len(listed) for i in index):
                settings[name] = [listed[i] for i in index]
        return dataclasses.replace(
            self,
            value=take(self.value),
            stderr=take(self.stderr),
            ci95=take(self.ci95),
            reliable=take(self.reliable),
            truncated=take(self.truncated),
            map=take(self.map),
            map_stderr=take(self.map_stderr),
            map_ci95=take(self.map_ci95),
            settings=settings,
            diagnostics={name: take(t) for name, t in self.diagnostics.items()},
        )

    @property
    def bits_per_dim(self) -> torch.Tensor:
        """``value`` converted to bits per data dimension (meaningful for log-likelihoods)."""
        return self.value / (self.settings["data_dims"] * math.log(2.0))

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python view of everything but the maps (lists of floats, nats)."""
        return {
            "quantity": self.quantity,
            "units": "nats",
            "value": _plain(self.value),
            "stderr": _plain(self.stderr),
            "ci95": _plain(self.ci95),
            "reliable": self.reliable.tolist(),
            "truncated": self.truncated.tolist(),
            "diagnostics": {name: _plain(t) for name, t in self.diagnostics.items()},
            "n_evaluations": self.n_evaluations,
            "seed": self.seed,
            "settings": self.settings,
            "has_map": self.map is not None,
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The result (without maps) as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | Path) -> Path:
        """Write ``<path>.json`` and, if there are maps, ``<path>.safetensors`` beside it, each
        whole or not at all (:func:`~infodecomp.files.write_atomic`; maps first, so a JSON
        file always has its maps).

        Returns the path of the JSON file.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.map is not None:
            maps = {"map": self.map.contiguous(), "map_stderr": self.map_stderr.contiguous()}
            if self.map_ci95 is not None:
                maps["map_ci95"] = self.map_ci95.contiguous()
            write_atomic(path.with_suffix(".safetensors"), save(maps))
        return write_atomic(path.with_suffix(".json"), self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Estimate:
        """Read back what :meth:`save` wrote."""
        path = Path(path)
        data = json.loads(path.with_suffix(".json").read_text())
        maps = {}
        if data["has_map"]:
            maps = load_file(str(path.with_suffix(".safetensors")))
        return cls(
            quantity=data["quantity"],
            value=torch.tensor(data["value"], dtype=torch.float64),
            stderr=torch.tensor(data["stderr"], dtype=torch.float64),
            ci95=_tensor(data.get("ci95")),
            reliable=_tensor(data.get("reliable"), torch.bool),
            truncated=_tensor(data.get("truncated"), torch.bool),
            diagnostics={k: _tensor(v) for k, v in data.get("diagnostics", {}).items()},
            n_evaluations=data["n_evaluations"],
            seed=data["seed"],
            settings=data["settings"],
            map=maps.get("map"),
            map_stderr=maps.get("map_stderr"),
            map_ci95=maps.get("map_ci95"),
        )

    def __repr__(self) -> str:
        flat = list(zip(self.value.flatten().tolist(), self.stderr.flatten().tolist(), strict=True))
        shown = ", ".join(f"{v:.4g} ± {s:.2g}" for v, s in flat[:4])
        more = f", ... ({len(flat)} values)" if len(flat) > 4 else ""
        return f"Estimate({self.quantity}: [{shown}{more}] nats, {self.n_evaluations} evaluations)"


def format_entry(
    entry: dict[str, Any] | float,
    reference: float | None = None,
    flags: Literal["long", "short", "none"] = "long",
) -> str:
    """The one way a number is printed (terminal, titles, tables, reports): the value and its
    95% interval, ``"1.29 [0.96, 2.09]"``, from an :meth:`Estimate.entry` (or a plain float,
    printed alone). Digits follow the interval: its half-width to two significant digits.
    ``reference`` (e.g. the prompt's MI, nats) caps them at a ten-thousandth of it, so a value
    negligible against it prints as 0. ``flags`` adds the warnings of :func:`entry_warnings`
    (``"short"``: one word each, for titles)."""
    if not isinstance(entry, dict):
        return _format_values([float(entry)], None, reference)[0]
    low, high = entry["ci95"]
    value, low, high = _format_values([entry["value"], low, high], (high - low) / 2, reference)
    text = f"{value} [{low}, {high}]"
    if flags == "long":
        return text + "".join(f" ({w})" for w in entry_warnings(entry))
    if flags == "short":
        return text + "".join(f" ({w})" for w in entry_flags(entry))
    return text


def _format_values(
    values: list[float], half_width: float | None, reference: float | None
) -> list[str]:
    """``values`` rounded alike: to two significant digits of ``half_width`` (three of the
    largest value when there is none), at most to a ten-thousandth of ``reference``."""
    if not all(math.isfinite(v) for v in values):
        return [f"{v:.4g}" for v in values]
    size = max(abs(v) for v in values)
    if half_width is not None and half_width > 0:
        decimals = 1 - math.floor(math.log10(half_width))
    elif size > 0:
        decimals = 2 - math.floor(math.log10(size))
    else:
        decimals = 0
    if reference is not None and reference != 0 and math.isfinite(reference):
        decimals = min(decimals, 4 - math.floor(math.log10(abs(reference))))
    if decimals > 6 and size < 1e-3:  # a tiny value with no reference: scientific
        return ["0" if v == 0 else f"{v:.2g}" for v in values]
    out = []
    for v in values:
        r = round(v, decimals)
        if r == 0:
            out.append("0")
        else:
            out.append(f"{r:.{max(decimals, 0)}f}")
    return out


def entry_flags(entry: dict[str, Any]) -> list[str]:
    """The warnings of :func:`entry_warnings` in a word each ("unreliable", "truncated")."""
    return [w.split(":")[0] for w in entry_warnings(entry)]


def entry_warnings(entry: dict[str, Any]) -> list[str]:
    """Short warnings for an :meth:`Estimate.entry` (or a dict with the same keys)."""
    out = []
    if not entry.get("reliable", True):
        out.append("unreliable: rests on a few draws, take more")
    if entry.get("truncated", False):
        out.append("truncated: information likely beyond the model's log-SNR range")
    if "target" in entry and entry["stderr"] > entry["target"]:
        why = (
            "the most --samples allows"
            if entry["draws"] >= entry.get("draws_most", entry["draws"])
            else "planned too few"
        )
        out.append(
            f"imprecise: SE {entry['stderr']:.2g} above its target {entry['target']:.2g} after "
            f"{entry['draws']} counted draws, {why}"
        )
    return out


def _plain(t: torch.Tensor) -> Any:
    """Nested lists of floats, with None where the tensor is NaN (JSON has no NaN)."""
    return _nan_to_none(t.tolist())


def _nan_to_none(v: Any) -> Any:
    if isinstance(v, list):
        return [_nan_to_none(u) for u in v]
    return None if isinstance(v, float) and math.isnan(v) else v


def _tensor(data: Any, dtype: torch.dtype = torch.float64) -> torch.Tensor | None:
    """The tensor of nested lists (None read as NaN), or None."""
    return None if data is None else torch.tensor(_none_to_nan(data), dtype=dtype)


def _none_to_nan(v: Any) -> Any:
    if isinstance(v, list):
        return [_none_to_nan(u) for u in v]
    return math.nan if v is None else v
