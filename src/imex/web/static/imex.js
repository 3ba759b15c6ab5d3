// imex portal: page actions are calls to the JSON API with the session's CSRF token; nothing here
// builds HTML from data (text goes in with textContent), so data cannot become markup.
"use strict";

const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

async function api(url, method, body) {
  const options = {method: method, credentials: "same-origin",
                   headers: {"Accept": "application/json", "X-CSRF-Token": csrf()}};
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(url, options);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const message = (data && (data.detail || data.title)) || ("HTTP " + response.status);
    throw new Error(message);
  }
  return data;
}

function formBody(form) {
  const body = {};
  for (const field of form.elements) {
    if (!field.name || field.disabled || field.type === "submit") continue;
    if (field.dataset.many !== undefined) {
      body[field.name] = body[field.name] || [];
      if (field.tagName === "SELECT") body[field.name].push(field.value);
      else if (field.checked) body[field.name].push(field.value);
    } else if (field.type === "checkbox") {
      body[field.name] = field.checked;
    } else if (field.type === "number") {
      if (field.value !== "") body[field.name] = Number(field.value);
    } else if (field.value !== "" || field.required) {
      body[field.name] = field.value;
    }
  }
  return body;
}

function resultBox(el) {
  const scope = el.closest("form, td, .actions, section") || document.body;
  return scope.querySelector("[data-result]");
}

function show(el, data, ok, message) {
  let box = resultBox(el);
  if (!box) {  // no place for the answer next to the control: one is made, never a pop-up
    box = document.createElement("p");
    box.className = "result";
    box.dataset.result = "";
    el.insertAdjacentElement("afterend", box);
  }
  box.setAttribute("role", ok ? "status" : "alert");
  box.classList.toggle("error", !ok);
  box.classList.toggle("ok", ok);
  box.textContent = message;
}

function outcome(el, data) {
  const key = el.dataset.show;
  if (key === "qr" && data) {
    const holder = document.getElementById("enrol-qr");
    // the SVG comes from the hub itself (segno), parsed as an image, never as HTML
    const img = document.createElement("img");
    img.alt = "QR code to scan with your authenticator app";
    img.src = "data:image/svg+xml;base64," + btoa(data.qr_svg);
    const key = document.createElement("p");
    key.textContent = "Key: " + data.secret;
    holder.replaceChildren(img, key);
    return "Scan the code, then enter the code the app shows.";
  }
  if (key === "message" && data && data.message !== undefined) return data.message;
  if (key && data && data[key] !== undefined) return key.replace(/_/g, " ") + ": " + data[key];
  return "Done.";
}

async function act(el, url, method, body) {
  if (el.dataset.confirm && !window.confirm(el.dataset.confirm)) return;
  if (el.dataset.prompt) {
    const answer = window.prompt(el.dataset.ask || el.dataset.prompt);
    if (answer === null || answer.trim() === "") return;
    body = Object.assign(body || {}, {[el.dataset.prompt]: answer.trim()});
  }
  el.setAttribute("aria-busy", "true");
  // one submission at a time: a second click while the first is on its way sends nothing
  const submit = el.tagName === "FORM" ? el.querySelector("button[type=submit]") : el;
  if (submit) submit.disabled = true;
  try {
    const data = await api(url, method, body);
    if (el.dataset.reload !== undefined) { window.location.reload(); return; }
    if (el.dataset.go && data) {  // e.g. data-go="/requests/{id}": the page of what was just made
      window.location.assign(el.dataset.go.replace(/\{(\w+)\}/g, (_, key) => encodeURIComponent(data[key])));
      return;
    }
    // an answer that says it failed (a C-ECHO nobody answered) is shown as a failure
    show(el, data, !(data && data.ok === false), outcome(el, data));
    if (el.dataset.reset !== undefined && el.reset) el.reset();
  } catch (err) {
    show(el, null, false, err.message);
  } finally {
    el.removeAttribute("aria-busy");
    if (submit) submit.disabled = false;
  }
}

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!form.dataset.api) return;
  event.preventDefault();
  const body = formBody(form);
  // a {field} in the address takes that field's value (e.g. the folder chosen in a list)
  const url = form.dataset.api.replace(/\{(\w+)\}/g, (_, key) => {
    const value = body[key];
    delete body[key];
    return encodeURIComponent(value);
  });
  act(form, url, form.dataset.method || "POST", body);
});

// an Edit button shows (or hides again) the form that changes its row's object
document.addEventListener("click", (event) => {
  const toggle = event.target.closest("button[data-edit]");
  if (!toggle) return;
  const target = document.getElementById(toggle.dataset.edit);
  if (!target) return;
  target.hidden = !target.hidden;
  toggle.setAttribute("aria-expanded", String(!target.hidden));
  if (!target.hidden) { const first = target.querySelector("input:not([type=hidden]), select"); if (first) first.focus(); }
});

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-api]");
  if (!button) return;
  event.preventDefault();
  const method = button.dataset.method || "POST";
  const body = button.dataset.body ? JSON.parse(button.dataset.body) : {};
  act(button, button.dataset.api, method, method === "DELETE" ? undefined : body);
});

// -- live worklist ------------------------------------------------------------------------------------

function cell(row, text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  if (text instanceof Node) td.appendChild(text); else td.textContent = text == null ? "" : String(text);
  row.appendChild(td);
  return td;
}

const fmtDate = (d) => (d && d.length === 8) ? d.slice(0, 4) + "-" + d.slice(4, 6) + "-" + d.slice(6, 8) : (d || "");
const fmtTime = (t) => t ? t.slice(0, 16).replace("T", " ") : "";

let warnHours = 24;

function transferRow(t) {
  const tr = document.createElement("tr");
  tr.dataset.id = t.id;
  tr.className = "state-row-" + t.state;
  const state = document.createElement("span");
  state.className = "state state-" + t.state;
  state.textContent = t.state;
  const first = cell(tr, state);
  if (t.retrying) {
    const badge = document.createElement("span");
    badge.className = "state state-retrying";
    badge.textContent = "retrying";
    const line = document.createElement("small");
    line.className = "error-line";
    const error = (t.last_error || "").length > 90 ? t.last_error.slice(0, 87) + "..." : t.last_error;
    line.textContent = "attempt " + t.attempts + " failed: " + error + (t.next_attempt_at ? " · next " + fmtTime(t.next_attempt_at) : "");
    first.append(" ", badge, document.createElement("br"), line);
  }
  if (t.expires_at && Date.parse(t.expires_at) <= Date.now() + warnHours * 3600 * 1000) {
    const soon = document.createElement("span");
    soon.className = "state state-expiring";
    soon.title = "deleted from the hub at " + t.expires_at;
    soon.textContent = "expires soon";
    first.append(" ", soon);
  }
  const who = document.createElement("span");
  const link = document.createElement("a");
  link.href = "/transfers/" + encodeURIComponent(t.id);
  link.textContent = t.patient_name;
  const id = document.createElement("small");
  id.textContent = t.patient_id;
  who.append(link, document.createElement("br"), id);
  cell(tr, who);
  cell(tr, fmtDate(t.study_date));
  cell(tr, t.modalities);
  cell(tr, t.description);
  cell(tr, t.images, "num");
  cell(tr, t.source.ods);
  const to = document.createElement("span");
  const node = document.createElement("small");
  node.textContent = t.destination.node;
  to.append(t.destination.ods, document.createElement("br"), node);
  cell(tr, to);
  cell(tr, fmtTime(t.received_at));
  cell(tr, fmtTime(t.delivered_at));
  return tr;
}

function liveWorklist(table) {
  const seconds = Number(table.dataset.live) || 10;
  warnHours = Number(table.dataset.warnHours) || 24;
  const status = document.getElementById("live-status");
  const params = new URLSearchParams(window.location.search);
  params.delete("page");
  if (!params.has("direction")) params.set("direction", "incoming");
  for (const [key, value] of [...params.entries()]) if (value === "") params.delete(key);
  params.set("limit", "50");
  async function refresh() {
    try {
      const data = await api("/api/v1/transfers?" + params.toString(), "GET");
      const body = table.tBodies[0];
      const rows = data.items.map(transferRow);
      if (rows.length === 0) {
        const tr = document.createElement("tr");
        tr.className = "empty";
        const td = cell(tr, "No transfers match.");
        td.colSpan = 10;
        rows.push(tr);
      }
      body.replaceChildren(...rows);
      document.getElementById("total").textContent = data.total;
      if (status) status.textContent = "Live: updated " + new Date().toLocaleTimeString();
    } catch (err) {
      if (status) status.textContent = "Live updates paused: " + err.message;
    }
  }
  window.setInterval(() => { if (!document.hidden) refresh(); }, seconds * 1000);
}

// -- audit trail --------------------------------------------------------------------------------------

function auditSearch(form) {
  const table = document.getElementById("audit");
  const count = document.getElementById("audit-count");
  function query() {
    const params = new URLSearchParams();
    for (const field of form.elements) {
      if (!field.name || field.value === "") continue;
      params.set(field.name, field.type === "datetime-local" ? new Date(field.value).toISOString() : field.value);
    }
    return params;
  }
  async function run() {
    const params = query();
    document.getElementById("export-csv").href = "/api/v1/audit/export?format=csv&" + params.toString();
    document.getElementById("export-atna").href = "/api/v1/audit/export?format=atna&" + params.toString();
    params.set("limit", "200");
    try {
      const data = await api(form.dataset.audit + "?" + params.toString(), "GET");
      const rows = data.items.map((e) => {
        const tr = document.createElement("tr");
        tr.className = "outcome-" + e.outcome;
        cell(tr, fmtTime(e.at));
        cell(tr, e.username + (e.institution ? " · " + e.institution : ""));
        cell(tr, e.ip);
        cell(tr, e.action);
        cell(tr, e.outcome);
        // the patient by name and ID; the study UID, long and rarely read, as a hover title
        const patient = document.createElement("span");
        patient.textContent = [e.patient_name, e.patient_id].filter(Boolean).join(" · ");
        if (e.study_uid) patient.title = "Study " + e.study_uid;
        cell(tr, patient);
        cell(tr, e.object_type ? e.object_type + " " + e.object_id : "");
        cell(tr, e.detail);
        return tr;
      });
      table.tBodies[0].replaceChildren(...rows);
      count.textContent = data.total + " event(s)" + (data.total > rows.length ? ", newest " + rows.length + " shown" : "");
    } catch (err) {
      count.textContent = err.message;
    }
  }
  form.addEventListener("submit", (event) => { event.preventDefault(); run(); });
  run();
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.querySelector("table[data-live]");
  if (table) liveWorklist(table);
  const audit = document.querySelector("form[data-audit]");
  if (audit) auditSearch(audit);
});
