// infodecomp report viewer: reads the page's JSON (see infodecomp.report.viewer.viewer_data),
// draws maps on canvases and profiles as SVG. Plain JavaScript, no library, no network.
"use strict";
(() => {
  const D = JSON.parse(document.getElementById("data").textContent);
  const $ = (id) => document.getElementById(id);
  const el = (tag, props = {}, ...children) => {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children);
    return node;
  };

  // The one number format (format.js): a port of infodecomp.results._format_values.
  const { formatValues } = window.infodecompFormat;

  // A value with its 95% interval, "v [lo, hi]" (cut at 0 for a non-negative quantity).
  function formatInterval(value, se, reference = null) {
    const half = D.z95 * se;
    const low = D.nonnegative ? Math.max(0, value - half) : value - half;
    const [v, lo, hi, s] = formatValues([value, low, value + half, se], half, reference);
    return { text: `${v} [${lo}, ${hi}]`, value: v, se: s };
  }

  // ---- Data ---------------------------------------------------------------------------------
  function floats(b64) {
    if (b64 === null) return null;
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const view = new DataView(bytes.buffer);
    const out = new Float32Array(bytes.length / 4);
    for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true); // little-endian
    return out;
  }
  const lut = Uint8Array.from(atob(D.colormap), (c) => c.charCodeAt(0));
  const [imageH, imageW] = D.image.shape;
  const rows = D.rows;
  const kinds = D.kinds.map((kind) => {
    const maps = kind.maps.map(floats);
    const stats = maps.map((m) => {
      if (m === null) return null;
      let min = Infinity, max = -Infinity, sum = 0;
      for (const v of m) { min = Math.min(min, v); max = Math.max(max, v); sum += v; }
      return { min, max, sum };
    });
    const present = stats.filter((s) => s !== null);
    const [h, w] = kind.shape;
    const coarse = h < imageH || w < imageW;
    return {
      ...kind, maps, stats, h, w,
      stderr: kind.stderr ? kind.stderr.map(floats) : null,
      // Shared among the words (as the figures): the prompt's own map would set every word's scale.
      shared: (() => {
        const words = stats.slice(1).filter((s) => s !== null);
        const of = words.length ? words : present;
        return { min: Math.min(...of.map((s) => s.min)), max: Math.max(...of.map((s) => s.max)) };
      })(),
      pixelUnit: kind.unit === "nats" ? `nats per ${coarse ? "latent " : ""}pixel` : kind.unit,
    };
  });
  const cmi = kinds[0];

  const state = { row: rows.length > 1 ? 1 : 0, opacity: 0.6, scale: "word", pixel: null };
  const image = new Image();
  image.src = `data:image/png;base64,${D.image.png}`;

  // ---- Word list (a listbox: arrow keys, Home, End) ------------------------------------------
  const list = $("word-list");
  const largest = Math.max(...rows.map((r) => r.value), 1e-12);
  rows.forEach((row, k) => {
    const flags = row.flags.map((f) => el("span", { className: "flag", title: row.warnings.join("; ") }, f));
    const bar = el("span");
    bar.style.width = `${Math.max(0, (100 * row.value) / largest)}%`;
    const item = el(
      "li",
      { id: `word-${k}`, role: "option" },
      el("span", { className: "w" }, row.label),
      el("span", {}, ...flags),
      el("span", { className: "v num" }, row.text),
      el("span", { className: "bar", ariaHidden: "true" }, bar),
    );
    item.addEventListener("click", () => { select(k); list.focus(); });
    list.append(item);
  });
  list.addEventListener("keydown", (e) => {
    const moves = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1 };
    let next = null;
    if (e.key in moves) next = state.row + moves[e.key];
    else if (e.key === "Home") next = 0;
    else if (e.key === "End") next = rows.length - 1;
    if (next === null) return;
    e.preventDefault();
    select(Math.max(0, Math.min(rows.length - 1, next)));
  });

  // ---- Controls -----------------------------------------------------------------------------
  $("opacity").addEventListener("input", (e) => {
    state.opacity = e.target.value / 100;
    $("opacity-out").value = `${e.target.value}%`;
    drawPanels();
  });
  document.querySelectorAll("input[name=scale]").forEach((radio) =>
    radio.addEventListener("change", (e) => {
      state.scale = e.target.value;
      render();
    }),
  );

  // ---- Map panels ---------------------------------------------------------------------------
  const panels = kinds.map((kind) => {
    const canvas = el("canvas", { tabIndex: 0, width: 320, height: 320 });
    const empty = el("div", { className: "empty" }, `no ${kind.title} map for the whole prompt (maps are per word)`);
    const ramp = el("div", { className: "ramp" });
    const stops = [];
    for (let i = 0; i <= 16; i++) {
      const j = 3 * Math.min(255, Math.round((255 * i) / 16));
      stops.push(`rgb(${lut[j]},${lut[j + 1]},${lut[j + 2]}) ${(100 * i) / 16}%`);
    }
    ramp.style.background = `linear-gradient(to right, ${stops.join(",")})`;
    const low = el("span"), high = el("span"), caption = el("div");
    const panel = el(
      "figure",
      { className: "panel" },
      el("h3", {}, kind.title),
      canvas,
      empty,
      el("div", { className: "colorbar" }, ramp, el("div", { className: "ends" }, low, high), caption),
    );
    panel.dataset.kind = kind.key;
    $("panels").append(panel);
    const p = { kind, canvas, empty, low, high, caption, tile: document.createElement("canvas") };
    canvas.addEventListener("mousemove", (e) => {
      const box = canvas.getBoundingClientRect();
      setPixel((e.clientX - box.left) / box.width, (e.clientY - box.top) / box.height);
    });
    canvas.addEventListener("mouseleave", () => setPixel(null));
    canvas.addEventListener("focus", () => {
      if (!state.pixel) setPixel(0.5, 0.5);
    });
    canvas.addEventListener("keydown", (e) => {
      const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
      if (!(e.key in moves) || !state.pixel) return;
      e.preventDefault();
      const [r, c] = pixelOf(kind);
      const [dr, dc] = moves[e.key];
      const nr = Math.max(0, Math.min(kind.h - 1, r + dr)), nc = Math.max(0, Math.min(kind.w - 1, c + dc));
      setPixel((nc + 0.5) / kind.w, (nr + 0.5) / kind.h);
    });
    return p;
  });

  const range = (kind, k) => {
    const s = state.scale === "shared" ? kind.shared : kind.stats[k];
    // Information starts at 0; attention, whose zero means nothing, spans its own range (as the
    // figures do).
    const lo = kind.unit === "nats" ? Math.min(0, s.min) : s.min;
    return [lo, s.max > lo ? s.max : lo + 1e-12];
  };
  const pixelOf = (kind) => [
    Math.min(kind.h - 1, Math.floor(state.pixel.fy * kind.h)),
    Math.min(kind.w - 1, Math.floor(state.pixel.fx * kind.w)),
  ];

  function drawPanel(p) {
    const { kind, canvas } = p;
    const map = kind.maps[state.row];
    canvas.hidden = map === null;
    p.empty.hidden = map !== null;
    if (map === null) {
      p.low.textContent = p.high.textContent = "";
      p.caption.textContent = "";
      return;
    }
    const [lo, hi] = range(kind, state.row);
    const [loText, hiText] = formatValues([lo, hi]);
    p.low.textContent = loText;
    p.high.textContent = hiText;
    const scale = state.scale === "shared" ? "shared scale" : "per-word scale";
    p.caption.textContent = `${rows[state.row].label}: ${loText}–${hiText} ${kind.pixelUnit} (${scale})`;
    canvas.setAttribute("role", "img");
    canvas.setAttribute(
      "aria-label",
      `${kind.title} map of ${rows[state.row].label}; arrow keys move the pixel read-out`,
    );
    // Backing store at the displayed size (times the device's pixel ratio): crisp at any zoom.
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round((canvas.clientWidth || 320) * ratio));
    const height = Math.max(1, Math.round((width * imageH) / imageW));
    if (canvas.width !== width || canvas.height !== height) Object.assign(canvas, { width, height });
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = imageW > width; // smooth only when scaled down: pixels stay blocks
    // Under a visible map the photo turns grey, so none of its colours reads as heat.
    ctx.filter = state.opacity > 0 ? "grayscale(1)" : "none";
    ctx.drawImage(image, 0, 0, width, height);
    ctx.filter = "none";
    // The map: one tile pixel per map pixel, scaled up without smoothing (nearest neighbour).
    Object.assign(p.tile, { width: kind.w, height: kind.h });
    const tctx = p.tile.getContext("2d");
    const pixels = tctx.createImageData(kind.w, kind.h);
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
      const [r, c] = pixelOf(kind);
      const sx = width / kind.w, sy = height / kind.h;
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
    if (!state.pixel) {
      box.textContent = "Hover a map (or focus it and use the arrow keys) to read a pixel.";
      return;
    }
    const [r, c] = pixelOf(cmi);
    const lines = [];
    const sy = imageH / cmi.h, sx = imageW / cmi.w;
    const where = sx > 1 || sy > 1
      ? `latent pixel row ${r}, column ${c} of ${cmi.h}×${cmi.w} (image pixels rows ${Math.round(r * sy)}–${Math.round((r + 1) * sy) - 1}, columns ${Math.round(c * sx)}–${Math.round((c + 1) * sx) - 1})`
      : `pixel row ${r}, column ${c} of ${cmi.h}×${cmi.w}`;
    lines.push(el("div", { className: "ro-where" }, where));
    for (const kind of kinds) {
      const map = kind.maps[state.row];
      if (map === null) continue;
      const [kr, kc] = pixelOf(kind);
      const i = kr * kind.w + kc;
      const line = el("div", { className: `ro-${kind.key}` }, el("b", {}, `${kind.title}: `));
      if (kind.stderr) {
        const f = formatInterval(map[i], kind.stderr[state.row][i], null);
        const total = kind.stats[state.row].sum;
        const share = total > 0 ? `${formatValues([(100 * map[i]) / total])[0]}% of the map's total` : "";
        line.append(
          el("span", { className: "value" }, f.value),
          ` ${f.text.slice(f.value.length)} ${kind.pixelUnit} · SE `,
          el("span", { className: "se" }, f.se),
          share ? " · " : "",
          el("span", { className: "share" }, share),
        );
      } else {
        line.append(el("span", { className: "value" }, formatValues([map[i]])[0]), ` (${kind.unit})`);
      }
      lines.push(line);
    }
    box.replaceChildren(...lines);
  }

  // ---- Profiles over log-SNR (SVG) ------------------------------------------------------------
  const P = D.profile;
  const esc = (s) => String(s).replace(/[&<>"]/g, (ch) => `&#${ch.charCodeAt(0)};`);
  const niceStep = (span, n) => {
    const step0 = span / n;
    const mag = 10 ** Math.floor(Math.log10(step0));
    return [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0);
  };
  function niceTicks(lo, hi, n) {
    const step = niceStep(hi - lo, n);
    const ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Math.abs(t) < step * 1e-9 ? 0 : t);
    const digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    return ticks.map((t) => [t, t.toFixed(digits)]);
  }
  function band(k) {
    const v = P.values[k], s = P.stderr[k];
    return v.map((x, i) => [D.nonnegative ? Math.max(0, x - D.z95 * s[i]) : x - D.z95 * s[i], x + D.z95 * s[i]]);
  }
  function profileTop(k) {
    const top = (j) => Math.max(...band(j).map((b) => b[1]));
    const t = state.scale === "shared" ? Math.max(...rows.map((_, j) => top(j))) : top(k);
    if (!(t > 0)) return 1;
    const step = niceStep(t, 4); // the axis ends on a tick
    return Math.ceil(t / step - 1e-9) * step;
  }
  function profileSvg(k, big) {
    const W = big ? 720 : 220, H = big ? 270 : 64;
    const m = big ? { l: 66, r: 14, t: 12, b: 48 } : { l: 2, r: 2, t: 4, b: 3 };
    const edges = P.edges, v = P.values[k], bands = band(k);
    const x0 = edges[0], x1 = edges[edges.length - 1];
    const yMax = profileTop(k);
    const X = (x) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
    const Y = (y) => H - m.b - (Math.max(0, Math.min(y, yMax)) / yMax) * (H - m.t - m.b);
    const step = (ys) => ys.map((y, i) => `${X(edges[i]).toFixed(1)},${Y(y).toFixed(1)} ${X(edges[i + 1]).toFixed(1)},${Y(y).toFixed(1)}`).join(" ");
    const lower = bands.map((b) => b[0]), upper = bands.map((b) => b[1]);
    const area = `${step(upper)} ${step(lower).split(" ").reverse().join(" ")}`;
    let out = `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="information profile over log-SNR">`;
    if (big) {
      for (const [t, label] of niceTicks(0, yMax, 4)) {
        out += `<line class="grid" x1="${m.l}" x2="${W - m.r}" y1="${Y(t)}" y2="${Y(t)}"/>`;
        out += `<text x="${m.l - 6}" y="${Y(t) + 4}" text-anchor="end">${label}</text>`;
      }
      for (const [t, label] of niceTicks(x0, x1, 8)) {
        out += `<line class="axis" x1="${X(t)}" x2="${X(t)}" y1="${H - m.b}" y2="${H - m.b + 5}"/>`;
        out += `<text x="${X(t)}" y="${H - m.b + 19}" text-anchor="middle">${label}</text>`;
      }
      out += `<text x="${(m.l + W - m.r) / 2}" y="${H - 6}" text-anchor="middle">log-SNR  (← noisier · cleaner →)</text>`;
      out += `<text transform="translate(15 ${(m.t + H - m.b) / 2}) rotate(-90)" text-anchor="middle">nats per unit log-SNR</text>`;
    }
    out += `<polygon class="band" points="${area}"/><polyline class="curve" points="${step(v)}"/>`;
    out += `<line class="axis" x1="${m.l}" x2="${W - m.r}" y1="${H - m.b}" y2="${H - m.b}"/>`;
    if (big) {
      out += `<line class="axis" x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${H - m.b}"/>`;
      v.forEach((y, i) => {
        const [a, b, c] = formatValues([y, bands[i][0], bands[i][1]], D.z95 * P.stderr[k][i], D.reference);
        const [e0, e1] = formatValues([edges[i], edges[i + 1]]);
        out += `<rect class="bin" fill="transparent" x="${X(edges[i])}" y="${m.t}" width="${X(edges[i + 1]) - X(edges[i])}" height="${H - m.t - m.b}"><title>log-SNR ${esc(e0)} to ${esc(e1)}: ${esc(a)} [${esc(b)}, ${esc(c)}] nats per unit log-SNR</title></rect>`;
      });
    }
    return `${out}</svg>`;
  }

  const miniatures = [];
  if (P) {
    rows.forEach((row, k) => {
      const chart = el("span");
      const button = el(
        "button",
        { type: "button" },
        el("span", { className: "w" }, row.label, " "),
        ...row.flags.map((f) => el("span", { className: "flag" }, f)),
        el("div", { className: "v num" }, `${row.text} nats`),
        chart,
      );
      button.addEventListener("click", () => select(k));
      $("profiles").append(button);
      miniatures.push({ button, chart });
    });
  } else {
    $("profiles").closest("section").hidden = true;
    document.querySelector(".profile").hidden = true;
  }

  function drawProfiles() {
    if (!P) return;
    const k = state.row, row = rows[k];
    $("profile-title").textContent = `${row.label}: information profile over log-SNR`;
    $("profile-chart").innerHTML = profileSvg(k, true); // numbers and fixed words only
    const [lo, hi] = formatValues([P.edges[0], P.edges[P.edges.length - 1]]);
    let note;
    if (row.outside !== null && row.outsideInValue) {
      note = `Value: ${row.text} nats, the area under the curve (the model's log-SNR range [${lo}, ${hi}]) plus ${row.outside} nats extrapolated beyond it (information the model never saw).`;
    } else {
      note = `Area under the curve: ${row.text} nats, the value within the model's log-SNR range [${lo}, ${hi}]`;
      note += row.outside === null ? "." : `; a further ${row.outside} nats are extrapolated beyond it (not in the value).`;
    }
    if (row.flags.length) note += ` Flagged: ${row.warnings.join("; ")}.`;
    $("profile-note").textContent = note;
    miniatures.forEach(({ button, chart }, j) => {
      button.setAttribute("aria-pressed", String(j === k));
      chart.innerHTML = profileSvg(j, false);
    });
  }

  // ---- Selection ------------------------------------------------------------------------------
  function select(k) {
    state.row = k;
    list.querySelectorAll("li").forEach((li, j) => li.setAttribute("aria-selected", String(j === k)));
    list.setAttribute("aria-activedescendant", `word-${k}`);
    $(`word-${k}`).scrollIntoView({ block: "nearest" });
    const row = rows[k];
    $("selected-label").textContent = row.label;
    $("selected-value").textContent = `${row.text} nats${row.flags.map((f) => ` (${f})`).join("")}`;
    render();
  }
  function render() {
    drawPanels();
    readout();
    drawProfiles();
  }

  image.addEventListener("load", drawPanels);
  let lastWidth = 0;
  new ResizeObserver((entries) => {
    const width = entries[0].contentRect.width;
    if (width !== lastWidth) { lastWidth = width; drawPanels(); }
  }).observe($("panels"));
  select(rows.length > 1 ? 1 : 0); // the first word: its maps fill every panel
  window.infodecompViewer = { formatValues, select, setPixel, state };
})();
