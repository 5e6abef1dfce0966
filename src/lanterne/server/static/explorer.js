// The explorer: one tab per slide of the lecture, each drawn from its JSON endpoint (/api/...).
// The temperature slider recomputes softmax(logits / T) here, from the logits already fetched: no request.
"use strict";

const $ = (id) => document.getElementById(id);
const explorer = { info: null, tab: "tokens", results: {}, keys: {}, pending: 0 };

async function api(path, body) {
  const options = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(path, options);
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new Error((data && data.error && data.error.message) || `${response.status} ${response.statusText}`);
  return data;
}

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function text() {
  return $("text").value;
}

function droppedNote(count) {
  return count ? " " + t("dropped_note", count) : "";
}

// -- the slides: the request each sends, and how its answer is drawn ----------------------------

const TABS = {
  tokens: {
    endpoint: "/api/tokenize",
    body: () => ({ text: text(), named: $("tokens-named").value ? [$("tokens-named").value] : [], max_tokens: 300 }),
    render: renderTokens,
  },
  embeddings: {
    endpoint: "/api/embeddings",
    body: embeddingBody,
    render: renderEmbeddings,
  },
  next: {
    endpoint: "/api/next-word",
    body: () => ({ text: text(), top: 50 }),
    render: renderNext,
  },
  attention: {
    endpoint: "/api/attention",
    body: attentionBody,
    render: renderAttention,
  },
  layers: {
    endpoint: "/api/lens",
    body: () => ({ text: text() }),
    render: renderLayers,
  },
  context: {
    endpoint: "/api/context",
    body: () => ({ text: text(), measure_cost: $("context-cost").checked, cost_tokens: Number($("context-cost-tokens").value) }),
    render: renderContext,
  },
};

// Which request each figure reads (the figure endpoint takes the JSON endpoint's body, plus lang).
const FIGURE_BODIES = {
  tokenization: TABS.tokens.body,
  "embedding-neighbours": embeddingBody,
  "embedding-map": embeddingBody,
  "next-word": () => ({ text: text(), top: 20 }),
  temperature: () => ({ text: text() }),
  filters: () => ({ text: text() }),
  attention: attentionBody,
  "attention-looks": () => {
    const shown = explorer.results.attention;
    return { ...attentionBody(), position: shown && explorer.attentionPosition !== undefined ? shown.shown_from + explorer.attentionPosition : -1 };
  },
  lens: TABS.layers.body,
  feedforward: TABS.layers.body,
  context: TABS.context.body,
  "context-cost": TABS.context.body,
};

async function compute(tab, force = false) {
  const slide = TABS[tab];
  if (!slide) return;
  const body = slide.body();
  const key = JSON.stringify(body);
  if (!force && explorer.keys[tab] === key) return;
  explorer.keys[tab] = key;
  const started = performance.now();
  explorer.pending += 1;
  document.body.classList.add("busy");
  setStatus(t("computing"));
  try {
    const data = await api(slide.endpoint, body);
    if (explorer.keys[tab] !== key) return; // a newer request for this tab was sent meanwhile
    explorer.results[tab] = data;
    slide.render(data);
    setStatus(t("done_in", I18N.number((performance.now() - started) / 1000, 1)));
  } catch (error) {
    explorer.keys[tab] = null;
    setStatus(t("error", error.message), true);
  } finally {
    explorer.pending -= 1;
    if (!explorer.pending) document.body.classList.remove("busy");
  }
}

function showTab(tab) {
  explorer.tab = tab;
  document.querySelectorAll(".tab").forEach((section) => section.classList.toggle("active", section.id === `tab-${tab}`));
  document.querySelectorAll("[role=tab]").forEach((button) => button.setAttribute("aria-selected", String(button.dataset.tab === tab)));
  $("shared-text").hidden = !["tokens", "next", "attention", "layers", "context"].includes(tab);
  if (tab === "generate" && !$("generate-prompt").value) $("generate-prompt").value = text();
  if (window.location.hash !== `#${tab}`) history.replaceState(null, "", `#${tab}`);
  compute(tab);
}

// -- 1. Tokenization ------------------------------------------------------------------------------

const TOKEN_COLOURS = ["#cfe2f3", "#d9ead3", "#fff2cc", "#ead1dc", "#d0e0e3"];

function rowName(row) {
  return { characters: t("characters"), words: t("words"), model: t("model_tokenizer") }[row.name] ?? row.name;
}

function renderTokens(data) {
  $("tokens-rows").innerHTML = data.rows.map((row) => {
    const chips = row.tokens.map((token, index) => {
      const shown = token.unknown ? data.text.slice(token.start, token.end) : token.text;
      const colour = token.unknown ? "#e06666" : TOKEN_COLOURS[index % TOKEN_COLOURS.length];
      return `<span class="token${token.unknown ? " unknown" : ""}" style="background:${colour}" title="id ${token.id} · [${token.start}, ${token.end})">` +
        `<span class="piece">${escapeHtml(visible(shown))}</span><span class="id">${token.id}</span></span>`;
    }).join("");
    const more = row.count > row.tokens.length ? `<span class="muted">${escapeHtml(t("more_tokens", row.count - row.tokens.length))}</span>` : "";
    return `<div class="token-row"><h4>${escapeHtml(rowName(row))} <span class="muted">${escapeHtml(t("row_summary", row.count,
      I18N.number(row.vocab_size, 0), I18N.percent(row.unknown_rate)))}</span></h4><div class="token-strip">${chips}${more}</div></div>`;
  }).join("");
  const head = [t("family"), t("tokenizer"), t("vocab_size"), t("tokens"), t("chars_per_token"), t("unknown")];
  $("tokens-table").innerHTML = `<thead><tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join("")}</tr></thead><tbody>` +
    data.rows.map((row) => `<tr><td>${escapeHtml(t("family_" + row.family.replace("-", "_")))}</td><td>${escapeHtml(rowName(row))}</td>` +
      `<td class="number">${I18N.number(row.vocab_size, 0)}</td><td class="number">${I18N.number(row.count, 0)}</td>` +
      `<td class="number">${I18N.number(row.count ? data.characters / row.count : NaN, 2)}</td>` +
      `<td class="number">${I18N.percent(row.unknown_rate)}</td></tr>`).join("") + "</tbody>";
}

// -- 2. Embeddings --------------------------------------------------------------------------------

function embeddingBody() {
  const words = $("embedding-map-words").value.split(/[\s,;]+/).filter((word) => word);
  const analogy = ["analogy-a", "analogy-b", "analogy-c"].map((id) => $(id).value.trim());
  return {
    word: $("embedding-word").value.trim() || "?",
    neighbours: Number($("embedding-count").value) || 10,
    map_words: words.length >= 3 ? words : [],
    analogy: analogy.every((word) => word) ? analogy : null,
  };
}

function fillEmbeddingExamples(previous) {
  const examples = explorer.info.examples;
  const lang = I18N.lang;
  const replace = (id, value, old) => { if (!$(id).value || $(id).value === old) $(id).value = value; };
  replace("embedding-word", examples.map_words[lang][0], previous && examples.map_words[previous][0]);
  replace("embedding-map-words", examples.map_words[lang].join(" "), previous && examples.map_words[previous].join(" "));
  ["analogy-a", "analogy-b", "analogy-c"].forEach((id, index) => replace(id, examples.analogy[lang][index], previous && examples.analogy[previous][index]));
}

function renderEmbeddings(data) {
  const word = data.word.word;
  $("embedding-vector").textContent = t("vector_line", word.word, word.tokens.map((token) => `“${visible(token)}”`).join(" "), word.dimensions,
    I18N.number(word.norm, 2), word.first_values.slice(0, 6).map((value) => I18N.number(value, 3)).join("; ")) + (word.averaged ? t("averaged") : "");
  drawBars($("embedding-neighbours"), data.word.neighbours.map((n) => ({
    label: visible(n.token), value: Math.max(0, n.similarity), text: I18N.number(n.similarity, 3), title: `id ${n.id}`,
  })));
  if (data.map) {
    drawScatter($("embedding-map"), data.map.words.map((label, i) => ({ x: data.map.x[i], y: data.map.y[i], label: label + (data.map.averaged[i] ? "*" : "") })),
      t("axis", 1, I18N.percent(data.map.explained[0], 0)), t("axis", 2, I18N.percent(data.map.explained[1], 0)));
  } else {
    $("embedding-map").innerHTML = "";
  }
  $("embedding-analogy").textContent = data.analogy
    ? t("analogy_result", data.analogy.a, data.analogy.b, data.analogy.c,
      data.analogy.neighbours.slice(0, 5).map((n) => `“${visible(n.token)}” (${I18N.number(n.similarity, 2)})`).join(", "))
    : "";
}

// -- 3. Next word: the exact distribution at any slider temperature ------------------------------

// softmax(logits / T) over the whole vocabulary, then top-k and top-p as `lanterne.generation.sampling.filter_logits` applies them.
// slider: {logits (the top N, descending), rest_lse[i], rest_mean_logit[i] at temperatures[i], rest_count, vocab_size}.
// The server summed up every other token at each slider temperature, so the result is exact at every slider step.
function distribution(slider, temperature, topK = 0, topP = 1) {
  const n = slider.logits.length;
  if (temperature <= 0) { // greedy: all the mass on the most likely token
    const probabilities = slider.logits.map((_, i) => (i === 0 ? 1 : 0));
    return { probabilities, rest: 0, kept: 1, exact: true, entropy: 0, filteredEntropy: 0 };
  }
  const index = Math.max(0, Math.min(slider.temperatures.length - 1, Math.round(temperature * 100) - 1));
  const T = slider.temperatures[index];
  const restLse = slider.rest_lse ? slider.rest_lse[index] : -Infinity;
  const restMean = slider.rest_mean_logit ? slider.rest_mean_logit[index] : 0;
  const scaled = slider.logits.map((logit) => logit / T);
  const top = Math.max(scaled[0], restLse);
  const Z = top + Math.log(scaled.reduce((sum, s) => sum + Math.exp(s - top), 0) + Math.exp(restLse - top));
  const full = scaled.map((s) => Math.exp(s - Z));
  const fullRest = slider.rest_count ? Math.exp(restLse - Z) : 0;
  const meanLogit = full.reduce((sum, p, i) => sum + p * slider.logits[i], 0) + fullRest * restMean;
  const entropy = Math.max(0, Z - meanLogit / T) / Math.LN2;
  // Top-k keeps the tokens whose logit is at least the k-th's (ties stay), then top-p keeps the smallest
  // most-likely set whose mass reaches p, renormalised each time.
  let kept = full.map(() => true);
  let restKept = slider.rest_count > 0 ? 1 : 0; // fraction of the rest's mass kept
  if (topK > 0 && topK < slider.vocab_size) {
    const kth = scaled[Math.min(topK, n) - 1];
    kept = scaled.map((s) => s >= kth);
    if (topK <= n) restKept = 0;
  }
  let exact = true;
  if (topP < 1) {
    const mass = full.reduce((sum, p, i) => sum + (kept[i] ? p : 0), 0) + fullRest * restKept;
    let before = 0;
    kept = kept.map((keep, i) => {
      if (!keep) return false;
      const stays = i === 0 || before < topP * (1 - 1e-6);
      before += full[i] / mass;
      return stays;
    });
    if (restKept && before >= topP * (1 - 1e-6)) restKept = 0;
    else if (restKept) { // some of the other tokens stay too: how many, only the whole vocabulary would tell
      exact = false;
      restKept = Math.min(1, Math.max(0, ((topP - before) * mass) / fullRest));
    }
  }
  const total = full.reduce((sum, p, i) => sum + (kept[i] ? p : 0), 0) + fullRest * restKept;
  const probabilities = full.map((p, i) => (kept[i] ? p / total : 0));
  const rest = (fullRest * restKept) / total;
  const keptCount = kept.filter((k) => k).length;
  let filteredEntropy = null;
  if (restKept === 1 && exact) filteredEntropy = entropy; // nothing cut
  else if (restKept === 0) filteredEntropy = -probabilities.reduce((sum, p) => sum + (p > 0 ? p * Math.log2(p) : 0), 0);
  return { probabilities, rest, kept: restKept === 1 ? keptCount + slider.rest_count : restKept === 0 ? keptCount : null, exact, entropy, filteredEntropy };
}

const SHOWN_CANDIDATES = 15;

function renderNext(data) {
  const slider = data ? data.slider : explorer.results.next && explorer.results.next.slider;
  const temperature = Number($("temperature").value);
  const topK = Number($("top-k").value);
  const topP = Number($("top-p").value);
  $("temperature-value").textContent = temperature.toFixed(2);
  $("top-k-value").textContent = topK ? String(topK) : "—";
  $("top-p-value").textContent = topP.toFixed(2);
  if (!slider) return;
  $("top-k").max = String(slider.logits.length);
  const result = distribution(slider, temperature, topK, topP);
  const items = slider.tokens.slice(0, SHOWN_CANDIDATES).map((token, i) => ({
    label: visible(token), value: result.probabilities[i], text: I18N.percent(result.probabilities[i]),
    title: `id ${slider.ids[i]} · logit ${I18N.number(slider.logits[i], 3)}`, muted: result.probabilities[i] === 0,
  }));
  const others = result.rest + result.probabilities.slice(SHOWN_CANDIDATES).reduce((sum, p) => sum + p, 0);
  items.push({ label: t("others", I18N.number(slider.vocab_size - Math.min(SHOWN_CANDIDATES, slider.logits.length), 0)), value: others,
    text: (result.exact ? "" : "≈ ") + I18N.percent(others), muted: true });
  drawBars($("next-bars"), items);
  const kept = result.kept === null ? t("more_than", slider.logits.length) : I18N.number(result.kept, 0);
  let summary = result.filteredEntropy !== null && Math.abs(result.filteredEntropy - result.entropy) > 1e-9
    ? t("next_summary_filtered", I18N.number(result.entropy, 2), I18N.number(result.filteredEntropy, 2), kept, I18N.number(slider.vocab_size, 0))
    : t("next_summary", I18N.number(result.entropy, 2), kept, I18N.number(slider.vocab_size, 0));
  if (temperature <= 0) summary = t("greedy") + " · " + summary;
  if (!result.exact) summary += " " + t("approximate");
  $("next-summary").textContent = summary + droppedNote((data || explorer.results.next).dropped);
}

async function renderCurves() {
  setStatus(t("computing"));
  try {
    const data = await api("/api/temperature", { text: text(), top: 6 });
    explorer.results.curves = data;
    drawCurves(data);
    setStatus("");
  } catch (error) {
    setStatus(t("error", error.message), true);
  }
}

function drawCurves(data) {
  const curves = data.curves;
  const series = curves.candidates.map((c) => ({ name: `“${visible(c.text)}”`, xs: curves.temperatures, ys: c.probabilities }));
  series.push({ name: t("others", I18N.number(curves.vocab_size - curves.candidates.length, 0)), xs: curves.temperatures, ys: curves.other_mass, colour: "#999", dashed: true });
  series.push({ name: t("entropy_bits"), xs: curves.temperatures, ys: curves.entropy_bits, colour: "#222", dashed: true, right: true });
  drawLines($("temperature-curves"), series, { xTitle: t("temperature"), yTitle: t("probability"), rightTitle: "bits", yMax: 1 });
  const head = [t("filter"), t("setting"), t("survivors"), t("kept_mass")];
  $("filters-table").innerHTML = `<thead><tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join("")}</tr></thead><tbody>` +
    data.filters.effects.map((e) => `<tr><td>${e.filter}</td><td class="number">${e.filter === "top-k" ? e.value : I18N.number(e.value, 2)}</td>` +
      `<td class="number">${I18N.number(e.survivors, 0)}</td><td class="number">${I18N.percent(e.kept_mass)}</td></tr>`).join("") + "</tbody>";
}

// -- 4. Attention ---------------------------------------------------------------------------------

function attentionBody() {
  const layer = $("attention-layer").value;
  const head = $("attention-head").value;
  if (explorer.attentionAuto || layer === "") return { text: text() };
  return head === "average" ? { text: text(), layer: Number(layer), average: true } : { text: text(), layer: Number(layer), head: Number(head) };
}

function renderAttention(data) {
  explorer.attentionAuto = false;
  $("attention-layer").value = String(data.layer);
  $("attention-head").value = data.head === null ? "average" : String(data.head);
  const tokens = data.tokens.slice(data.shown_from);
  const who = data.head === null ? t("average") : t("head_n", data.head) + (data.query_groups > 1 ? t("kv_head", data.key_value_head, data.query_groups) : "");
  const shown = data.shown_from ? t("shown_last", tokens.length, data.tokens.length) : "";
  $("attention-summary").textContent = t("attention_summary", data.layer, who, data.tokens.length, shown) +
    (data.window ? t("window", data.window) : "") + droppedNote(data.dropped);
  if (explorer.attentionPosition === undefined || explorer.attentionPosition >= tokens.length) explorer.attentionPosition = tokens.length - 1;
  $("attention-tokens").innerHTML = tokens.map((token, i) => `<button type="button" class="token-choice" data-position="${i}">${escapeHtml(visible(token))}</button>`).join("");
  drawLooks(data);
}

// One token's row of the weights: the earlier tokens it reads, tinted by how much.
function drawLooks(data) {
  const tokens = data.tokens.slice(data.shown_from);
  const position = explorer.attentionPosition;
  const row = data.weights[position];
  drawHeatmap($("attention-heatmap"), data.weights, tokens, { highlight: position });
  const largest = Math.max(1e-9, ...row);
  document.querySelectorAll("#attention-tokens .token-choice").forEach((button, i) => {
    const weight = i <= position ? row[i] : 0;
    button.style.background = i === position ? "#c0504d" : shade(weight / largest, 265);
    button.style.color = i === position || weight / largest > 0.6 ? "#fff" : "#222";
    button.title = I18N.number(weight, 3);
    button.classList.toggle("chosen", i === position);
  });
  const links = row.slice(0, position + 1).map((weight, i) => ({ weight, i })).sort((a, b) => b.weight - a.weight).slice(0, 8);
  drawBars($("attention-looks"), [{ label: t("looks_at", visible(tokens[position])), value: 0, text: "", muted: true },
    ...links.map((link) => ({ label: `${visible(tokens[link.i])} #${link.i + data.shown_from}`, value: link.weight, text: I18N.number(link.weight, 3) }))]);
}

// -- 5. Feed-forward and layers -------------------------------------------------------------------

const LENS_COLUMNS = 64;

function renderLayers(data) {
  const lens = data.lens;
  const layerName = (name) => (name === "embeddings" ? t("embeddings_row") : t("after_layer", name.split(" ")[1]));
  let html = `<thead><tr><th></th>${lens.tokens.slice(-LENS_COLUMNS).map((token) => `<th class="token-head">${escapeHtml(visible(token))}</th>`).join("")}</tr></thead><tbody>`;
  for (let row = lens.readings.length - 1; row >= 0; row -= 1) {
    html += `<tr><th>${escapeHtml(layerName(lens.layers[row]))}</th>` + lens.readings[row].slice(-LENS_COLUMNS).map((reading) =>
      `<td style="background:${shade(reading.probability)};color:${reading.probability > 0.6 ? "#fff" : "#222"}" title="${I18N.percent(reading.probability)}">` +
      `${escapeHtml(shorten(visible(reading.token), 10))}</td>`).join("") + "</tr>";
  }
  $("lens-table").innerHTML = html + "</tbody>";
  const ff = data.feedforward;
  const total = (rows) => rows.flat().reduce((sum, value) => sum + value, 0);
  const share = total(ff.feedforward_norms) / (total(ff.feedforward_norms) + total(ff.attention_norms) || 1);
  $("ff-shape").textContent = t("ff_shape", ff.shape.description, I18N.percent(share, 0)) + droppedNote(data.dropped);
  const largest = Math.max(1e-9, ...ff.attention_norms.flat(), ...ff.feedforward_norms.flat()); // one scale: the two blocks compare
  const section = (title, rows) => `<tr><th colspan="${ff.tokens.length + 1}" class="section">${escapeHtml(title)}</th></tr>` +
    rows.map((values, layer) => `<tr><th>${escapeHtml(t("layer"))} ${layer}</th>${values.map((value) =>
      `<td style="background:${shade(value / largest, 150)};color:${value / largest > 0.6 ? "#fff" : "#222"}">${I18N.significant(value)}</td>`).join("")}</tr>`).join("");
  $("ff-table").innerHTML = `<thead><tr><th></th>${ff.tokens.map((token) => `<th class="token-head">${escapeHtml(visible(token))}</th>`).join("")}</tr></thead><tbody>` +
    section(t("attention_adds"), ff.attention_norms) + section(t("ff_adds"), ff.feedforward_norms) + "</tbody>";
}

// -- 6. Context length ----------------------------------------------------------------------------

function renderContext(data) {
  const fill = document.querySelector("#context-meter .fill");
  fill.style.width = `${Math.min(100, (100 * data.text_tokens) / data.context_length)}%`;
  fill.classList.toggle("over", !data.fits);
  $("context-summary").textContent = t("context_summary", I18N.number(data.text_tokens, 0), I18N.number(data.text_words, 0),
    I18N.number(data.words_per_token, 2), I18N.number(data.context_length, 0)) + " " + (data.fits ? t("fits") : "");
  $("context-dropped").innerHTML = data.fits ? "" :
    `${escapeHtml(t("cut", I18N.number(data.dropped_tokens, 0), I18N.number(data.dropped_characters, 0)))} <del>${escapeHtml(data.dropped_text)}</del>`;
  const head = [t("model_name"), t("context_tokens"), t("pages_rule"), t("pages_measured")];
  $("context-table").innerHTML = `<thead><tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join("")}</tr></thead><tbody>` +
    data.rows.map((row) => `<tr class="source-${row.source}"><td>${escapeHtml(row.name)} <span class="muted">(${escapeHtml(t("source_" + row.source))})</span></td>` +
      `<td class="number">${I18N.number(row.context_tokens, 0)}</td><td class="number">${I18N.number(row.pages_rule_of_thumb, 1)}</td>` +
      `<td class="number">${I18N.number(row.pages_measured, 1)}</td></tr>`).join("") + "</tbody>";
  const chart = $("context-cost-chart");
  if (!data.cost.length) {
    chart.textContent = t("not_measured");
    return;
  }
  const lengths = data.cost.map((cost) => cost.length);
  const series = [{ name: `${t("milliseconds")} (${data.device})`, xs: lengths, ys: data.cost.map((cost) => cost.ms), markers: true }];
  if (data.cost.every((cost) => cost.peak_added_bytes !== null)) {
    series.push({ name: t("mebibytes"), xs: lengths, ys: data.cost.map((cost) => cost.peak_added_bytes / 2 ** 20), right: true, dashed: true, markers: true });
  }
  drawLines(chart, series, { xTitle: t("tokens_read"), yTitle: t("milliseconds"), rightTitle: series.length > 1 ? t("mebibytes") : "", logX: true });
}

// -- figures: PNG and SVG, drawn by the server --------------------------------------------------

function renderDownloads() {
  document.querySelectorAll(".downloads").forEach((box) => {
    box.innerHTML = `<span class="muted">${escapeHtml(t("download"))}</span> ` + box.dataset.figures.split(" ").map((name) =>
      `<span class="figure-links">${escapeHtml(name)} ` + ["png", "svg"].map((format) =>
        `<a href="/api/figure/${name}.${format}" data-figure="${name}" data-format="${format}">${format.toUpperCase()}</a>`).join(" · ") + "</span>").join(" ");
  });
}

async function downloadFigure(name, format) {
  setStatus(t("computing"));
  try {
    const response = await fetch(`/api/figure/${name}.${format}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ...FIGURE_BODIES[name](), lang: I18N.lang }),
    });
    if (!response.ok) {
      const data = await response.json().catch(() => null);
      throw new Error((data && data.error && data.error.message) || response.statusText);
    }
    const url = URL.createObjectURL(await response.blob());
    const link = document.createElement("a");
    link.href = url;
    link.download = `lanterne-${name}.${format}`;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    setStatus("");
  } catch (error) {
    setStatus(t("error", error.message), true);
  }
}

// -- language, and starting up --------------------------------------------------------------------

function setLanguage(lang) {
  const previous = I18N.lang;
  I18N.lang = lang;
  try { localStorage.setItem("lanterne-lang", lang); } catch (error) { /* private browsing: the choice lasts this page */ }
  I18N.apply();
  renderDownloads();
  if (explorer.info) {
    describeModel();
    $("attention-head").options[0].textContent = t("average");
    $("tokens-named").options[0].textContent = t("none");
    fillEmbeddingExamples(previous);
    if (text() === WORDS[previous].default_text) $("text").value = t("default_text");
  }
  for (const [tab, data] of Object.entries(explorer.results)) {
    if (tab === "curves") drawCurves(data);
    else TABS[tab].render(data);
  }
  if (window.Generate) window.Generate.refresh();
}

function describeModel() {
  const config = explorer.info.config;
  $("model-shape").textContent = t("model_shape", config.n_layers, config.n_heads, config.d_model, I18N.number(explorer.info.parameters, 0),
    I18N.number(config.context_length, 0));
}

// The load, for the teacher: generations running or waiting ("students") and tokens/s, every 5 s.
async function showLoad() {
  try {
    const status = await api("/api/status");
    $("load").textContent = t("load_line", status.running + status.waiting, I18N.number(status.tokens_per_second, 0));
  } catch (error) {
    $("load").textContent = "";
  }
}

async function start() {
  I18N.lang = I18N.chosen();
  I18N.apply();
  renderDownloads();
  $("text").value = t("default_text");
  const info = await api("/api/info");
  explorer.info = info;
  $("model-name").textContent = info.model_name;
  describeModel();
  $("tokens-named").innerHTML = `<option value="">${escapeHtml(t("none"))}</option>` + info.vocabularies.map((name) => `<option>${escapeHtml(name)}</option>`).join("");
  $("tokens-named").value = info.vocabularies.includes("o200k_base") ? "o200k_base" : info.vocabularies[0] ?? "";
  const config = info.config;
  $("attention-layer").innerHTML = Array.from({ length: config.n_layers }, (_, i) => `<option>${i}</option>`).join("");
  $("attention-head").innerHTML = `<option value="average">${escapeHtml(t("average"))}</option>` +
    Array.from({ length: config.n_heads }, (_, i) => `<option>${i}</option>`).join("");
  explorer.attentionAuto = true;
  fillEmbeddingExamples(null);
  if (window.Generate) window.Generate.setup(info);
  showLoad();
  setInterval(showLoad, 5000);
  const requested = window.location.hash.slice(1);
  showTab(TABS[requested] || requested === "generate" ? requested : "tokens");
}

document.querySelectorAll("[role=tab]").forEach((button) => button.addEventListener("click", () => showTab(button.dataset.tab)));
$("compute").addEventListener("click", () => compute(explorer.tab, true));
$("text").addEventListener("keydown", (event) => { if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) compute(explorer.tab, true); });
$("language").addEventListener("click", () => setLanguage(I18N.lang === "fr" ? "en" : "fr"));
["temperature", "top-k", "top-p"].forEach((id) => $(id).addEventListener("input", () => renderNext()));
$("curves-compute").addEventListener("click", renderCurves);
$("attention-layer").addEventListener("change", () => compute("attention"));
$("attention-head").addEventListener("change", () => compute("attention"));
$("attention-focused").addEventListener("click", () => { explorer.attentionAuto = true; compute("attention", true); });
$("murder-mystery").addEventListener("click", () => {
  $("text").value = explorer.info.examples.murder_mystery[I18N.lang];
  explorer.attentionAuto = true;
  explorer.attentionPosition = undefined;
  compute("attention", true);
});
$("attention-tokens").addEventListener("click", (event) => {
  const button = event.target.closest(".token-choice");
  if (!button) return;
  explorer.attentionPosition = Number(button.dataset.position);
  drawLooks(explorer.results.attention);
});
["embedding-word", "embedding-count", "embedding-map-words", "analogy-a", "analogy-b", "analogy-c"].forEach((id) =>
  $(id).addEventListener("change", () => compute("embeddings")));
["context-cost", "context-cost-tokens"].forEach((id) => $(id).addEventListener("change", () => compute("context")));
$("tokens-named").addEventListener("change", () => compute("tokens"));
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-figure]");
  if (!link) return;
  event.preventDefault();
  downloadFigure(link.dataset.figure, link.dataset.format);
});

window.Lanterne = { distribution, explorer, setLanguage, showTab, compute };
start().catch((error) => setStatus(t("error", error.message), true));
