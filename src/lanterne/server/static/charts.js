// Drawing helpers for the explorer: bars, a heatmap, a scatter plot and line charts, from the JSON views.
// Plain DOM, inline SVG and canvas; nothing loaded from elsewhere.
"use strict";

const PALETTE = ["#2b5c8c", "#c0504d", "#4f8a3c", "#8064a2", "#d98c1f", "#2c9c9c", "#9c2c6e", "#666666"];

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

// A token as the slides show it: spaces as ␣, line breaks as ↵, tabs as ⇥, the empty token as ∅.
function visible(token) {
  const shown = String(token).replace(/ /g, "␣").replace(/\n/g, "↵").replace(/\r/g, "⏎").replace(/\t/g, "⇥");
  return shown === "" ? "∅" : shown;
}

function shorten(text, limit) {
  return text.length <= limit ? text : text.slice(0, limit - 1) + "…";
}

// Horizontal bars: items = [{label, value, text, title, muted}], value in [0, 1] of the track's width (scale: value of a full bar).
function drawBars(container, items, scale = 1) {
  container.innerHTML = items.map((item) => {
    const width = Math.max(0, Math.min(100, (100 * item.value) / scale));
    return `<div class="bar-row${item.muted ? " muted" : ""}" title="${escapeHtml(item.title ?? "")}">` +
      `<span class="bar-label">${escapeHtml(item.label)}</span>` +
      `<span class="bar-track"><span class="bar" style="width:${width.toFixed(3)}%"></span></span>` +
      `<span class="bar-value">${escapeHtml(item.text)}</span></div>`;
  }).join("");
}

// Colour of a value in [0, 1]: white to deep blue (or to `hue` purple for attention).
function shade(value, hue = 215) {
  const v = Math.max(0, Math.min(1, value));
  return `hsl(${hue}, ${40 + 40 * v}%, ${97 - 62 * v}%)`;
}

// Heatmap on a canvas: matrix (rows × columns) of values in [0, max], labels for both axes.
function drawHeatmap(canvas, matrix, labels, { highlight = null } = {}) {
  const count = matrix.length;
  const context = canvas.getContext("2d");
  const font = count > 40 ? 10 : count > 20 ? 12 : 15;
  context.font = `${font}px system-ui, sans-serif`;
  const margin = Math.min(160, 12 + Math.max(...labels.map((label) => context.measureText(shorten(visible(label), 14)).width), 10));
  const cell = Math.max(6, Math.min(40, Math.floor(700 / Math.max(count, 1))));
  canvas.width = margin + cell * count + 10;
  canvas.height = margin + cell * count + 10;
  context.fillStyle = "#ffffff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.font = `${font}px system-ui, sans-serif`;
  const largest = Math.max(1e-9, ...matrix.flat());
  matrix.forEach((row, y) => row.forEach((value, x) => {
    context.fillStyle = x > y ? "#f4f4f4" : shade(value / largest, 265);
    context.fillRect(margin + x * cell, margin + y * cell, cell, cell);
  }));
  context.fillStyle = "#222";
  context.textBaseline = "middle";
  labels.forEach((label, index) => {
    const text = shorten(visible(label), 14);
    context.fillStyle = index === highlight ? "#c0504d" : "#222";
    context.textAlign = "right";
    context.fillText(text, margin - 6, margin + index * cell + cell / 2);
    context.save();
    context.translate(margin + index * cell + cell / 2, margin - 6);
    context.rotate(-Math.PI / 2);
    context.textAlign = "left";
    context.fillText(text, 0, 0);
    context.restore();
  });
  if (highlight !== null) {
    context.strokeStyle = "#c0504d";
    context.lineWidth = 2;
    context.strokeRect(margin, margin + highlight * cell, cell * count, cell);
  }
}

// SVG markup parsed by the HTML parser: inline <svg> needs no namespace attribute.
function svgFrame(width, height, inner) {
  return `<svg viewBox="0 0 ${width} ${height}" width="100%" role="img" preserveAspectRatio="xMidYMid meet">${inner}</svg>`;
}

function niceTicks(low, high, count = 5) {
  if (!(high > low)) return [low];
  const step = Math.pow(10, Math.floor(Math.log10((high - low) / count)));
  const multiple = [1, 2, 5, 10].find((m) => (high - low) / (m * step) <= count) * step;
  const ticks = [];
  for (let value = Math.ceil(low / multiple) * multiple; value <= high + 1e-9; value += multiple) ticks.push(Number(value.toPrecision(12)));
  return ticks;
}

// Scatter plot of labelled points: [{x, y, label}], axis titles.
function drawScatter(container, points, xTitle, yTitle) {
  const width = 640, height = 480, pad = 56, labelRoom = 90; // room on the right for the last word
  const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const spanX = x1 - x0 || 1, spanY = y1 - y0 || 1;
  const px = (x) => pad + ((x - x0 + 0.08 * spanX) / (1.16 * spanX)) * (width - 2 * pad - labelRoom);
  const py = (y) => height - pad - ((y - y0 + 0.08 * spanY) / (1.16 * spanY)) * (height - 2 * pad);
  let inner = `<rect x="${pad}" y="${pad / 2}" width="${width - 2 * pad}" height="${height - 1.5 * pad}" fill="#fafafa" stroke="#ccc"/>`;
  inner += points.map((p, i) => `<circle cx="${px(p.x)}" cy="${py(p.y)}" r="7" fill="${PALETTE[i % PALETTE.length]}"/>` +
    `<text x="${px(p.x) + 10}" y="${py(p.y) - 8}" font-size="20">${escapeHtml(p.label)}</text>`).join("");
  inner += `<text x="${width / 2}" y="${height - 12}" text-anchor="middle" font-size="16">${escapeHtml(xTitle)}</text>`;
  inner += `<text x="18" y="${height / 2}" text-anchor="middle" font-size="16" transform="rotate(-90 18 ${height / 2})">${escapeHtml(yTitle)}</text>`;
  container.innerHTML = svgFrame(width, height, inner);
}

// Line chart: series = [{name, xs, ys, colour, dashed, right}] (right: on a second y axis), axis titles.
function drawLines(container, series, { xTitle = "", yTitle = "", rightTitle = "", yMax = null, logX = false } = {}) {
  const width = 720, height = 420, left = 70, right = rightTitle ? 70 : 20, top = 20, bottom = 60;
  const all = series.flatMap((s) => s.xs);
  const fx = (x) => (logX ? Math.log2(x) : x);
  const [xLow, xHigh] = [Math.min(...all.map(fx)), Math.max(...all.map(fx))];
  const leftValues = series.filter((s) => !s.right).flatMap((s) => s.ys);
  const rightValues = series.filter((s) => s.right).flatMap((s) => s.ys);
  const yHigh = yMax ?? Math.max(1e-9, ...leftValues) * 1.08;
  const rHigh = Math.max(1e-9, ...rightValues) * 1.08;
  const px = (x) => left + ((fx(x) - xLow) / (xHigh - xLow || 1)) * (width - left - right);
  const py = (y, high) => top + (1 - y / high) * (height - top - bottom);
  let inner = `<rect x="${left}" y="${top}" width="${width - left - right}" height="${height - top - bottom}" fill="#fafafa" stroke="#ccc"/>`;
  for (const tick of niceTicks(0, yHigh)) {
    inner += `<line x1="${left}" x2="${width - right}" y1="${py(tick, yHigh)}" y2="${py(tick, yHigh)}" stroke="#e4e4e4"/>` +
      `<text x="${left - 6}" y="${py(tick, yHigh) + 5}" text-anchor="end" font-size="14">${tick}</text>`;
  }
  if (rightValues.length) {
    for (const tick of niceTicks(0, rHigh)) inner += `<text x="${width - right + 6}" y="${py(tick, rHigh) + 5}" font-size="14">${tick}</text>`;
  }
  const xTicks = logX ? [...new Set(all)].sort((a, b) => a - b) : niceTicks(xLow, xHigh);
  for (const tick of xTicks) inner += `<text x="${px(tick)}" y="${height - bottom + 20}" text-anchor="middle" font-size="14">${tick}</text>`;
  series.forEach((s, index) => {
    const high = s.right ? rHigh : yHigh;
    const path = s.xs.map((x, i) => `${i ? "L" : "M"}${px(x).toFixed(1)},${py(s.ys[i], high).toFixed(1)}`).join("");
    const colour = s.colour ?? PALETTE[index % PALETTE.length];
    inner += `<path d="${path}" fill="none" stroke="${colour}" stroke-width="3"${s.dashed ? ' stroke-dasharray="6 5"' : ""}/>`;
    if (s.markers) inner += s.xs.map((x, i) => `<circle cx="${px(x)}" cy="${py(s.ys[i], high)}" r="4" fill="${colour}"/>`).join("");
  });
  const legend = series.map((s, index) => `<span class="legend-item"><span class="swatch" style="background:${s.colour ?? PALETTE[index % PALETTE.length]}"></span>${escapeHtml(s.name)}</span>`).join("");
  inner += `<text x="${(left + width - right) / 2}" y="${height - 12}" text-anchor="middle" font-size="16">${escapeHtml(xTitle)}</text>`;
  inner += `<text x="18" y="${height / 2}" text-anchor="middle" font-size="16" transform="rotate(-90 18 ${height / 2})">${escapeHtml(yTitle)}</text>`;
  if (rightTitle) inner += `<text x="${width - 14}" y="${height / 2}" text-anchor="middle" font-size="16" transform="rotate(90 ${width - 14} ${height / 2})">${escapeHtml(rightTitle)}</text>`;
  container.innerHTML = svgFrame(width, height, inner) + `<div class="legend">${legend}</div>`;
}
