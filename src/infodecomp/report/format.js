// infodecomp reports' number format: a port of infodecomp.results._format_values, shared by
// the word viewer (viewer.js) and the pair viewer (interaction.js). Plain JavaScript.
"use strict";
window.infodecompFormat = (() => {
  // Python's "{:.Ng}" (trailing zeros dropped, exponent of two digits at least).
  function pyG(v, p) {
    if (Number.isNaN(v)) return "nan";
    if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
    if (v === 0) return "0";
    const [mantissa, e] = v.toExponential(p - 1).split("e");
    const exp = Number(e);
    const trim = (s) => (s.includes(".") ? s.replace(/\.?0+$/, "") : s);
    if (exp < -4 || exp >= p) {
      return `${trim(mantissa)}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
    }
    return trim(v.toFixed(Math.max(p - 1 - exp, 0)));
  }

  // Values rounded alike: two significant digits of halfWidth (three of the largest value
  // without one), at most a ten-thousandth of reference; a value that rounds to 0 prints "0".
  function formatValues(values, halfWidth = null, reference = null) {
    if (!values.every(Number.isFinite)) return values.map((v) => pyG(v, 4));
    const size = Math.max(...values.map(Math.abs));
    let decimals = 0;
    if (halfWidth !== null && halfWidth > 0) decimals = 1 - Math.floor(Math.log10(halfWidth));
    else if (size > 0) decimals = 2 - Math.floor(Math.log10(size));
    if (reference !== null && reference !== 0 && Number.isFinite(reference)) {
      decimals = Math.min(decimals, 4 - Math.floor(Math.log10(Math.abs(reference))));
    }
    if (decimals > 6 && size < 1e-3) return values.map((v) => (v === 0 ? "0" : pyG(v, 2)));
    return values.map((v) => {
      const r = decimals >= 0 ? Number(v.toFixed(decimals)) : Math.round(v / 10 ** -decimals) * 10 ** -decimals;
      return r === 0 ? "0" : r.toFixed(Math.max(decimals, 0));
    });
  }

  return { pyG, formatValues };
})();
