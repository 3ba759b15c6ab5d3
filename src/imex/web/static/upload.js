// imex upload page: files go to /api/v1/uploads/{id}/files one chunk per request (with the session's CSRF
// token, as in imex.js), so the progress bar counts bytes the hub has really taken. Text from the hub and
// from files goes in with textContent only.
"use strict";

(function () {
  const root = document.getElementById("upload");
  if (!root) return;
  const token = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const CHUNK = Math.max(65536, Number(root.dataset.chunkBytes) || 4194304);
  const PARALLEL = 3;
  let uploadId = root.dataset.uploadId || "";
  const $ = (id) => document.getElementById(id);

  async function call(url, method, body, raw) {
    const headers = {"Accept": "application/json", "X-CSRF-Token": token()};
    const options = {method: method, credentials: "same-origin", headers: headers};
    if (raw !== undefined) {
      headers["Content-Type"] = "application/octet-stream";
      options.body = raw;
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) throw new Error((data && (data.detail || data.title)) || ("HTTP " + response.status));
    return data;
  }

  function say(el, text, ok) {
    el.textContent = text;
    el.classList.toggle("error", ok === false);
    el.classList.toggle("ok", ok === true);
  }

  // -- collecting files (inputs give webkitRelativePath; a drop is walked through its entries) ---------

  function fromInput(input) {
    return Array.from(input.files).map((f) => ({file: f, path: f.webkitRelativePath || f.name}));
  }

  function readEntries(reader) {
    return new Promise((resolve, reject) => reader.readEntries(resolve, reject));
  }

  async function walk(entry, prefix, out) {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      out.push({file: file, path: prefix + entry.name});
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await readEntries(reader);
        if (!batch.length) break;
        for (const child of batch) await walk(child, prefix + entry.name + "/", out);
      }
    }
  }

  async function fromDrop(transfer) {
    const out = [];
    const entries = Array.from(transfer.items || []).map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
    if (entries.length) {
      for (const entry of entries) await walk(entry, "", out);
    } else {
      for (const f of Array.from(transfer.files || [])) out.push({file: f, path: f.name});
    }
    return out;
  }

  // -- sending the bytes -----------------------------------------------------------------------------

  async function ensureUpload() {
    if (uploadId) return uploadId;
    const created = await call("/api/v1/uploads", "POST", {});
    uploadId = String(created.id);
    root.dataset.uploadId = uploadId;
    window.history.replaceState(null, "", "/upload/" + encodeURIComponent(uploadId));
    return uploadId;
  }

  async function sendFile(item, progress) {
    const size = item.file.size;
    let offset = 0;
    do {
      const end = Math.min(offset + CHUNK, size);
      const query = new URLSearchParams({path: item.path, size: String(size), offset: String(offset)});
      await call("/api/v1/uploads/" + encodeURIComponent(uploadId) + "/files?" + query.toString(), "PUT",
                 undefined, item.file.slice(offset, end));
      progress(end - offset);
      offset = end;
    } while (offset < size);
  }

  async function uploadAll(items) {
    const message = $("message");
    const refusals = $("refusals");
    if (!items.length) return;
    say(message, "", null);
    try {
      await ensureUpload();
    } catch (err) {
      say(message, "The upload could not start: " + err.message, false);
      return;
    }
    const bar = $("progress");
    const text = $("progress-text");
    const total = items.reduce((n, i) => n + i.file.size, 0) || 1;
    let done = 0, files = 0, failed = 0;
    bar.hidden = false;
    bar.value = 0;
    const update = () => {
      bar.value = Math.round(100 * done / total);
      text.textContent = files + " of " + items.length + " file(s) uploaded" + (failed ? ", " + failed + " refused" : "");
    };
    update();
    const queue = items.slice();
    async function lane() {
      for (;;) {
        const item = queue.shift();
        if (!item) return;
        let sent = 0;
        try {
          await sendFile(item, (n) => { sent += n; done += n; update(); });
          files += 1;
        } catch (err) {
          failed += 1;
          done += item.file.size - sent;
          const li = document.createElement("li");
          li.textContent = item.path + ": " + err.message;
          refusals.appendChild(li);
        }
        update();
      }
    }
    await Promise.all(Array.from({length: PARALLEL}, lane));
    bar.value = 100;
    if (failed) say(message, failed + " file(s) were refused; see the reasons above.", false);
    await loadReview();
  }

  // -- review and send ---------------------------------------------------------------------------------

  function cell(tr, text) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    tr.appendChild(td);
    return td;
  }

  const fmtDate = (d) => (d && d.length === 8) ? d.slice(0, 4) + "-" + d.slice(4, 6) + "-" + d.slice(6, 8) : (d || "");

  function showReview(r) {
    $("review").hidden = false;
    $("instances-count").textContent = r.instances;
    $("studies-count").textContent = r.studies;
    $("skipped-count").textContent = r.skipped.length;
    const st = $("upload-state");
    st.textContent = r.state;
    st.className = "state state-" + r.state;
    $("stored").textContent = r.state === "open" ? "" : r.instances_stored + " instance(s) stored at the hub" +
      (r.error ? " (" + r.error + ")" : "");
    const rows = [];
    for (const patient of r.patients) {
      for (const study of patient.studies) {
        const tr = document.createElement("tr");
        const who = cell(tr, patient.name || "(no name)");
        const small = document.createElement("small");
        small.textContent = " " + patient.patient_id;
        who.appendChild(small);
        cell(tr, fmtDate(patient.birth_date));
        cell(tr, fmtDate(study.date));
        cell(tr, study.modalities);
        cell(tr, study.description);
        cell(tr, study.accession);
        cell(tr, study.series);
        cell(tr, study.instances).className = "num";
        rows.push(tr);
      }
    }
    $("studies").tBodies[0].replaceChildren(...rows);
    $("skipped").replaceChildren(...r.skipped.map((s) => {
      const li = document.createElement("li");
      li.textContent = s.path + ": " + s.reason;
      return li;
    }));
    $("skipped-box").open = r.skipped.length > 0 && r.skipped.length <= 20;
    $("dicomdirs").replaceChildren(...r.dicomdirs.map((d) => {
      const p = document.createElement("p");
      if (d.problem === "no longer staged") {  // sent, discarded or expired: the DICOMDIR went with its files
        p.textContent = d.path + ": " + (r.state === "sent" ? "its files were sent" : "its files are no longer here");
        return p;
      }
      p.textContent = d.path + " lists " + d.listed + (d.listed === 1 ? " file" : " files") +
        (d.missing_count ? "; " + d.missing_count + " of them did not arrive (e.g. " + d.missing.slice(0, 3).join(", ") + ")" : "") +
        (d.problem ? " (" + d.problem + ")" : "");
      return p;
    }));
    const sendCard = $("send-card");
    sendCard.hidden = r.state !== "open" && r.state !== "sending" && r.state !== "sent";
    $("send").disabled = r.state !== "open" || r.instances === 0;
    $("send-form").hidden = r.state !== "open";
    if (r.state === "sent") {
      const result = $("send-result");
      say(result, "Sent: " + r.instances_stored + " instance(s) stored and on their way.", true);
      if (r.transaction_id) {
        const link = document.createElement("a");
        link.href = "/exchanges/" + encodeURIComponent(r.transaction_id);
        link.textContent = "Follow exchange " + r.transaction_id;
        result.append(" ", link);
      }
    }
    if (r.state === "failed") say($("send-result"), "Sending failed: " + r.error, false);
    if (r.state === "discarded" || r.state === "expired") say($("message"), "This upload was " + r.state + ".", false);
  }

  async function loadReview() {
    if (!uploadId) return null;
    try {
      const r = await call("/api/v1/uploads/" + encodeURIComponent(uploadId), "GET");
      showReview(r);
      return r;
    } catch (err) {
      say($("message"), err.message, false);
      return null;
    }
  }

  async function loadDestinations() {
    const select = $("destination");
    const nodeSelect = $("node");
    let list = [];
    try { list = await call("/api/v1/uploads/destinations", "GET"); } catch (err) { say($("send-result"), err.message, false); }
    select.replaceChildren(...list.map((d) => {
      const o = document.createElement("option");
      o.value = d.ods;
      o.textContent = d.ods + " · " + d.name;
      return o;
    }));
    const fillNodes = () => {
      const chosen = list.find((d) => d.ods === select.value);
      const first = document.createElement("option");
      first.value = "";
      first.textContent = "Its PACS";
      nodeSelect.replaceChildren(first, ...((chosen && chosen.nodes) || []).map((n) => {
        const o = document.createElement("option");
        o.value = String(n.id);
        o.textContent = n.name;
        return o;
      }));
    };
    select.addEventListener("change", fillNodes);
    fillNodes();
  }

  async function poll() {
    for (let i = 0; i < 600; i++) {
      const r = await loadReview();
      if (!r || r.state !== "sending") return;
      await new Promise((resolve) => window.setTimeout(resolve, 1000));
    }
  }

  $("send-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const body = {destination: form.destination.value, priority: form.priority.value, recipient: form.recipient.value,
                  subject: form.subject.value, message: form.message.value};
    if (form.node_id.value) body.node_id = Number(form.node_id.value);
    const result = $("send-result");
    $("send").disabled = true;
    say(result, "Sending…", null);
    try {
      await call("/api/v1/uploads/" + encodeURIComponent(uploadId) + "/send", "POST", body);
      await poll();
    } catch (err) {
      say(result, err.message, false);
      $("send").disabled = false;
    }
  });

  $("discard").addEventListener("click", async () => {
    if (!window.confirm("Discard this upload and its files?")) return;
    try {
      await call("/api/v1/uploads/" + encodeURIComponent(uploadId), "DELETE");
      await loadReview();
    } catch (err) {
      say($("send-result"), err.message, false);
    }
  });

  // -- wiring ------------------------------------------------------------------------------------------

  const zone = $("dropzone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    uploadAll(await fromDrop(event.dataTransfer));
  });
  for (const id of ["files", "folder"]) {
    $(id).addEventListener("change", (event) => {
      const items = fromInput(event.target);
      event.target.value = "";
      uploadAll(items);
    });
  }

  loadDestinations();
  if (uploadId) loadReview().then((r) => { if (r && r.state === "sending") poll(); });
})();
