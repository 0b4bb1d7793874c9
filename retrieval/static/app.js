// The hashdex search page: a client of the public HTTP API (/stats, /search,
// /neighbourhood, /documents), nothing more. No build step, no dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const state = { stats: null, lastSearch: null, queryCode: null, selected: null };

// -- talking to the API ---------------------------------------------------------------------

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  const key = sessionStorage.getItem("hashdex-api-key");
  if (key) headers["X-API-Key"] = key;
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) {
    $("key-form").hidden = false;
    throw new Error("This index needs an API key: enter it above.");
  }
  if (!response.ok) throw new Error(data.error || `${method} ${path}: HTTP ${response.status}`);
  return data;
}

function showError(error) {
  $("error").textContent = error ? error.message : "";
  $("error").hidden = !error;
}

// -- drawing --------------------------------------------------------------------------------

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

// A bar chart of labelled counts, as SVG; each bar's title gives its exact value.
function barChart(container, labels, counts, caption) {
  container.replaceChildren();
  const width = 320, height = 120, pad = 18;
  const max = Math.max(1, ...counts);
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height + pad}`, role: "img",
    "aria-label": caption });
  const step = width / Math.max(1, counts.length);
  counts.forEach((count, i) => {
    const h = count ? Math.max(2, (count / max) * (height - 14)) : 0;
    const bar = svgEl("rect", { x: i * step + 1, y: height - h, width: Math.max(1, step - 2),
      height: h, class: "bar", "data-label": labels[i], "data-count": count });
    const title = svgEl("title", {});
    title.textContent = `${labels[i]}: ${count}`;
    bar.appendChild(title);
    svg.appendChild(bar);
    if (counts.length <= 24 || i % Math.ceil(counts.length / 12) === 0) {
      const label = svgEl("text", { x: i * step + step / 2, y: height + 13, class: "axis" });
      label.textContent = labels[i];
      svg.appendChild(label);
    }
    if (count && counts.length <= 24) {
      const value = svgEl("text", { x: i * step + step / 2, y: height - h - 3, class: "value" });
      value.textContent = count;
      svg.appendChild(value);
    }
  });
  container.appendChild(svg);
}

// A code as a row-wrapped strip of cells; `cls(i)` names the class of bit i.
function drawBits(container, n, cls, title) {
  container.replaceChildren();
  for (let i = 0; i < n; i++) {
    const cell = el("span", { class: `bit ${cls(i)}`, title: title(i), "data-bit": i });
    container.appendChild(cell);
  }
}

function drawQueryCode() {
  const code = state.queryCode;
  if (!code) return $("query-code").replaceChildren();
  const other = state.selected && state.selected.code;
  drawBits($("query-code"), code.length,
    (i) => (code[i] === "1" ? "one" : "zero") + (other && other[i] !== code[i] ? " differs" : ""),
    (i) => `bit ${i}: ${code[i]}` + (other && other[i] !== code[i] ? ` (result: ${other[i]})` : ""));
  if (other) {
    const differ = [...code].filter((b, i) => b !== other[i]).length;
    $("diff-caption").textContent =
      `${differ} bits differ from ${state.selected.id} (outlined).`;
  }
}

function drawOverview(stats) {
  const fields = Object.keys(stats.metadata_fields || {});
  $("overview-line").textContent = `${stats.documents} documents · ${stats.bits} bits · ` +
    `${stats.buckets.count} distinct codes` + (fields.length ? ` · fields: ${fields.join(", ")}` : "");
  const balance = stats.bit_balance.per_bit;
  drawBits($("bit-balance"), balance.length, () => "balance",
    (i) => `bit ${i}: set in ${(balance[i] * 100).toFixed(1)}% of documents`);
  // Colour by distance from the ideal 0.5: white at 0.5, dark at 0 or 1.
  [...$("bit-balance").children].forEach((cell, i) => {
    const skew = Math.abs(balance[i] - 0.5) * 2;
    cell.style.background = `hsl(215, 70%, ${Math.round(95 - skew * 70)}%)`;
  });
  const histogram = stats.buckets.size_histogram;
  barChart($("bucket-chart"), Object.keys(histogram), Object.values(histogram),
    "distinct codes by bucket size");
}

// One filter field per metadata key: a choice of its values, or free text.
function drawFilters(fields) {
  const container = $("filters");
  container.replaceChildren();
  for (const [key, values] of Object.entries(fields)) {
    const label = el("label", {}, `${key} `);
    let input;
    if (values) {
      input = el("select", { "data-key": key, "aria-label": `filter ${key}` });
      input.appendChild(el("option", { value: "" }, "any"));
      values.forEach((v) => input.appendChild(el("option", { value: JSON.stringify(v) }, String(v))));
    } else {
      input = el("input", { "data-key": key, placeholder: "any", "aria-label": `filter ${key}` });
    }
    label.appendChild(input);
    container.appendChild(label);
  }
}

const STOPWORDS = new Set(("the and for are but not you all any can her was one our out has his how " +
  "its who did get may him new now old see two way use from have that this with what when " +
  "where which will your they them than then into over such only also").split(" "));

// The text with the query's words (and words they begin, a plural's "s" dropped) marked, as
// DOM nodes, never as HTML.
function highlighted(text, query, limit = 320) {
  const words = [...new Set(query.toLowerCase().match(/[\p{L}\p{N}]{3,}/gu) || [])]
    .filter((w) => !STOPWORDS.has(w)).map((w) => w.replace(/(?<=...)s$/u, ""));
  const snippet = text.length > limit ? text.slice(0, limit) + "…" : text;
  const span = el("span", { class: "snippet" });
  if (!words.length) { span.textContent = snippet; return span; }
  // Words are letters and digits only, so they need no escaping in the pattern.
  const pattern = new RegExp(`(?<![\\p{L}\\p{N}])((?:${words.join("|")})[\\p{L}\\p{N}]*)`, "giu");
  snippet.split(pattern).forEach((part, i) => {
    span.appendChild(i % 2 ? el("mark", {}, part) : document.createTextNode(part));
  });
  return span;
}

function drawResults(response, query) {
  const list = $("results");
  list.replaceChildren();
  const hits = response.results[0];
  $("result-summary").textContent = hits.length
    ? `${hits.length} results, ordered by ${response.order === "cosine" ? "cosine (re-ranked)" : "Hamming distance"}`
    : "No documents match.";
  for (const hit of hits) {
    const item = el("li", { class: "hit", "data-id": hit.id, tabindex: "0" });
    const head = el("div", { class: "hit-head" });
    head.append(el("strong", { class: "hit-id" }, hit.id),
      el("span", { class: "distance", title: "Hamming distance" }, `d = ${hit.distance}`),
      el("span", { class: "score", title: "score" }, `score ${hit.score.toFixed(3)}`));
    const remove = el("button", { class: "delete", type: "button", title: `delete ${hit.id}` }, "delete");
    remove.addEventListener("click", (event) => { event.stopPropagation(); deleteDocument(hit.id); });
    head.appendChild(remove);
    item.append(head, highlighted(hit.text, query));
    const meta = el("div", { class: "metadata" });
    for (const [key, value] of Object.entries(hit.metadata)) {
      meta.appendChild(el("span", { class: "chip" }, `${key}: ${typeof value === "object" ? JSON.stringify(value) : value}`));
    }
    item.appendChild(meta);
    const select = () => {
      state.selected = hit;
      list.querySelectorAll(".hit").forEach((li) => li.classList.toggle("selected", li === item));
      drawQueryCode();
    };
    item.addEventListener("click", select);
    item.addEventListener("keydown", (event) => { if (event.key === "Enter") select(); });
    list.appendChild(item);
  }
}

// -- actions --------------------------------------------------------------------------------

function searchBody() {
  const body = { texts: [$("query").value], k: Number($("k").value) || 10, codes: true };
  if ($("radius").value !== "") body.radius = Number($("radius").value);
  if ($("rescore").checked) body.rescore = Math.max(100, body.k);
  const where = {};
  for (const input of $("filters").querySelectorAll("[data-key]")) {
    if (input.value === "") continue;
    where[input.dataset.key] = input.tagName === "SELECT" ? JSON.parse(input.value) : input.value;
  }
  if (Object.keys(where).length) body.where = where;
  return body;
}

async function search() {
  const body = searchBody();
  const response = await api("POST", "/search", body);
  state.lastSearch = body;
  state.queryCode = response.query_codes[0];
  state.selected = null;
  $("diff-caption").textContent = "Click a result to see the bits its code differs in.";
  drawResults(response, body.texts[0]);
  drawQueryCode();
  const hits = response.results[0];
  const farthest = hits.length ? hits[hits.length - 1].distance : 0;
  const radius = body.radius !== undefined ? body.radius : Math.max(4, farthest);
  const around = await api("POST", "/neighbourhood", { texts: body.texts, radius });
  const counts = around.results[0].counts;
  barChart($("neighbourhood-chart"), counts.map((_, d) => String(d)), counts,
    "documents at each Hamming distance from the query");
  const total = counts.reduce((a, b) => a + b, 0);
  $("neighbourhood-total").textContent = `${total} documents within ${radius} bits.`;
  $("results").dataset.query = body.texts[0];  // the page shows this query's answers now
}

async function refresh() {
  state.stats = await api("GET", "/stats");
  drawOverview(state.stats);
  if (state.lastSearch) await search();
}

async function addDocument() {
  const metadataText = $("add-metadata").value.trim();
  let metadata = {};
  if (metadataText) {
    try { metadata = JSON.parse(metadataText); } catch { metadata = null; }
    if (!metadata || typeof metadata !== "object" || Array.isArray(metadata)) {
      throw new Error("metadata must be a JSON object, e.g. {\"topic\": \"space\"}");
    }
  }
  const doc = { ...metadata, id: $("add-id").value, text: $("add-text").value };
  const response = await api("POST", "/documents", { documents: [doc] });
  $("add-form").reset();
  await refresh();
  $("add-status").textContent = `Added ${doc.id}; the index has ${response.documents} documents.`;
}

async function deleteDocument(id) {
  const response = await api("DELETE", `/documents/${encodeURIComponent(id)}`);
  await refresh();
  $("add-status").textContent = `Deleted ${id}; the index has ${response.documents} documents.`;
}

// Run an action, showing its error (if any) in the page.
function guarded(action) {
  return async (event) => {
    if (event) event.preventDefault();
    showError(null);
    try { await action(); } catch (error) { showError(error); }
  };
}

$("search-form").addEventListener("submit", guarded(search));
$("add-form").addEventListener("submit", guarded(addDocument));
$("key-form").addEventListener("submit", guarded(async () => {
  sessionStorage.setItem("hashdex-api-key", $("api-key").value);
  $("key-form").hidden = true;
  await start();
}));

async function start() {
  await refresh();
  drawFilters(state.stats.metadata_fields || {});
}
guarded(start)();
