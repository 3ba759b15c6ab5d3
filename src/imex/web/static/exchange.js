// imex exchanges: searching one's own PACS and sending from it, attaching documents, following an
// exchange's progress. Every action is a JSON API call with the session's CSRF token; data goes into the
// page with textContent only.
"use strict";

// a DICOM person name (FAMILY^GIVEN^MIDDLE) as a person reads it: "FAMILY, Given Middle"
function personName(pn) {
  const parts = String(pn || "").split("=")[0].split("^");
  const family = parts[0].trim().toUpperCase();
  const given = parts.slice(1, 3).map((p) => p.trim()).filter(Boolean).join(" ")
    .toLowerCase().replace(/(^|\s)\S/g, (c) => c.toUpperCase());
  return given ? family + ", " + given : family;
}

(function () {
  const token = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  async function call(url, options) {
    options = Object.assign({credentials: "same-origin"}, options || {});
    options.headers = Object.assign({"Accept": "application/json", "X-CSRF-Token": token()}, options.headers || {});
    const response = await fetch(url, options);
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) throw new Error((data && (data.detail || data.title)) || ("HTTP " + response.status));
    return data;
  }

  function say(form, ok, text) {
    const box = form.querySelector("[data-result]");
    if (!box) return;
    box.classList.toggle("error", !ok);
    box.classList.toggle("ok", ok);
    box.textContent = text;
  }

  function td(tr, text) {
    const cell = document.createElement("td");
    if (text instanceof Node) cell.appendChild(text); else cell.textContent = text == null ? "" : String(text);
    tr.appendChild(cell);
    return cell;
  }

  const fmtDate = (d) => (d && d.length === 8) ? d.slice(0, 4) + "-" + d.slice(4, 6) + "-" + d.slice(6, 8) : (d || "");

  function upload(transactionId, file) {
    const body = new FormData();
    body.append("transaction_id", String(transactionId));
    body.append("file", file, file.name);
    return call("/api/v1/attachments", {method: "POST", body: body});
  }

  // -- search one's own PACS -----------------------------------------------------------------------------
  const search = document.getElementById("pacs-search");
  const results = document.getElementById("pacs-results");

  async function showSeries(button, node, uid) {
    const row = button.closest("tr");
    const next = row.nextElementSibling;
    if (next && next.classList.contains("series-row")) { next.remove(); return; }
    button.setAttribute("aria-busy", "true");
    try {
      const data = await call("/api/v1/pacs/" + encodeURIComponent(node) + "/studies/" + encodeURIComponent(uid) + "/series");
      const tr = document.createElement("tr");
      tr.className = "series-row";
      const cell = document.createElement("td");
      cell.colSpan = 9;
      const list = document.createElement("ul");
      for (const s of data.items) {
        const li = document.createElement("li");
        li.textContent = "Series " + (s.number || "?") + ": " + (s.modality || "") + " " + (s.description || "") +
          (s.body_part ? " (" + s.body_part + ")" : "") + ", " + s.images + (s.images === 1 ? " image" : " images");
        list.appendChild(li);
      }
      if (!data.items.length) { const li = document.createElement("li"); li.textContent = "No series."; list.appendChild(li); }
      cell.appendChild(list);
      tr.appendChild(cell);
      row.after(tr);
    } catch (err) {
      say(search, false, err.message);
    } finally {
      button.removeAttribute("aria-busy");
    }
  }

  if (search && results) {
    search.addEventListener("submit", async (event) => {
      event.preventDefault();
      const fields = new FormData(search);
      const node = fields.get("node");
      const params = new URLSearchParams();
      for (const [key, value] of fields.entries()) if (key !== "node" && String(value).trim()) params.set(key, String(value).trim());
      search.setAttribute("aria-busy", "true");
      const body = results.querySelector("tbody");
      try {
        const data = await call("/api/v1/pacs/" + encodeURIComponent(node) + "/studies?" + params.toString());
        body.replaceChildren();
        for (const st of data.items) {
          const tr = document.createElement("tr");
          tr.dataset.uid = st.study_uid;
          const box = document.createElement("input");
          box.type = "checkbox";
          box.name = "study";
          box.value = st.study_uid;
          box.setAttribute("aria-label", "Send study " + (st.accession || st.study_uid));
          td(tr, box);
          td(tr, personName(st.patient_name) + " · " + st.patient_id);
          td(tr, fmtDate(st.birth_date));
          td(tr, fmtDate(st.study_date));
          td(tr, st.modalities.join(" "));
          td(tr, st.description);
          td(tr, st.accession);
          td(tr, st.images);
          const more = document.createElement("button");
          more.type = "button";
          more.textContent = "Series";
          more.addEventListener("click", () => showSeries(more, node, st.study_uid));
          td(tr, more);
          body.appendChild(tr);
        }
        say(search, true, data.items.length + " stud" + (data.items.length === 1 ? "y" : "ies") + " found on " + data.node);
      } catch (err) {
        say(search, false, err.message);
      } finally {
        search.removeAttribute("aria-busy");
      }
    });
    if (search.dataset.auto !== undefined) search.requestSubmit();
  }

  const send = document.getElementById("pacs-send");
  if (send && search) {
    send.addEventListener("submit", async (event) => {
      event.preventDefault();
      const uids = Array.from(document.querySelectorAll('#pacs-results input[name="study"]:checked')).map((b) => b.value);
      if (!uids.length) { say(send, false, "Select at least one study to send."); return; }
      const fields = new FormData(send);
      const body = {study_uids: uids};
      for (const key of ["destination", "priority", "recipient", "recipient_user", "subject", "message"]) {
        body[key] = String(fields.get(key) || "");
      }
      const node = new FormData(search).get("node");
      send.setAttribute("aria-busy", "true");
      try {
        const made = await call("/api/v1/pacs/" + encodeURIComponent(node) + "/send", {
          method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
        const files = send.querySelector('input[type="file"]').files;
        for (const file of files) {
          try { await upload(made.id, file); } catch (err) {
            say(send, false, "Sent as exchange " + made.id + ", but " + file.name + " was not attached: " + err.message);
            return;
          }
        }
        window.location.assign(made.href);
      } catch (err) {
        say(send, false, err.message);
      } finally {
        send.removeAttribute("aria-busy");
      }
    });
  }

  // -- one exchange: attach documents, follow progress ------------------------------------------------------
  const attach = document.getElementById("attach-form");
  if (attach) {
    attach.addEventListener("submit", async (event) => {
      event.preventDefault();
      const file = attach.querySelector('input[type="file"]').files[0];
      if (!file) { say(attach, false, "Choose a file first."); return; }
      try {
        await upload(attach.dataset.transaction, file);
        window.location.reload();
      } catch (err) {
        say(attach, false, err.message);
      }
    });
  }

  function badge(state) {
    const span = document.createElement("span");
    span.className = "state state-" + state;
    span.textContent = state;
    return span;
  }

  const header = document.getElementById("tx-state");
  if (header) {
    const id = header.dataset.transaction;
    const poll = async () => {
      try {
        const data = await call("/api/v1/transactions/" + encodeURIComponent(id) + "/progress");
        header.replaceChildren(badge(data.state));
        for (const st of data.studies) {
          const row = Array.from(document.querySelectorAll("#tx-studies tr[data-uid]")).find((r) => r.dataset.uid === st.study_uid);
          if (!row) continue;
          row.querySelector(".study-state").replaceChildren(badge(st.state));
          const detail = row.querySelector(".study-detail");
          detail.textContent = st.detail;
          detail.classList.toggle("error", st.state === "failed");
        }
        if (data.state === "delivered") return;
      } catch (err) { /* keep the page as it is; try again */ }
      window.setTimeout(poll, 3000);
    };
    window.setTimeout(poll, 2000);
  }
})();
