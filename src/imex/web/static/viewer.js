// imex 2D viewer: plain JavaScript on a canvas. Everything it shows comes from the hub's DICOMweb
// (QIDO-RS series, WADO-RS metadata, thumbnails and rendered frames), with the browser's session, so it
// sees exactly what the signed-in user may see. Text from the data goes in with textContent only.
"use strict";

(function () {
  const root = document.getElementById("viewer");
  if (!root) return;
  const studyUid = root.dataset.studyUid;
  // a link session reads its one study through link-scoped routes (data-base); the portal through /dicomweb
  const base = root.dataset.base || "/dicomweb/studies/" + encodeURIComponent(studyUid);
  const PRESETS = {soft: [40, 400], lung: [-600, 1500], bone: [400, 1800], brain: [40, 80]};
  const PREFETCH = 12;        // frames fetched ahead and behind the one shown
  const PARALLEL = 6;         // requests in flight
  const CACHE_LIMIT = 800;    // decoded images kept per viewport

  let tool = "window";
  let seriesList = [];
  const viewports = [];
  let active = null;

  function value(item, tag) {
    const el = item[tag];
    return el && el.Value && el.Value.length ? el.Value[0] : null;
  }
  function values(item, tag) {
    const el = item[tag];
    return el && el.Value ? el.Value : [];
  }
  function personName(v) {
    if (!v) return "";
    const raw = typeof v === "object" ? (v.Alphabetic || "") : String(v);
    const parts = raw.split("^");
    return parts.length > 1 ? parts[0] + ", " + parts.slice(1).filter(Boolean).join(" ") : raw;
  }
  function niceDate(d) {
    return d && d.length === 8 ? d.slice(0, 4) + "-" + d.slice(4, 6) + "-" + d.slice(6) : (d || "");
  }
  async function getJson(url) {
    const r = await fetch(url, {credentials: "same-origin", headers: {"Accept": "application/dicom+json"}});
    if (!r.ok) throw new Error(url + ": HTTP " + r.status);
    return r.json();
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // -- one viewport: a canvas showing one series --------------------------------------------------------
  function Viewport(host) {
    this.box = el("div", "viewport");
    this.canvas = el("canvas");
    this.canvas.setAttribute("tabindex", "0");
    this.overlay = {tl: el("div", "ov tl"), tr: el("div", "ov tr"), bl: el("div", "ov bl"), br: el("div", "ov br")};
    this.slider = el("input", "slider");
    this.slider.type = "range";
    this.slider.min = "1";
    this.slider.value = "1";
    this.slider.setAttribute("aria-label", "Image");
    this.box.append(this.canvas, this.overlay.tl, this.overlay.tr, this.overlay.bl, this.overlay.br, this.slider);
    host.append(this.box);
    this.images = [];
    this.index = 0;
    this.cache = new Map();
    this.pending = new Map();
    this.queue = [];
    this.inflight = 0;
    this.series = null;
    this.resetView();
    this.bind();
  }

  Viewport.prototype.resetView = function () {
    this.window = null;       // [center, width]; null: the instance's own
    this.zoom = 1;
    this.pan = [0, 0];
    this.invert = false;
    this.measures = new Map(); // image key -> [{a, b, mm}]
  };

  Viewport.prototype.load = async function (series, keep) {
    this.series = series;
    if (!keep) this.resetView();  // keep: the same series with more images (a study still arriving)
    const meta = await getJson(base + "/series/" + encodeURIComponent(series.uid) + "/metadata");
    meta.sort((a, b) => (value(a, "00200013") || 0) - (value(b, "00200013") || 0));
    const images = [];
    for (const m of meta) {
      const frames = parseInt(value(m, "00280008") || "1", 10) || 1;
      const spacing = values(m, "00280030").map(Number);
      const info = {
        sop: value(m, "00080018"), rows: value(m, "00280010"), cols: value(m, "00280011"),
        spacing: spacing.length === 2 ? spacing : null,
        center: value(m, "00281050"), width: value(m, "00281051"), bits: value(m, "00280101") || 16,
        slope: Number(value(m, "00281053") || 1), intercept: Number(value(m, "00281052") || 0),
        colour: (value(m, "00280002") || 1) > 1, frames: frames,
      };
      if (!info.sop || info.rows === null) continue;
      for (let f = 1; f <= frames; f++) images.push(Object.assign({frame: f}, info));
    }
    this.images = images;
    this.slider.max = String(Math.max(images.length, 1));
    if (!keep) this.cache.clear();
    this.show(keep ? this.index : 0);
  };

  Viewport.prototype.key = function (i) {
    const w = this.window ? this.window.join(",") : "";
    const img = this.images[i];
    return img.sop + "/" + img.frame + "/" + w;
  };

  Viewport.prototype.url = function (i) {
    const img = this.images[i];
    let u = base + "/series/" + encodeURIComponent(this.series.uid) + "/instances/" + encodeURIComponent(img.sop) +
      "/frames/" + img.frame + "/rendered?accept=image/png";
    if (this.window && !img.colour) u += "&window=" + encodeURIComponent(this.window[0] + "," + this.window[1]);
    return u;
  };

  // fetch frame i (once), resolve when decoded; requests are queued so the one shown goes first
  Viewport.prototype.fetch = function (i, urgent) {
    const key = this.key(i);
    if (this.cache.has(key)) return Promise.resolve(this.cache.get(key));
    if (this.pending.has(key)) {
      if (urgent) this.queue = [key].concat(this.queue.filter(k => k !== key));
      return this.pending.get(key).promise;
    }
    let done;
    const promise = new Promise((resolve, reject) => { done = {resolve, reject}; });
    this.pending.set(key, {promise, done, url: this.url(i)});
    if (urgent) this.queue.unshift(key); else this.queue.push(key);
    this.pump();
    return promise;
  };

  Viewport.prototype.pump = function () {
    while (this.inflight < PARALLEL && this.queue.length) {
      const key = this.queue.shift();
      const job = this.pending.get(key);
      if (!job) continue;
      this.inflight++;
      const img = new Image();
      img.decoding = "async";
      img.onload = () => {
        this.inflight--;
        this.pending.delete(key);
        this.cache.set(key, img);
        if (this.cache.size > CACHE_LIMIT) this.cache.delete(this.cache.keys().next().value);
        job.done.resolve(img);
        this.pump();
      };
      img.onerror = () => {
        this.inflight--;
        this.pending.delete(key);
        job.done.reject(new Error("cannot load " + job.url));
        this.pump();
      };
      img.src = job.url;
    }
  };

  Viewport.prototype.prefetch = function () {
    // drop queued work for frames far away (or for an old window) and fetch the neighbourhood, nearest first
    const wanted = new Set();
    for (let d = 1; d <= PREFETCH; d++) {
      for (const i of [this.index + d, this.index - d]) {
        if (i >= 0 && i < this.images.length) wanted.add(this.key(i));
      }
    }
    this.queue = this.queue.filter(k => wanted.has(k) || k === this.key(this.index));
    for (let d = 1; d <= PREFETCH; d++) {
      for (const i of [this.index + d, this.index - d]) {
        if (i >= 0 && i < this.images.length) this.fetch(i, false).catch(() => {});
      }
    }
  };

  Viewport.prototype.show = function (i) {
    if (!this.images.length) { this.draw(); return; }
    this.index = Math.max(0, Math.min(this.images.length - 1, i));
    this.slider.value = String(this.index + 1);
    const wanted = this.key(this.index);
    this.fetch(this.index, true).then(() => {
      if (this.key(this.index) === wanted) this.draw();
    }).catch(() => {});
    this.draw();
    this.prefetch();
  };

  Viewport.prototype.current = function () {
    if (!this.images.length) return null;
    return this.cache.get(this.key(this.index)) || null;
  };

  Viewport.prototype.fitScale = function () {
    const img = this.images[this.index];
    if (!img) return 1;
    return Math.min(this.canvas.width / img.cols, this.canvas.height / img.rows);
  };

  Viewport.prototype.scale = function () { return this.fitScale() * this.zoom; };

  // image pixel <-> canvas point
  Viewport.prototype.toImage = function (x, y) {
    const img = this.images[this.index];
    const s = this.scale();
    const ox = this.canvas.width / 2 + this.pan[0] - img.cols * s / 2;
    const oy = this.canvas.height / 2 + this.pan[1] - img.rows * s / 2;
    return [(x - ox) / s, (y - oy) / s];
  };
  Viewport.prototype.toCanvas = function (p) {
    const img = this.images[this.index];
    const s = this.scale();
    const ox = this.canvas.width / 2 + this.pan[0] - img.cols * s / 2;
    const oy = this.canvas.height / 2 + this.pan[1] - img.rows * s / 2;
    return [ox + p[0] * s, oy + p[1] * s];
  };

  Viewport.prototype.length = function (a, b) {
    const img = this.images[this.index];
    const dx = b[0] - a[0], dy = b[1] - a[1];
    if (!img.spacing) return {value: Math.hypot(dx, dy), unit: "px"};
    // Pixel Spacing is row spacing (between rows, i.e. along y), then column spacing (along x)
    return {value: Math.hypot(dx * img.spacing[1], dy * img.spacing[0]), unit: "mm"};
  };

  Viewport.prototype.resize = function () {
    const r = this.box.getBoundingClientRect();
    const w = Math.max(1, Math.floor(r.width)), h = Math.max(1, Math.floor(r.height));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
  };

  Viewport.prototype.draw = function () {
    this.resize();
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    const picture = this.current();
    const img = this.images[this.index];
    this.canvas.dataset.scale = String(this.scale());
    this.canvas.dataset.index = String(this.index + 1);
    if (picture && img) {
      const s = this.scale();
      const [x, y] = this.toCanvas([0, 0]);
      ctx.imageSmoothingEnabled = s < 1;
      ctx.filter = this.invert ? "invert(1)" : "none";
      ctx.drawImage(picture, x, y, img.cols * s, img.rows * s);
      ctx.filter = "none";
      this.canvas.dataset.loaded = this.key(this.index);
      const lines = this.measures.get(img.sop + "/" + img.frame) || [];
      ctx.strokeStyle = "#ffd400";
      ctx.fillStyle = "#ffd400";
      ctx.lineWidth = 2;
      ctx.font = "14px sans-serif";
      for (const m of lines) {
        const a = this.toCanvas(m.a), b = this.toCanvas(m.b);
        ctx.beginPath();
        ctx.moveTo(a[0], a[1]);
        ctx.lineTo(b[0], b[1]);
        ctx.stroke();
        const len = this.length(m.a, m.b);
        ctx.fillText(len.value.toFixed(1) + " " + len.unit, b[0] + 6, b[1] - 6);
      }
    }
    this.annotate();
  };

  Viewport.prototype.annotate = function () {
    const d = root.dataset;
    const img = this.images[this.index];
    this.overlay.tl.textContent = personName(d.patientName) + "\n" + d.patientId +
      (d.birthDate ? "  born " + niceDate(d.birthDate) : "") + (d.sex ? "  " + d.sex : "");
    this.overlay.tr.textContent = (d.source || "") + "\n" + niceDate(d.studyDate) + "  " + (d.description || "") +
      (d.accession ? "\nAcc " + d.accession : "");
    const series = this.series ? (this.series.number !== null ? "Se " + this.series.number + "  " : "") +
      (this.series.description || "") : "";
    this.overlay.bl.textContent = series + (img ? "\nIm " + (this.index + 1) + " / " + this.images.length +
      (img.frames > 1 ? "  (frame " + img.frame + " of " + img.frames + ")" : "") : "");
    const w = this.window || (img && img.center !== null && img.width !== null ? [img.center, img.width] : null);
    this.overlay.br.textContent = (w && img && !img.colour ? "W " + Math.round(w[1]) + "  L " + Math.round(w[0]) : "") +
      "\nZoom " + Math.round(this.zoom * 100) + "%" + (this.invert ? "  inverted" : "");
  };

  Viewport.prototype.setWindow = function (center, width) {
    this.window = [Math.round(center), Math.max(1, Math.round(width))];
    this.show(this.index);
  };

  Viewport.prototype.startWindow = function () {
    if (this.window) return this.window.slice();
    const img = this.images[this.index];
    if (img && img.center !== null && img.width !== null) return [Number(img.center), Number(img.width)];
    const top = Math.pow(2, img ? img.bits : 12);
    return [(top / 2) * (img ? img.slope : 1) + (img ? img.intercept : 0), top * (img ? img.slope : 1)];
  };

  Viewport.prototype.bind = function () {
    const c = this.canvas;
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      this.activate();
      this.show(this.index + (e.deltaY > 0 ? 1 : -1));
    }, {passive: false});
    this.slider.addEventListener("input", () => this.show(parseInt(this.slider.value, 10) - 1));
    let drag = null;
    c.addEventListener("pointerdown", (e) => {
      this.activate();
      c.focus();
      if (!this.images.length) return;
      c.setPointerCapture(e.pointerId);
      const r = c.getBoundingClientRect();
      const x = e.clientX - r.left, y = e.clientY - r.top;
      drag = {x0: e.clientX, y0: e.clientY, window: this.startWindow(), pan: this.pan.slice(), zoom: this.zoom};
      if (tool === "measure") {
        const p = this.toImage(x, y);
        const img = this.images[this.index];
        const k = img.sop + "/" + img.frame;
        if (!this.measures.has(k)) this.measures.set(k, []);
        drag.measure = {a: p, b: p};
        this.measures.get(k).push(drag.measure);
      }
    });
    c.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x0, dy = e.clientY - drag.y0;
      if (tool === "window") {
        const [c0, w0] = drag.window;
        const step = Math.max(1, w0 / 256);
        this.window = [Math.round(c0 + dy * step), Math.max(1, Math.round(w0 + dx * step))];
        this.annotate();
        this.windowDirty = true;
      } else if (tool === "pan") {
        this.pan = [drag.pan[0] + dx, drag.pan[1] + dy];
        this.draw();
      } else if (tool === "zoom") {
        this.zoom = Math.max(0.1, Math.min(20, drag.zoom * Math.exp(-dy / 200)));
        this.draw();
      } else if (tool === "measure" && drag.measure) {
        const r = c.getBoundingClientRect();
        drag.measure.b = this.toImage(e.clientX - r.left, e.clientY - r.top);
        this.draw();
      }
    });
    const end = () => {
      if (!drag) return;
      if (drag.measure) {
        const len = this.length(drag.measure.a, drag.measure.b);
        c.dataset.measure = len.value.toFixed(2) + " " + len.unit;
      }
      drag = null;
      if (this.windowDirty) {
        this.windowDirty = false;
        this.show(this.index);
      }
    };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    c.addEventListener("keydown", (e) => this.key_(e));
    this.box.addEventListener("click", () => this.activate());
  };

  Viewport.prototype.key_ = function (e) {
    const moves = {ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10};
    if (e.key in moves) this.show(this.index + moves[e.key]);
    else if (e.key === "Home") this.show(0);
    else if (e.key === "End") this.show(this.images.length - 1);
    else return;
    e.preventDefault();
  };

  Viewport.prototype.activate = function () {
    active = this;
    for (const v of viewports) v.box.classList.toggle("active", v === this);
  };

  // -- the page: series thumbnails, toolbar, one or two viewports ------------------------------------------
  const host = document.getElementById("viewports");
  const thumbs = document.getElementById("thumbnails");

  function addViewport() {
    const v = new Viewport(host);
    viewports.push(v);
    host.classList.toggle("two", viewports.length === 2);
    return v;
  }

  function renderThumbnails() {
    thumbs.textContent = "";
    for (const s of seriesList) {
      const b = el("button", "thumb");
      b.type = "button";
      b.dataset.series = s.uid;
      const img = el("img");
      img.alt = "";
      img.loading = "lazy";
      img.src = base + "/series/" + encodeURIComponent(s.uid) + "/thumbnail?accept=image/png&viewport=96,96";
      const label = el("span", "label", (s.number !== null ? s.number + " · " : "") + (s.modality || "") + " " +
        (s.description || "") + " (" + s.count + ")");
      b.append(img, label);
      b.addEventListener("click", () => (active || viewports[0]).load(s).catch(report));
      thumbs.append(b);
    }
  }

  function report(err) {
    const m = el("p", "error", String(err && err.message ? err.message : err));
    thumbs.append(m);
  }

  document.querySelector(".toolbar").addEventListener("click", (e) => {
    const b = e.target.closest("button");
    if (!b) return;
    const v = active || viewports[0];
    if (b.dataset.tool) {
      tool = b.dataset.tool;
      for (const t of document.querySelectorAll("[data-tool]")) t.classList.toggle("active", t === b);
    } else if (b.dataset.preset) {
      const [c, w] = PRESETS[b.dataset.preset];
      v.setWindow(c, w);
    } else if (b.dataset.action === "zoom-in") { v.zoom = Math.min(20, v.zoom * 2); v.draw(); }
    else if (b.dataset.action === "zoom-out") { v.zoom = Math.max(0.1, v.zoom / 2); v.draw(); }
    else if (b.dataset.action === "fit") { v.zoom = 1; v.pan = [0, 0]; v.draw(); }
    else if (b.dataset.action === "invert") { v.invert = !v.invert; v.draw(); }
    else if (b.dataset.action === "reset") { v.resetView(); v.show(v.index); }
    else if (b.dataset.action === "compare") {
      if (viewports.length === 1) {
        const second = addViewport();
        const other = seriesList.find(s => !viewports[0].series || s.uid !== viewports[0].series.uid) || seriesList[0];
        second.activate();
        if (other) second.load(other).catch(report);
      } else {
        const gone = viewports.pop();
        gone.box.remove();
        host.classList.remove("two");
        viewports[0].activate();
      }
      for (const x of viewports) x.draw();
      b.classList.toggle("active", viewports.length === 2);
    }
  });

  window.addEventListener("resize", () => { for (const v of viewports) v.draw(); });

  async function listSeries() {
    const series = await getJson(base + "/series");
    const listed = series.map(s => ({
      uid: value(s, "0020000E"), number: value(s, "00200011"), modality: value(s, "00080060"),
      description: value(s, "0008103E"), count: value(s, "00201209"),
    }));
    const changed = JSON.stringify(listed) !== JSON.stringify(seriesList);
    seriesList = listed;
    if (changed) renderThumbnails();
  }

  // a study still arriving (viewed before import: data-expected instances) is looked at again every second
  // for new series and images until they are all here, so its first image shows as soon as the hub has it
  const expected = parseInt(root.dataset.expected || "0", 10);
  const arrived = () => seriesList.reduce((n, s) => n + (parseInt(s.count, 10) || 0), 0);

  async function follow() {
    for (let round = 0; arrived() < expected && round < 900; round++) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const before = new Map(seriesList.map(s => [s.uid, s.count]));
      try { await listSeries(); } catch (err) { continue; }
      for (const v of viewports) {
        const s = v.series ? seriesList.find(x => x.uid === v.series.uid) : seriesList[0];
        if (s && (!v.series || s.count !== before.get(s.uid))) await v.load(s, Boolean(v.series)).catch(() => {});
      }
    }
    root.dataset.complete = "1";
  }

  async function start() {
    try { await listSeries(); } catch (err) { if (!expected) throw err; }
    const first = addViewport();
    first.activate();
    if (seriesList.length) await first.load(seriesList[0]);
    root.dataset.ready = "1";
    if (expected) await follow();
  }
  start().catch(report);
})();
