// infodecomp pair viewer: reads the page's JSON (infodecomp.report.viewer.interaction_data) and
// draws the selected pair's maps on canvases. Plain JavaScript, no library, no network.
"use strict";
(() => {
  const D = JSON.parse(document.getElementById("data").textContent);
  const { formatValues } = window.infodecompFormat;
  const $ = (id) => document.getElementById(id);
  const el = (tag, props = {}, ...children) => {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children);
    return node;
  };
  const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  function floats(b64) {
    if (b64 === null || b64 === undefined) return null;
    const view = new DataView(bytes(b64).buffer);
    const out = new Float32Array(view.byteLength / 4);
    for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true); // little-endian
    return out;
  }
  const luts = { sequential: bytes(D.colormap), diverging: bytes(D.diverging) };
  const [imageH, imageW] = D.image.shape;
  const image = new Image();
  image.src = `data:image/png;base64,${D.image.png}`;

  // Each pair's maps, decoded once; the scales: one for i1, i2, i12, one for the pixel atoms,
  // the interaction's symmetric about 0.
  const pairs = D.pairs.map((pair) => {
    const maps = {}, stderr = {};
    for (const [name, b64] of Object.entries(pair.maps || {})) maps[name] = floats(b64);
    for (const [name, b64] of Object.entries(pair.stderr || {})) stderr[name] = floats(b64);
    const extent = (names) => {
      let lo = 0, hi = 0;
      for (const n of names) if (maps[n]) for (const v of maps[n]) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      return [lo, hi > lo ? hi : lo + 1e-12];
    };
    let size = 0;
    if (maps.interaction) for (const v of maps.interaction) size = Math.max(size, Math.abs(v));
    size = size || 1e-12;
    return {
      ...pair, maps, stderr,
      scales: {
        informations: extent(["first", "second", "joint"]),
        atoms: extent(D.atoms),
        interaction: [-size, size],
      },
    };
  });
  const state = { pair: 0, opacity: 0.85, pixel: null };

  // ---- Pair list (a listbox: arrow keys, Home, End) -------------------------------------------
  const list = $("pair-list");
  pairs.forEach((pair, k) => {
    const ii = pair.quantities.interaction;
    const item = el(
      "li",
      { id: `pair-${k}`, role: "option" },
      el("span", { className: "w" }, pair.label),
      el("span", { className: "v num" }, `interaction ${ii.text} nats`),
      el("span", { className: `sign ${pair.signClass}` }, pair.sign),
    );
    item.addEventListener("click", () => { select(k); list.focus(); });
    list.append(item);
  });
  list.addEventListener("keydown", (e) => {
    const moves = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1 };
    let next = null;
    if (e.key in moves) next = state.pair + moves[e.key];
    else if (e.key === "Home") next = 0;
    else if (e.key === "End") next = pairs.length - 1;
    if (next === null) return;
    e.preventDefault();
    select(Math.max(0, Math.min(pairs.length - 1, next)));
  });
  $("opacity").addEventListener("input", (e) => {
    state.opacity = e.target.value / 100;
    $("opacity-out").value = `${e.target.value}%`;
    drawPanels();
  });

  // ---- Map panels -------------------------------------------------------------------------------
  const ramp = (lut) => {
    const stops = [];
    for (let i = 0; i <= 16; i++) {
      const j = 3 * Math.min(255, Math.round((255 * i) / 16));
      stops.push(`rgb(${lut[j]},${lut[j + 1]},${lut[j + 2]}) ${(100 * i) / 16}%`);
    }
    return `linear-gradient(to right, ${stops.join(",")})`;
  };
  const panels = [];
  for (const spec of D.panels) {
    const canvas = el("canvas", { tabIndex: 0, width: 240, height: 240 });
    const bar = el("div", { className: "ramp" });
    bar.style.background = ramp(luts[spec.scale === "interaction" ? "diverging" : "sequential"]);
    const low = el("span"), high = el("span"), title = el("h3"), value = el("div", { className: "pv num" });
    const ends = el("div", { className: "ends" }, low, high);
    const words = spec.scale === "interaction"
      ? el("div", { className: "ends words" }, el("span", { className: "syn" }, "← synergistic"), el("span", { className: "red" }, "redundant →"))
      : "";
    const figure = el(
      "figure",
      { className: `panel ${spec.scale === "interaction" ? "main" : ""}` },
      title, value, canvas,
      el("div", { className: "colorbar" }, bar, ends, words, el("div", {}, D.unit)),
    );
    figure.dataset.quantity = spec.name;
    $(spec.group).append(figure);
    const p = { spec, canvas, title, value, low, high, tile: document.createElement("canvas") };
    canvas.addEventListener("mousemove", (e) => {
      const box = canvas.getBoundingClientRect();
      setPixel((e.clientX - box.left) / box.width, (e.clientY - box.top) / box.height);
    });
    canvas.addEventListener("mouseleave", () => setPixel(null));
    canvas.addEventListener("focus", () => { if (!state.pixel) setPixel(0.5, 0.5); });
    canvas.addEventListener("keydown", (e) => {
      const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
      if (!(e.key in moves) || !state.pixel) return;
      e.preventDefault();
      const [h, w] = pairs[state.pair].shape;
      const [r, c] = pixelOf();
      const [dr, dc] = moves[e.key];
      setPixel((Math.max(0, Math.min(w - 1, c + dc)) + 0.5) / w, (Math.max(0, Math.min(h - 1, r + dr)) + 0.5) / h);
    });
    panels.push(p);
  }

  const pixelOf = () => {
    const [h, w] = pairs[state.pair].shape;
    return [Math.min(h - 1, Math.floor(state.pixel.fy * h)), Math.min(w - 1, Math.floor(state.pixel.fx * w))];
  };

  function drawPanel(p) {
    const pair = pairs[state.pair], { spec, canvas } = p;
    const map = pair.maps[spec.name];
    const label = pair.titles[spec.name];
    p.title.textContent = label;
    const q = pair.quantities[spec.name];
    p.value.textContent = spec.group === "atom-panels"
      ? `pixels sum to ${formatValues([pair.pixelTotals[spec.name]])[0]} · image atom ${q.text}`
      : `${q.text} nats`;
    if (!map) return;
    const [lo, hi] = pair.scales[spec.scale];
    const [loText, hiText] = formatValues([lo, hi]);
    p.low.textContent = loText;
    p.high.textContent = hiText;
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", `map of ${label}; arrow keys move the pixel read-out`);
    const [h, w] = pair.shape;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round((canvas.clientWidth || 240) * ratio));
    const height = Math.max(1, Math.round((width * imageH) / imageW));
    if (canvas.width !== width || canvas.height !== height) Object.assign(canvas, { width, height });
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = imageW > width;
    ctx.filter = state.opacity > 0 ? "grayscale(1)" : "none"; // no photo colour reads as heat
    ctx.drawImage(image, 0, 0, width, height);
    ctx.filter = "none";
    const lut = luts[spec.scale === "interaction" ? "diverging" : "sequential"];
    Object.assign(p.tile, { width: w, height: h });
    const tctx = p.tile.getContext("2d");
    const pixels = tctx.createImageData(w, h);
    for (let i = 0; i < map.length; i++) {
      const j = 3 * Math.max(0, Math.min(255, Math.round((255 * (map[i] - lo)) / (hi - lo))));
      pixels.data.set([lut[j], lut[j + 1], lut[j + 2], 255], 4 * i);
    }
    tctx.putImageData(pixels, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.globalAlpha = state.opacity;
    ctx.drawImage(p.tile, 0, 0, width, height);
    ctx.globalAlpha = 1;
    if (state.pixel) {
      const [r, c] = pixelOf();
      const sx = width / w, sy = height / h;
      ctx.lineWidth = Math.max(2, ratio * 2);
      ctx.strokeStyle = "#ffffff";
      ctx.strokeRect(c * sx, r * sy, sx, sy);
      ctx.lineWidth = Math.max(1, ratio);
      ctx.strokeStyle = "#d7263d";
      ctx.strokeRect(c * sx, r * sy, sx, sy);
    }
  }
  function drawPanels() {
    if (image.complete) panels.forEach(drawPanel);
  }
  function setPixel(fx, fy) {
    state.pixel = fx === null ? null : { fx: Math.min(Math.max(fx, 0), 0.999999), fy: Math.min(Math.max(fy, 0), 0.999999) };
    drawPanels();
    readout();
  }

  function readout() {
    const box = $("readout");
    const pair = pairs[state.pair];
    if (!state.pixel || !pair.maps.interaction) {
      box.textContent = "Hover a map (or focus it and use the arrow keys) to read a pixel.";
      return;
    }
    const [r, c] = pixelOf();
    const [h, w] = pair.shape;
    const i = r * w + c;
    const lines = [el("div", { className: "ro-where" }, `pixel row ${r}, column ${c} of ${h}×${w}`)];
    for (const spec of D.panels) {
      const map = pair.maps[spec.name];
      if (!map) continue;
      const se = pair.stderr[spec.name] ? pair.stderr[spec.name][i] : null;
      const line = el("div", { className: `ro-${spec.name}` }, el("b", {}, `${pair.titles[spec.name]}: `));
      if (se !== null) {
        const [v, s] = formatValues([map[i], se], D.z95 * se);
        line.append(el("span", { className: "value" }, v), ` ${D.unit} · SE `, el("span", { className: "se" }, s));
      } else {
        line.append(el("span", { className: "value" }, formatValues([map[i]])[0]), ` ${D.unit}`);
      }
      lines.push(line);
    }
    box.replaceChildren(...lines);
  }

  // ---- The selected pair's text: conditions, informations, atoms ------------------------------
  function cell(text, className = "") { return el("td", { className }, text); }
  function render() {
    const pair = pairs[state.pair];
    const ii = pair.quantities.interaction;
    $("selected-label").textContent = pair.label;
    $("selected-value").textContent = `interaction ${ii.text} nats`;
    $("selected-sign").textContent = pair.sign;
    $("selected-sign").className = `sign ${pair.signClass}`;
    $("conditions").replaceChildren(
      ...pair.conditions.flatMap(([name, text]) => [el("dt", {}, name), el("dd", {}, text === null ? "(no prompt)" : text)]),
    );
    $("informations").replaceChildren(
      ...D.informations.map((name) => {
        const q = pair.quantities[name];
        return el(
          "div",
          { className: "card" },
          el("div", { className: "q" }, pair.titles[name]),
          el("div", { className: "v num" }, `${q.text} nats`, ...q.flags.map((f) => el("span", { className: "flag", title: q.warnings.join("; ") }, f))),
        );
      }),
    );
    const rows = D.atoms.filter((name) => pair.quantities[name]).map((name) => {
      const q = pair.quantities[name];
      const total = pair.pixelTotals ? formatValues([pair.pixelTotals[name]])[0] : "—";
      return el("tr", {}, el("th", { scope: "row" }, pair.titles[name]), cell(pair.definitions[name], "context"), cell(q.text), cell(total));
    });
    $("atom-rows").replaceChildren(...rows);
    $("atoms-block").hidden = rows.length === 0;
    drawPanels();
    readout();
  }
  function select(k) {
    state.pair = k;
    list.querySelectorAll("li").forEach((li, j) => li.setAttribute("aria-selected", String(j === k)));
    list.setAttribute("aria-activedescendant", `pair-${k}`);
    render();
  }

  image.addEventListener("load", drawPanels);
  let lastWidth = 0;
  new ResizeObserver((entries) => {
    const width = entries[0].contentRect.width;
    if (width !== lastWidth) { lastWidth = width; drawPanels(); }
  }).observe($("pair-view"));
  select(0);
  window.infodecompPairs = { select, setPixel, state, formatValues };
})();
