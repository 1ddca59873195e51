// Line charts as inline SVG: no library, nothing downloaded. Only numbers reach the drawing; labels are
// set as text nodes, never as markup.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

// Round tick values spanning [lo, hi].
function niceTicks(lo, hi, count) {
  if (!(hi > lo)) { hi = lo + 1; }
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toPrecision(12));
  return ticks;
}

function fmtTick(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1);
  return String(+v.toPrecision(4));
}

// series: [{name, cls, points: [[x, y], ...], dots}]; draws into the <svg> `svg`, replacing what was there.
function drawChart(svg, series, opts) {
  const W = 640, H = 240, L = 56, R = 12, T = 10, B = 28;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const all = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]));
  if (!all.length) {
    svg.appendChild(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, opts.empty || "no points yet"));
    return;
  }
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  const pad = (y1 - y0) * 0.06 || Math.abs(y0) * 0.1 || 1;
  y0 -= pad; y1 += pad;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  for (const t of niceTicks(y0, y1, 4)) {
    svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: sy(t), y2: sy(t), stroke: "#e3e7ee" }));
    svg.appendChild(svgEl("text", { x: L - 6, y: sy(t) + 4, "text-anchor": "end" }, fmtTick(t)));
  }
  for (const t of niceTicks(x0, x1, 6).filter((t) => Number.isInteger(t) || x1 - x0 < 6)) {
    svg.appendChild(svgEl("text", { x: sx(t), y: H - 8, "text-anchor": "middle" }, fmtTick(t)));
  }
  svg.appendChild(svgEl("line", { x1: L, x2: L, y1: T, y2: H - B, stroke: "#c9d0dc" }));
  svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#c9d0dc" }));
  for (const s of series) {
    const pts = s.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]));
    if (!pts.length) continue;
    const color = getComputedStyle(document.documentElement).getPropertyValue(`--${s.cls}`).trim() || "#333";
    const path = pts.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    const line = svgEl("polyline", { points: path, fill: "none", stroke: color, "stroke-width": 1.8 });
    line.setAttribute("class", `series ${s.cls}`);
    line.setAttribute("data-points", String(pts.length));
    svg.appendChild(line);
    if (s.dots || pts.length === 1) {
      for (const p of pts) svg.appendChild(svgEl("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 3, fill: color }));
    }
  }
  if (opts.xLabel) svg.appendChild(svgEl("text", { x: W - R, y: H - 8, "text-anchor": "end" }, opts.xLabel));
}

window.drawChart = drawChart;
