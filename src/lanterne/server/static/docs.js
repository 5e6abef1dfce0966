// The API's documentation, drawn from /openapi.json: every path, its method, its request fields and answers.
// (FastAPI's own /docs loads Swagger UI from a CDN; this page uses nothing but the server.)
"use strict";

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function resolve(schema, spec) {
  while (schema && schema.$ref) schema = schema.$ref.split("/").slice(1).reduce((node, key) => node[key], spec);
  return schema || {};
}

function typeOf(schema, spec) {
  schema = resolve(schema, spec);
  if (schema.anyOf) return schema.anyOf.map((part) => typeOf(part, spec)).join(" | ");
  if (schema.enum) return schema.enum.map((value) => JSON.stringify(value)).join(" | ");
  if (schema.const !== undefined) return JSON.stringify(schema.const);
  if (schema.type === "array") return `${typeOf(schema.items || {}, spec)}[]`;
  return schema.type || schema.title || "any";
}

function bounds(schema) {
  const parts = [];
  for (const [key, sign] of [["minimum", "≥"], ["maximum", "≤"], ["exclusiveMinimum", ">"], ["exclusiveMaximum", "<"],
    ["minLength", "length ≥"], ["maxLength", "length ≤"], ["minItems", "items ≥"], ["maxItems", "items ≤"]]) {
    if (schema[key] !== undefined) parts.push(`${sign} ${schema[key]}`);
  }
  for (const part of schema.anyOf || []) parts.push(...bounds(part));
  return parts;
}

function fieldsTable(schema, spec) {
  schema = resolve(schema, spec);
  const properties = schema.properties || {};
  const required = new Set(schema.required || []);
  const rows = Object.entries(properties).map(([name, field]) => {
    const resolved = resolve(field, spec);
    const details = [field.description || resolved.description || "", bounds(resolved).join(", ")].filter((text) => text).join(" — ");
    const fallback = field.default !== undefined ? JSON.stringify(field.default) : required.has(name) ? "required" : "";
    return `<tr><td><code>${escapeHtml(name)}</code></td><td><code>${escapeHtml(typeOf(field, spec))}</code></td>` +
      `<td><code>${escapeHtml(fallback)}</code></td><td>${escapeHtml(details)}</td></tr>`;
  });
  if (!rows.length) return "";
  return `<table class="fields"><thead><tr><th>field</th><th>type</th><th>default</th><th></th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
}

function operationHtml(path, method, operation, spec, index) {
  let html = `<section class="operation" id="op-${index}"><h2><span class="method ${method}">${method.toUpperCase()}</span> ${escapeHtml(path)}</h2>`;
  const text = operation.description || operation.summary || "";
  if (text) html += `<p>${escapeHtml(text)}</p>`;
  const parameters = operation.parameters || [];
  if (parameters.length) {
    html += "<h3>parameters</h3><ul>" + parameters.map((p) => `<li><code>${escapeHtml(p.name)}</code> (${escapeHtml(p.in)}, ${escapeHtml(typeOf(p.schema || {}, spec))})</li>`).join("") + "</ul>";
  }
  const body = operation.requestBody && operation.requestBody.content && operation.requestBody.content["application/json"];
  if (body) html += "<h3>request body (JSON)</h3>" + fieldsTable(body.schema, spec);
  const answers = Object.entries(operation.responses || {}).map(([code, answer]) =>
    `<li><code>${escapeHtml(code)}</code> ${escapeHtml(answer.description || "")} <span class="muted">${escapeHtml(Object.keys(answer.content || {}).join(", "))}</span></li>`);
  if (answers.length) html += `<h3>answers</h3><ul>${answers.join("")}</ul>`;
  return html + "</section>";
}

async function showDocs() {
  const spec = await (await fetch("/openapi.json")).json();
  document.getElementById("version").textContent = `${spec.info.title} ${spec.info.version}`;
  document.getElementById("description").textContent = spec.info.description || "";
  const operations = [];
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, operation] of Object.entries(methods)) operations.push([path, method, operation]);
  }
  document.getElementById("index").innerHTML = operations.map(([path, method], i) => `<a href="#op-${i}">${method.toUpperCase()} ${escapeHtml(path)}</a>`).join("");
  document.getElementById("operations").innerHTML = operations.map(([path, method, operation], i) => operationHtml(path, method, operation, spec, i)).join("");
}

showDocs().catch((error) => { document.getElementById("operations").textContent = `cannot read /openapi.json: ${error.message}`; });
