// imex locator pages: the search form and its results, "view it" and "source it". Calls the JSON API with
// api() from imex.js; data goes into the page with textContent only.
"use strict";

(function () {
  const dateText = (d) => (d && d.length === 8) ? d.slice(0, 4) + "-" + d.slice(4, 6) + "-" + d.slice(6) : (d || "");

  function td(row, text, cls) {
    const c = document.createElement("td");
    if (cls) c.className = cls;
    if (text instanceof Node) c.append(text); else c.textContent = text == null ? "" : String(text);
    row.append(c);
    return c;
  }

  function button(label, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.addEventListener("click", onClick);
    return b;
  }

  async function view(item, status) {
    try {
      const data = await api("/api/v1/locator/entries/" + encodeURIComponent(item.id) + "/view", "POST", {});
      window.location.assign(data.viewer);
    } catch (err) { status.textContent = err.message; }
  }

  async function source(url, status) {
    try {
      const data = await api(url, "POST", {});
      if (data.request_form) { window.location.assign(data.request_form); return; }
      status.textContent = "Sent for transfer to your PACS: exchange " + data.transaction_id;
      status.dataset.transaction = String(data.transaction_id);
    } catch (err) { status.textContent = err.message; }
  }

  function row(item, status) {
    const tr = document.createElement("tr");
    tr.dataset.id = item.id;
    td(tr, item.institution.name + " (" + item.institution.ods_code + ")");
    td(tr, dateText(item.study_date));
    td(tr, item.modalities.join(", "));
    td(tr, item.description);
    td(tr, item.body_part.join(", "));
    td(tr, item.num_series || "", "num");
    td(tr, item.num_instances || "", "num");
    td(tr, item.source);
    td(tr, item.age);
    const actions = document.createElement("span");
    if (item.viewable) actions.append(button("View", () => view(item, status)));
    actions.append(" ", button("Source it", () => source("/api/v1/locator/entries/" + encodeURIComponent(item.id) +
      "/source", status)));
    td(tr, actions, "actions");
    return tr;
  }

  const form = document.getElementById("locator-search");
  if (form) {
    const status = document.getElementById("locator-status");
    const body = document.querySelector("#locator-results tbody");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = {nhs_number: form.nhs_number.value, birth_date: form.birth_date.value, reason: form.reason.value};
      status.classList.remove("error");
      status.textContent = "Searching…";
      try {
        const found = await api("/api/v1/locator/search", "POST", data);
        const rows = found.items.map((item) => row(item, status));
        if (!rows.length) {
          const tr = document.createElement("tr");
          tr.className = "empty";
          td(tr, "No study of this patient is held where you may look.").colSpan = 10;
          rows.push(tr);
        }
        body.replaceChildren(...rows);
        let text = found.items.length + (found.items.length === 1 ? " study" : " studies") + " found (reason: " + found.reason + ").";
        if (found.not_searched && found.not_searched.length) {
          text += " Not searched, because they do not let your institution find their studies: " +
            found.not_searched.map((i) => i.name + " (" + i.ods + ")").join(", ") + ".";
        }
        status.textContent = text;
      } catch (err) {
        status.classList.add("error");
        status.textContent = err.message;
      }
    });
  }

  const sourceButton = document.querySelector("button[data-locator-source]");
  if (sourceButton) {
    const status = document.getElementById("locator-source-result");
    sourceButton.addEventListener("click", () => source(sourceButton.dataset.locatorSource, status));
  }
})();
