"""The offline viewer of one explanation: ``report.html``, one self-contained file.

Everything travels inside the page: the image as PNG, every map as base64 little-endian float32
(exactly the values of ``maps.safetensors``, so a hover read-out is exact), the information
profiles over log-SNR, the colour map, and the viewer's own CSS and JavaScript
(``viewer.css``, ``format.js``, ``viewer.js`` beside this module). No network request, no library.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from ..results import Z95, entry_flags, entry_warnings, format_entry
from .pictures import colour_table, image_rgb

if TYPE_CHECKING:
    from ..explanation import Explanation
    from ..interactions import Interaction


def viewer_html(
    res: Explanation,
    figures: dict[str, bytes] | None = None,
    columns: dict[str, list[dict[str, Any] | float]] | None = None,
) -> str:
    """The interactive report of ``res`` as one HTML document (no external resource).

    Shows a word list (the whole prompt first) with each value and 95% interval; the selected
    word's maps over the image (information, attention + information and the generation's
    DAAM map when collected) with an opacity slider, a per-word/shared colour scale and a hover
    read-out (nats per model-input pixel, the pixel's share of the map's total, its standard
    error); each word's information profile over log-SNR with its 95% band; the numbers table
    (``columns`` adds columns, one :meth:`~infodecomp.results.Estimate.entry` or float per row:
    row 0 the whole prompt, then the words); ``figures`` (name: PNG bytes) in an appendix; the
    settings. Every value is printed by :func:`~infodecomp.results.format_entry` (in the page,
    by its port to JavaScript), with the prompt's MI as reference.
    """
    data = viewer_data(res)
    reference = data["reference"]
    mi_text = format_entry(res.entry(), reference=reference, flags="none")
    title = html.escape(res.prompt)
    return _PAGE.format(
        title=title,
        css=_asset("viewer.css"),
        js=_asset("format.js") + _asset("viewer.js"),
        data=_script_json(data),
        prompt=title,
        model=html.escape(res.model_name)
        + (f" @ {html.escape(res.model_revision)}" if res.model_revision else ""),
        mi=html.escape(mi_text),
        evaluations=f"{res.estimate.n_evaluations:,}",
        seed=res.estimate.seed,
        target=html.escape(_target_note(res.estimate.settings)),
        input_note=html.escape(_input_note(res)),
        table=_table(res, columns or {}, reference),
        figures=_figures(figures or {}),
        settings=html.escape(json.dumps(res.estimate.settings, indent=2, default=str)),
    )


def viewer_data(res: Explanation) -> dict[str, Any]:
    """What the page's script reads (JSON-serialisable): per row (the whole prompt, then each
    word) its label and formatted value; per kind of map (``"cmi"``, ``"attention"``,
    ``"daam"``) its maps as base64 float32 ``(h, w)`` (None where a row has none) and, for
    information, the standard-error maps; the profiles over log-SNR (nats per unit log-SNR,
    shape ``(1 + n_words, n_bins)``) with their bin edges; the image as base64 PNG."""
    est = res.estimate
    reference = est.value[0, 0].item()
    rows = []
    for k, word in enumerate([None, *res.words]):
        entry = res.entry(word)
        rows.append(
            {
                "label": "whole prompt" if word is None else word,
                "quantity": "i(x; prompt)" if word is None else f"i(x; {word} | rest)",
                "value": entry["value"],
                "text": format_entry(entry, reference=reference, flags="none"),
                "flags": entry_flags(entry),
                "warnings": entry_warnings(entry),
                "outside": _outside(est, k, reference),
                # Estimates made before the tails were added to information values lack this.
                "outsideInValue": est.settings.get("tails") == "added",
            }
        )
    n_rows = len(rows)
    kinds = [
        {
            "key": "cmi",
            "title": "information",
            "unit": "nats",
            "maps": [_floats(res.heat_map(w, upsample=False)) for w in [None, *res.words]],
            "stderr": [_floats(est.map_stderr[0, k]) for k in range(n_rows)],
            "shape": list(est.map.shape[-2:]),
        }
    ]
    for key, title, maps in (
        ("attention", "attention + information", res.attention),
        ("daam", "generation attention (DAAM)", res.generation_attention),
    ):
        if maps:
            first = next(iter(maps.values()))
            kinds.append(
                {
                    "key": key,
                    "title": title,
                    "unit": "cross-attention, a.u.",
                    "maps": [None] + [_floats(maps[w]) if w in maps else None for w in res.words],
                    "shape": list(first.shape[-2:]),
                }
            )
    edges = est.settings.get("profile_edges")
    profile = est.diagnostics.get("profile")
    return {
        "prompt": res.prompt,
        "reference": reference,
        "nonnegative": est.settings.get("estimator") == "orthogonal",
        "rows": rows,
        "kinds": kinds,
        "image": {
            "png": base64.b64encode(_png(image_rgb(res.image))).decode(),
            "shape": list(res.image.shape[-2:]),
        },
        "profile": None
        if profile is None or edges is None
        else {
            "edges": edges,
            "values": profile[0].tolist(),
            "stderr": est.diagnostics["profile_stderr"][0].tolist(),
        },
        "colormap": base64.b64encode(colour_table().tobytes()).decode(),
        "z95": Z95,
    }


def _outside(est: Any, k: int, reference: float) -> str | None:
    """The nats extrapolated beyond the log-SNR range for pair ``k`` (in its value when its
    settings say ``"tails": "added"``), with its 95% interval; None without that diagnostic."""
    if "outside_range" not in est.diagnostics:
        return None
    value = est.diagnostics["outside_range"][0, k].item()
    se = est.diagnostics.get("outside_range_stderr", torch.zeros(1, k + 1))[0, k].item()
    entry = {"value": value, "ci95": [value - Z95 * se, value + Z95 * se]}
    return format_entry(entry, reference=reference, flags="none")


def _input_note(res: Explanation) -> str:
    height, width = res.image.shape[-2:]
    h, w = res.estimate.map.shape[-2:]
    fitted = res.image_note or f"used as given ({width}x{height} px)"
    maps = f"maps {w}x{h}"
    if (h, w) != (height, width):
        maps += f", each map pixel covering {width / w:.3g}x{height / h:.3g} image pixels"
    return f"Input image: {fitted}; {maps}."


def _cell(value: dict[str, Any] | float, reference: float) -> str:
    flags = "long" if isinstance(value, dict) else "none"
    return html.escape(format_entry(value, reference=reference, flags=flags))


def _table(res: Explanation, columns: dict[str, list[Any]], reference: float) -> str:
    head = "".join(f"<th scope=col>{html.escape(name)}</th>" for name in columns)
    # The condition each row's prompt is compared with (None: no prompt at all).
    contexts = res.estimate.settings.get("contexts") or [None] * (1 + len(res.words))
    body = []
    for k, word in enumerate([None, *res.words]):
        entry = res.entry(word)
        name = "i(x; prompt)" if word is None else f"i(x; {word} | rest)"
        context = "(no prompt)" if contexts[k] is None else str(contexts[k])
        cells = "".join(f"<td>{_cell(col[k], reference)}</td>" for col in columns.values())
        flagged = " class=flagged" if entry_warnings(entry) else ""
        body.append(
            f"<tr{flagged}><th scope=row>{html.escape(name)}</th>"
            f"<td>{_cell(entry, reference)}</td>"
            f"<td>{html.escape(format_entry(entry['stderr'], reference=reference))}</td>"
            f"{cells}<td class=context>{html.escape(context)}</td></tr>"
        )
    return (
        "<table class=numbers><thead><tr><th scope=col>quantity</th>"
        "<th scope=col>estimate [95% interval], nats</th><th scope=col>SE</th>"
        f"{head}<th scope=col>compared with</th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _figures(figures: dict[str, bytes]) -> str:
    if not figures:
        return ""
    types = {".png": "image/png", ".svg": "image/svg+xml"}  # (a PDF is a file beside it)
    shown = "".join(
        f'<figure><img src="data:{types[suffix]};base64,{base64.b64encode(data).decode()}" '
        f'alt="{html.escape(name)}"><figcaption>{html.escape(name)}</figcaption></figure>'
        for name, data in figures.items()
        if (suffix := Path(name.split(" ")[0]).suffix) in types
    )
    return f"<section aria-labelledby=figs><h2 id=figs>Figures</h2>{shown}</section>"


def _floats(t: torch.Tensor) -> str:
    """A map as base64 of its little-endian float32 bytes (row-major ``(h, w)``)."""
    array = t.detach().to("cpu", torch.float32).contiguous().numpy()
    return base64.b64encode(array.astype("<f4").tobytes()).decode()


def _png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


@cache
def _asset(name: str) -> str:
    return files(__package__).joinpath(name).read_text(encoding="utf-8")


def _target_note(settings: dict[str, Any]) -> str:
    """The precision target the draws followed, if any (`` · target SE ≤ 0.3 nats``)."""
    target_se, target_rel = settings.get("target_se"), settings.get("target_rel")
    parts = [f"{target_se:g} nats"] if target_se else []
    parts += [f"{target_rel:g} × |value|"] if target_rel else []
    return f" · target SE ≤ {' + '.join(parts)}" if parts else ""


def _script_json(data: dict[str, Any]) -> str:
    """``data`` as JSON that cannot end its ``<script>`` element early (``<``, ``>``, ``&``
    escaped as JSON unicode escapes); NaN (unknown) as null."""
    text = json.dumps(_finite(data), ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _finite(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _finite(u) for k, u in v.items()}
    if isinstance(v, list):
        return [_finite(u) for u in v]
    return None if isinstance(v, float) and not math.isfinite(v) else v


# The pair viewer ------------------------------------------------------------------------------


def interaction_html(inter: Interaction) -> str:
    """The interactive report of an :class:`~infodecomp.Interaction` as one HTML document (no
    external resource): the prompt, model, estimator (and what its values mean), cost and
    seed; a pair list with each interaction information and its sign; for the selected pair
    its conditions, its informations, the interaction's map over the image (diverging, with an
    opacity slider and a hover read-out of nats per pixel and SE) beside the maps of i1, i2,
    i12, the image's atoms with 95% intervals next to the sums of the pixel atoms (which are
    not the image's) and the pixel atoms' maps; a table of every pair's numbers; the settings.
    Numbers by :func:`~infodecomp.results.format_entry` (in the page, its port in
    ``format.js``)."""
    from ..interaction_terms import ESTIMATOR_NOTES

    data = interaction_data(inter)
    title = html.escape(inter.prompt)
    est = inter.estimates["joint"]
    return _PAIR_PAGE.format(
        title=title,
        css=_asset("viewer.css"),
        js=_asset("format.js") + _asset("interaction.js"),
        data=_script_json(data),
        prompt=title,
        model=html.escape(inter.model_name)
        + (f" @ {html.escape(inter.model_revision)}" if inter.model_revision else ""),
        estimator=html.escape(inter.estimator),
        estimator_note=html.escape(ESTIMATOR_NOTES.get(inter.estimator, "")),
        evaluations=f"{est.n_evaluations:,}",
        seed=est.seed,
        input_note=html.escape(_pair_input_note(inter)),
        table=_pair_table(inter),
        settings=html.escape(json.dumps(inter.settings, indent=2, default=str)),
    )


def interaction_data(inter: Interaction) -> dict[str, Any]:
    """What the pair page's script reads (JSON-serialisable): per pair its words, sign,
    conditions, each quantity's formatted value and flags, the pixel atoms' sums, and its maps
    and standard-error maps as base64 float32 ``(h, w)``; the panels to draw; the image as
    base64 PNG and both colour maps."""
    from ..interaction_terms import ATOMS, LINEAR
    from .figures import DIVERGING_CMAP, interaction_sign, pixel_unit

    has_atoms = "redundancy" in inter.estimates
    has_maps = inter.estimates["joint"].map is not None
    doc = inter.to_dict()
    pairs = []
    for p, (w1, w2) in enumerate(inter.pairs):
        names = [*LINEAR, *(ATOMS if has_atoms else ())]
        quantities = {}
        for name in names:
            entry = inter.entry(p, name)
            quantities[name] = {
                "text": format_entry(entry, flags="none"),
                "value": entry["value"],
                "flags": entry_flags(entry),
                "warnings": entry_warnings(entry),
            }
        sign = interaction_sign(inter.entry(p, "interaction"))
        conditions = inter.settings["pairs"][p]
        shown = [name for name in [*_PAIR_MAPS, *(ATOMS if has_atoms else ())] if has_maps]
        pairs.append(
            {
                "label": f"{w1} & {w2}",
                "words": [w1, w2],
                "sign": sign,
                "signClass": sign if sign in ("redundant", "synergistic") else "unresolved",
                "conditions": [
                    [f"prompt ({w1} + {w2} + rest)", _text(conditions["joint"])],
                    [f"without {w2} (rest + {w1})", _text(conditions["first"])],
                    [f"without {w1} (rest + {w2})", _text(conditions["second"])],
                    ["rest (without both)", _text(conditions["rest"])],
                ],
                "titles": _pair_titles(w1, w2),
                "definitions": {
                    "redundancy": "min(i1, i2)",
                    "unique_first": "i1 - R",
                    "unique_second": "i2 - R",
                    "synergy": "i12 - U1 - U2 - R",
                },
                "quantities": quantities,
                "pixelTotals": doc["pairs"][p].get("pixel_atoms_total"),
                "maps": {n: _floats(inter.heat_map(p, n)) for n in shown},
                "stderr": {n: _floats(inter.estimates[n].map_stderr[0, p]) for n in shown},
                "shape": list(inter.heat_map(p, "joint").shape) if has_maps else None,
            }
        )
    panels = []
    if has_maps:
        panels = [
            {"name": "interaction", "scale": "interaction", "group": "main-panels"},
            *({"name": n, "scale": "informations", "group": "main-panels"} for n in _PAIR_MAPS[1:]),
            *({"name": n, "scale": "atoms", "group": "atom-panels"} for n in ATOMS if has_atoms),
        ]
    return {
        "prompt": inter.prompt,
        "pairs": pairs,
        "panels": panels,
        "atoms": list(ATOMS) if has_atoms else [],
        "informations": [
            "first",
            "second",
            "joint",
            "first_given_second",
            "second_given_first",
        ],
        "unit": pixel_unit(inter.image, inter.heat_map(0, "joint")).replace("/", " per ")
        if has_maps
        else "nats",
        "image": {
            "png": base64.b64encode(_png(image_rgb(inter.image))).decode(),
            "shape": list(inter.image.shape[-2:]),
        },
        "colormap": base64.b64encode(colour_table().tobytes()).decode(),
        "diverging": base64.b64encode(colour_table(DIVERGING_CMAP).tobytes()).decode(),
        "z95": Z95,
    }


_PAIR_MAPS = ("interaction", "first", "second", "joint")


def _pair_titles(w1: str, w2: str) -> dict[str, str]:
    """Each quantity of a pair in words and symbols."""
    return {
        "first": f"i1 = i(x; {w1} | rest)",
        "second": f"i2 = i(x; {w2} | rest)",
        "joint": f"i12 = i(x; {w1}, {w2} | rest)",
        "interaction": f"interaction i(x; {w1}; {w2} | rest)",
        "first_given_second": f"i(x; {w1} | rest + {w2})",
        "second_given_first": f"i(x; {w2} | rest + {w1})",
        "difference": "i1 - i2",
        "redundancy": "R: redundancy",
        "unique_first": f"U1: unique {w1}",
        "unique_second": f"U2: unique {w2}",
        "synergy": "S: synergy",
    }


def _text(condition: Any) -> str | None:
    return None if condition is None else str(condition)


def _pair_input_note(inter: Interaction) -> str:
    height, width = inter.image.shape[-2:]
    fitted = inter.image_note or f"used as given ({width}x{height} px)"
    if inter.estimates["joint"].map is None:
        return f"Input image: {fitted}; no maps."
    h, w = inter.heat_map(0, "joint").shape
    maps = f"maps {w}x{h}"
    if (h, w) != (height, width):
        maps += f", each map pixel covering {width / w:.3g}x{height / h:.3g} image pixels"
    return f"Input image: {fitted}; {maps}."


def _pair_table(inter: Interaction) -> str:
    """Every pair's numbers: a row per quantity, a column per pair (nats, 95% intervals)."""
    from ..interaction_terms import ATOMS, DEFINITIONS, LINEAR

    has_atoms = "redundancy" in inter.estimates
    symbols = _pair_titles("w1", "w2")
    head = "".join(f"<th scope=col>{html.escape(f'{a} & {b}')}</th>" for a, b in inter.pairs)
    rows = []
    for name in [*LINEAR, *(ATOMS if has_atoms else ())]:
        cells = ""
        for p in range(len(inter.pairs)):
            entry = inter.entry(p, name)
            flagged = " class=flagged" if entry_warnings(entry) else ""
            cells += f"<td{flagged}>{html.escape(format_entry(entry, flags='short'))}</td>"
        what = html.escape(DEFINITIONS.get(name, ""))
        rows.append(
            f"<tr><th scope=row>{html.escape(symbols[name])}</th>{cells}"
            f"<td class=context>{what}</td></tr>"
        )
    if has_atoms and inter.estimates["redundancy"].map is not None:
        for name in ATOMS:
            totals = [
                inter.heat_map(p, name).double().sum().item() for p in range(len(inter.pairs))
            ]
            cells = "".join(f"<td>{html.escape(format_entry(t))}</td>" for t in totals)
            label = html.escape(f"{symbols[name]}: sum of the pixel atoms")
            rows.append(
                f"<tr><th scope=row>{label}</th>{cells}"
                "<td class=context>not the image's atom: a minimum is not additive</td></tr>"
            )
    return (
        f"<table class=numbers id=pair-numbers><thead><tr><th scope=col>quantity</th>{head}"
        f"<th scope=col>definition</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


_PAIR_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>infodecomp pairs: {title}</title>
<style>{css}</style></head>
<body>
<header>
<p class=kicker>infodecomp &middot; how two words share what they tell about this image</p>
<h1 id=prompt>{prompt}</h1>
<p class=meta>model <code>{model}</code> &middot; estimator <b>{estimator}</b>: {estimator_note}
&middot; {evaluations} denoiser evaluations (all pairs on shared draws) &middot; seed {seed}</p>
<p class=meta>{input_note}</p>
</header>
<main>
<div class=explorer>
<nav aria-labelledby=pairs-h class=words>
<h2 id=pairs-h>Pairs</h2>
<p class=hint>Interaction information i(x; w1; w2 | rest), nats [95% interval]: positive
redundant, negative synergistic. Arrow keys move.</p>
<ul id=pair-list role=listbox aria-labelledby=pairs-h tabindex=0></ul>
</nav>
<section class=maps id=pair-view aria-labelledby=pair-h>
<div class=toolbar>
<h2 id=pair-h><span id=selected-label></span> <span id=selected-value class=num></span>
<span id=selected-sign></span></h2>
<label class=opacity>map opacity <input id=opacity type=range min=0 max=100 value=85
 aria-describedby=opacity-out> <output id=opacity-out>85%</output></label>
</div>
<dl id=conditions class=conditions></dl>
<div id=informations class=cards></div>
<h3 class=group>Maps: the interaction (diverging, symmetric about 0) and i1, i2, i12 (one
scale)</h3>
<div id=main-panels class=pair-panels></div>
<div id=readout class=readout aria-live=polite>Hover a map (or focus it and use the arrow
keys) to read a pixel.</div>
<div id=atoms-block>
<h3 class=group>DiffusionPID's atoms</h3>
<p class=statement>Pixel atoms do not sum to the image's atoms: each pixel's atoms come from
that pixel's own i1, i2, i12, and a minimum is not additive. The maps of i1, i2, i12 and the
interaction do sum to their values.</p>
<div class=scroll><table class=numbers><thead><tr><th scope=col>atom</th>
<th scope=col>definition</th><th scope=col>image atom [95% interval], nats</th>
<th scope=col>sum of the pixel atoms, nats</th></tr></thead><tbody id=atom-rows></tbody>
</table></div>
<div id=atom-panels class=pair-panels></div>
</div>
</section>
</div>
<section aria-labelledby=num-h>
<h2 id=num-h>Numbers of every pair</h2>
<div class=scroll>{table}</div>
<p class=note>Values in nats with 95% intervals (the atoms' carried from the linear quantities
through min and max); digits follow the interval's width. All pairs come from the same
denoiser calls.</p>
</section>
<section aria-labelledby=about-h>
<h2 id=about-h>How to read this</h2>
<p>For two words w1, w2 of the prompt and the rest r (the prompt without both):
i1 = i(x; w1 | r) and i2 = i(x; w2 | r) are what each word adds to the rest, i12 =
i(x; w1, w2 | r) what both add together. The interaction information i1 + i2 - i12 is
positive when the words tell the same thing about the image (redundant) and negative when
they tell more together than apart (synergistic). DiffusionPID (Dewan et al., NeurIPS 2024)
splits i12 into redundancy R = min(i1, i2), unique parts U1 = i1 - R and U2 = i2 - R, and
synergy S = i12 - U1 - U2 - R (so S - R is minus the interaction information). Maps are in
nats per model-input pixel; with the standard estimator single pixels can be negative.</p>
<p>{input_note}</p>
</section>
<details><summary>settings (everything that produced the numbers)</summary>
<pre>{settings}</pre></details>
</main>
<script type="application/json" id=data>{data}</script>
<script>{js}</script>
</body></html>
"""


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>infodecomp: {title}</title>
<style>{css}</style></head>
<body>
<header>
<p class=kicker>infodecomp &middot; what each word tells about this image</p>
<h1 id=prompt>{prompt}</h1>
<p class=meta>i(x; prompt) = <b>{mi}</b> nats &middot; model <code>{model}</code> &middot;
{evaluations} denoiser evaluations &middot; seed {seed}{target}</p>
<p class=meta>{input_note}</p>
</header>
<main>
<div class=explorer>
<nav aria-labelledby=words-h class=words>
<h2 id=words-h>Words</h2>
<p class=hint>i(x; word | rest), nats [95% interval]. Arrow keys move.</p>
<ul id=word-list role=listbox aria-labelledby=words-h tabindex=0></ul>
</nav>
<section class=maps aria-labelledby=maps-h>
<div class=toolbar>
<h2 id=maps-h><span id=selected-label></span> <span id=selected-value class=num></span></h2>
<label class=opacity>map opacity <input id=opacity type=range min=0 max=100 value=60
 aria-describedby=opacity-out> <output id=opacity-out>60%</output></label>
<fieldset class=scale><legend>colour scale</legend>
<label><input type=radio name=scale value=word checked> per word</label>
<label><input type=radio name=scale value=shared> shared</label></fieldset>
</div>
<div id=panels class=panels></div>
<div id=readout class=readout aria-live=polite>Hover a map (or focus it and use the arrow
keys) to read a pixel.</div>
<figure class=profile><figcaption id=profile-title></figcaption>
<div id=profile-chart></div><p id=profile-note class=note></p></figure>
</section>
</div>
<section aria-labelledby=all-h>
<h2 id=all-h>Where along the noise levels each word's information arrives</h2>
<p class=note>Each curve is the estimator's integrand binned over log-SNR (nats per unit
log-SNR, from its own draws; no extra denoiser call), with its 95% band; the area under a curve
is the word's value. The paper's MMSE-curve view, word by word. Select one to show it above.</p>
<div id=profiles class=profiles></div>
</section>
<section aria-labelledby=num-h>
<h2 id=num-h>Numbers</h2>
<div class=scroll>{table}</div>
<p class=note>Values in nats with 95% intervals, corrected for the skew of the draws (so not
always symmetric); digits follow the interval's width, and a value negligible against
i(x; prompt) prints as 0. "unreliable": the value rests on a few draws (take more);
"truncated": its information likely extends beyond the model's log-SNR range, where the model
cannot see it.</p>
</section>
<section aria-labelledby=about-h>
<h2 id=about-h>How to read this</h2>
<p>i(x; prompt) is the pointwise mutual information between this image and its prompt, and
i(x; word | rest) what the word adds once the rest of the prompt is known, both estimated from
the model's own denoising errors along the noise levels (Kong et al., ICLR 2024). The
orthogonal estimator integrates a squared difference of denoiser outputs, so every value, every
map pixel and every profile bin is non-negative, and an interval's lower end is cut at 0. Each
map splits its value over the model-input pixels: the pixels of a map add up to exactly its
value. The attention maps (DAAM: cross-attention summed over heads, layers and draws or
sampling steps) are a baseline in arbitrary units, not information.</p>
<p>{input_note}</p>
</section>
{figures}
<details><summary>settings (everything that produced the numbers)</summary>
<pre>{settings}</pre></details>
</main>
<script type="application/json" id=data>{data}</script>
<script>{js}</script>
</body></html>
"""
