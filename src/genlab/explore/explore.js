/* genlab explore: point anywhere in a model's latent space and see the digit there.
 *
 * One script for two pages: the live page of `genlab explore` (a LiveSource asks the local
 * server to decode) and report.html's explorers (a GridSource looks decodings up in a grid
 * precomputed into the page). Both give the same answer for a list of codes:
 *   {images: [Uint8Array(784)], readings: [{digit, confidence, nearest: {label, distance, image}}]}
 * The page works in a view of the latent space: z = origin + coords · axes (see session.py).
 * Plain JavaScript and canvases: no framework, no build step, nothing from the internet.
 */
(function () {
  "use strict";
  if (window.GenlabExplorer) { window.GenlabExplorer.mountAll(); return; }

  var SIDE = 28;
  var STRIP = 10;           // images in an interpolation strip
  var MAP = 420;            // map canvas size, CSS pixels
  // matplotlib's tab10, as in the run's latent_space.png
  var COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "class") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  function bytes(b64) {
    var bin = atob(b64), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  // 784 grey values (ink = 255) drawn dark on light, as genlab's figures are, scaled up sharply.
  var scratch = null;
  function drawDigit(canvas, pixels) {
    if (!scratch) { scratch = document.createElement("canvas"); scratch.width = scratch.height = SIDE; }
    var sctx = scratch.getContext("2d"), img = sctx.createImageData(SIDE, SIDE);
    for (var i = 0; i < SIDE * SIDE; i++) {
      var v = 255 - pixels[i];
      img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v;
      img.data[4 * i + 3] = 255;
    }
    sctx.putImageData(img, 0, 0);
    var ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(scratch, 0, 0, canvas.width, canvas.height);
  }

  function fmt(x, n) { return (Math.abs(x) < 1e-9 ? 0 : x).toFixed(n === undefined ? 2 : n); }

  // --- where decodings come from ------------------------------------------------------------

  function LiveSource(base) { this.base = base || ""; this.canSeed = true; }
  LiveSource.prototype.post = function (path, body) {
    return fetch(this.base + path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })
      .then(function (r) {
        return r.json().then(function (j) { if (!r.ok) throw new Error(j.error || ("HTTP " + r.status)); return j; });
      });
  };
  function unpackReading(x) { x.nearest.image = bytes(x.nearest.image); return x; }
  function unpackImages(r) { return { images: r.images.map(bytes), readings: r.readings.map(unpackReading) }; }
  LiveSource.prototype.decode = function (zs, digits) {
    var body = { z: zs };
    if (digits) body.digits = digits;
    return this.post("/api/decode", body).then(unpackImages);
  };
  LiveSource.prototype.seed = function (seed) { return this.post("/api/seed", { seed: seed }).then(function (r) { return r.z; }); };
  // an iterative model: the picture after req.steps solver steps from req.seed's noise, and its states along t
  LiveSource.prototype.flow = function (req) {
    var body = { seed: req.seed, steps: req.steps };
    if (req.digit !== null) body.digits = [req.digit];
    if (req.guidance !== null) body.guidance = req.guidance;
    return this.post("/api/flow", body).then(function (r) {
      return { image: bytes(r.image), reading: unpackReading(r.reading), frames: r.frames.map(bytes), times: r.times, steps: r.steps, nfe: r.nfe };
    });
  };
  LiveSource.prototype.interpolateSeeds = function (a, b, digit) {
    var body = { seeds: [a, b] };
    if (digit !== null) { body.digits = []; for (var i = 0; i < STRIP; i++) body.digits.push(digit); }
    return this.post("/api/interpolate", body).then(unpackImages);
  };

  // The digits of a PNG sprite (image k at column k % cols, row k / cols), as Uint8Arrays of ink.
  function spritePixels(uri, count) {
    return new Promise(function (resolve, reject) {
      var img = new Image();
      img.onload = function () {
        var c = document.createElement("canvas"); c.width = img.width; c.height = img.height;
        var ctx = c.getContext("2d"); ctx.drawImage(img, 0, 0);
        var rgba = ctx.getImageData(0, 0, img.width, img.height).data, cols = img.width / SIDE, out = [];
        for (var k = 0; k < count; k++) {
          var px = new Uint8Array(SIDE * SIDE), x0 = (k % cols) * SIDE, y0 = Math.floor(k / cols) * SIDE;
          for (var y = 0; y < SIDE; y++) for (var x = 0; x < SIDE; x++) px[y * SIDE + x] = rgba[4 * ((y0 + y) * img.width + x0 + x)];
          out.push(px);
        }
        resolve(out);
      };
      img.onerror = function () { reject(new Error("the precomputed decodings could not be read")); };
      img.src = uri;
    });
  }

  // report.html: decodings of a grid over the map, in one PNG sprite (cell k at column k % cols,
  // row k / cols), with the classifier's reading and the nearest training digit per cell.
  function GridSource(data) {
    this.data = data; this.canSeed = false;
    var self = this;
    this.ready = Promise.all([spritePixels(data.sprite, data.cells.digit.length), spritePixels(data.nearest_sprite, data.nearest_labels.length)])
      .then(function (parts) { self.cellImages = parts[0]; self.nearImages = parts[1]; });
  }
  GridSource.prototype.cell = function (z, digit) {
    var g = this.data.grid, r = this.data.ranges, idx = [0, 1].map(function (a) {
      var t = (z[a] - r[a][0]) / (r[a][1] - r[a][0]);
      return Math.max(0, Math.min(g - 1, Math.round(t * (g - 1))));
    });
    return ((digit || 0) * g + idx[1]) * g + idx[0];
  };
  // cell k's reading, from the integers offline.py packs: confidence in %, distance in hundredths
  function cellReading(d, nearImages, k) {
    var n = d.cells.nearest[k];
    return {
      digit: d.cells.digit[k] < 0 ? null : d.cells.digit[k], confidence: d.cells.confidence[k] / 100,
      nearest: { label: d.nearest_labels[n], distance: d.cells.distance[k] / 100, image: nearImages[n] },
    };
  }
  GridSource.prototype.decode = function (zs, digits) {
    var self = this, d = this.data;
    return this.ready.then(function () {
      var cells = zs.map(function (z, i) { return self.cell(z, digits ? digits[i] : 0); });
      return {
        images: cells.map(function (k) { return self.cellImages[k]; }),
        readings: cells.map(function (k) { return cellReading(d, self.nearImages, k); }),
      };
    });
  };

  // report.html, an iterative model: a few seeds integrated with a few step counts in advance;
  // cell k = seed index · steps.length + step index, its states along t in frames[k] of the frame sprite.
  function FlowGridSource(data) {
    this.data = data; this.canSeed = false; this.seeds = data.seeds; this.stepChoices = data.steps;
    var self = this, nFrames = data.frames.reduce(function (s, f) { return s + f[1]; }, 0);
    this.ready = Promise.all([
      spritePixels(data.sprite, data.cells.digit.length), spritePixels(data.frames_sprite, nFrames), spritePixels(data.nearest_sprite, data.nearest_labels.length),
    ]).then(function (parts) { self.cellImages = parts[0]; self.frameImages = parts[1]; self.nearImages = parts[2]; });
  }
  FlowGridSource.prototype.flow = function (req) {
    var self = this, d = this.data;
    return this.ready.then(function () {
      var si = Math.max(0, d.seeds.indexOf(req.seed)), ti = Math.max(0, d.steps.indexOf(req.steps)), k = si * d.steps.length + ti, f = d.frames[k];
      return {
        image: self.cellImages[k], reading: cellReading(d, self.nearImages, k), frames: self.frameImages.slice(f[0], f[0] + f[1]),
        times: d.times[k], steps: d.steps[ti], nfe: d.nfe[ti],
      };
    });
  };

  // --- the explorer ---------------------------------------------------------------------------

  function Explorer(root, info, source) {
    this.root = root; this.info = info; this.source = source;
    this.k = info.axes.length;
    this.coords = info.ranges.map(function (r) { return (r[0] + r[1]) / 2; });
    if (info.can_encode && info.latent_dim > 2) this.coords = this.coords.map(function () { return 0; }); // the codes' mean
    if (!info.can_encode) this.coords = this.coords.map(function () { return 0; });
    this.origin = info.origin.slice();
    this.digit = info.conditional ? 0 : null;
    this.busy = false; this.pending = false; this.eventTime = 0; this.dragFrom = null;
    this.decodes = 0;
    this.build();
    this.drawMap();
    var self = this;
    var start = (!info.can_encode && source.canSeed) ? this.setSeed(0) : Promise.resolve();
    start.then(function () { self.touch(); });
  }

  Explorer.prototype.z = function (coords) {
    var z = this.origin.slice(), axes = this.info.axes;
    for (var j = 0; j < coords.length; j++) for (var i = 0; i < z.length; i++) z[i] += coords[j] * axes[j][i];
    return z.map(function (v) { return Math.round(v * 1e5) / 1e5; });
  };

  // The explorer's first line (model, family, what its input is) with the status beside it.
  function buildHead(ex, what) {
    var info = ex.info;
    ex.root.textContent = "";
    ex.status = el("span", { class: "gx-status" });
    ex.root.appendChild(el("div", { class: "gx-head" }, [
      el("b", { text: info.model }), document.createTextNode(" · " + info.family + " · " + what + (info.conditional ? " · conditional" : "")), ex.status,
    ]));
  }

  // The picture beside its nearest training digit, with the canvases and texts showReading fills.
  function buildPair(ex, caption) {
    ex.digitCanvas = el("canvas", { class: "gx-digit", width: 168, height: 168, "aria-label": caption });
    ex.reading = el("div", { class: "gx-reading", text: "…" });
    ex.nearCanvas = el("canvas", { class: "gx-near", width: 84, height: 84, "aria-label": "nearest training digit" });
    ex.nearInfo = el("div", { class: "gx-nearinfo" });
    ex.zText = el("div", { class: "gx-z" });
    return el("div", { class: "gx-pair" }, [
      el("div", {}, [el("div", { class: "gx-caption", text: caption }), ex.digitCanvas, ex.reading]),
      el("div", {}, [el("div", { class: "gx-caption", text: "nearest training digit (pixels)" }), ex.nearCanvas, ex.nearInfo]),
    ]);
  }

  Explorer.prototype.build = function () {
    var info = this.info, self = this, names = info.class_names;
    buildHead(this, info.latent_dim + "-D latent");
    this.map = el("canvas", { class: "gx-map", width: MAP, height: MAP, tabindex: "0", "aria-label": "latent map: move the pointer to decode" });
    var axisText = info.axis_names[0] + " → right, " + info.axis_names[1] + " ↑ up";
    if (info.can_encode) axisText += info.latent_dim > 2 ? "; a plane through the codes (PCA)" : "";
    else axisText += "; the other coordinates come from the seed and the sliders";
    var legend = el("div", { class: "gx-legend" });
    if (info.points) names.forEach(function (n, d) {
      var dot = el("i");
      dot.style.background = COLOURS[d];  // through the CSSOM: the page's CSP refuses style attributes
      legend.appendChild(el("span", {}, [dot, document.createTextNode(n)]));
    });
    var mapHelp = info.points ? "Dots: test digits' codes. Move over the map to decode; drag to interpolate." : "Move over the map to decode; drag to interpolate.";
    var mapBox = el("div", { class: "gx-mapbox" }, [this.map, el("div", { class: "gx-axes", text: axisText }), legend, el("div", { class: "gx-note", text: mapHelp })]);

    var pair = buildPair(this, "decoded");
    var controls = el("div", { class: "gx-controls" });
    if (info.conditional) {
      this.picker = el("div", { class: "gx-picker", role: "group", "aria-label": "digit" });
      names.forEach(function (n, d) {
        var b = el("button", { type: "button", "data-digit": String(d), "aria-pressed": String(d === self.digit), text: n });
        b.addEventListener("click", function () { self.setDigit(d); });
        self.picker.appendChild(b);
      });
      controls.appendChild(el("div", {}, [el("div", { class: "gx-note", text: "Digit to draw:" }), this.picker]));
    }
    if (!info.can_encode && this.source.canSeed) {
      this.seedInput = el("input", { type: "number", class: "gx-seed", min: "0", max: String(info.limits.max_seed), value: "0", "aria-label": "seed" });
      this.seedInput.addEventListener("change", function () { self.setSeed(self.seedValue(self.seedInput)).then(function () { self.touch(); }); });
      this.seedB = el("input", { type: "number", class: "gx-seed-b", min: "0", max: String(info.limits.max_seed), value: "1", "aria-label": "second seed" });
      var interp = el("button", { type: "button", class: "gx-interp", text: "interpolate" });
      interp.addEventListener("click", function () { self.interpolateSeeds(); });
      controls.appendChild(el("label", {}, [document.createTextNode("seed"), this.seedInput]));
      controls.appendChild(el("label", {}, [document.createTextNode("from this seed to seed"), this.seedB, interp]));
    }
    this.sliders = [];
    for (var k = 2; k < this.k; k++) (function (k) {
      var r = info.ranges[k];
      var s = el("input", { type: "range", class: "gx-slider", "data-axis": String(k), min: String(r[0]), max: String(r[1]), step: String((r[1] - r[0]) / 200), value: String(self.coords[k]), "aria-label": info.axis_names[k] });
      s.addEventListener("input", function () { self.coords[k] = parseFloat(s.value); self.touch(); });
      self.sliders[k] = s;
      controls.appendChild(el("label", {}, [document.createTextNode(info.axis_names[k]), s]));
    })(k);
    if (info.latent_dim > this.k) controls.appendChild(el("div", { class: "gx-note", text: "The map and sliders move along the first " + this.k + " of " + info.latent_dim + " directions; the rest stay " + (info.can_encode ? "at the codes' mean." : "as the seed drew them.") }));

    var side = el("div", { class: "gx-side" }, [pair, this.zText, controls]);
    this.root.appendChild(el("div", { class: "gx-main" }, [mapBox, side]));
    this.stripCaption = el("div", { class: "gx-caption", text: info.can_encode || !this.source.canSeed ? "Interpolation: drag across the map." : "Interpolation: drag across the map, or between two seeds." });
    this.strip = el("div", { class: "gx-strip" });
    this.root.appendChild(el("div", {}, [this.stripCaption, this.strip]));
    if (info.conditional) {
      this.every = el("div", { class: "gx-strip gx-every" });
      this.root.appendChild(el("div", {}, [el("div", { class: "gx-caption", text: "The same code decoded as every digit (click one to pick it):" }), this.every]));
    }
    this.bindMap();
  };

  Explorer.prototype.seedValue = function (input) {
    var v = Math.floor(Number(input.value));
    if (!(v >= 0)) v = 0;
    return Math.min(v, this.info.limits.max_seed);
  };

  Explorer.prototype.setSeed = function (seed) {
    var self = this;
    return this.source.seed(seed).then(function (z) {
      // coordinates = the seed's z along the axes; origin = the rest of it
      var axes = self.info.axes;
      self.coords = axes.map(function (a) { return a.reduce(function (s, ai, i) { return s + ai * z[i]; }, 0); });
      self.origin = z.map(function (zi, i) { return zi - axes.reduce(function (s, a, j) { return s + self.coords[j] * a[i]; }, 0); });
      self.sliders.forEach(function (s, k) { if (s) s.value = String(self.coords[k]); });
      self.seedZ = z;
      self.drawMap();
    }).catch(function (e) { self.fail(e); });
  };

  // --- the map ------------------------------------------------------------------------------

  Explorer.prototype.toCanvas = function (u, v) {
    var r = this.info.ranges;
    return [(u - r[0][0]) / (r[0][1] - r[0][0]) * MAP, (1 - (v - r[1][0]) / (r[1][1] - r[1][0])) * MAP];
  };
  Explorer.prototype.fromCanvas = function (x, y) {
    var r = this.info.ranges;
    return [r[0][0] + x / MAP * (r[0][1] - r[0][0]), r[1][0] + (1 - y / MAP) * (r[1][1] - r[1][0])];
  };

  Explorer.prototype.drawMap = function () {
    if (!this.background) {
      var bg = document.createElement("canvas"); bg.width = bg.height = MAP;
      var ctx = bg.getContext("2d"), info = this.info, self = this;
      ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, MAP, MAP);
      ctx.strokeStyle = "#eee"; ctx.lineWidth = 1;
      var zero = this.toCanvas(0, 0);
      ctx.beginPath(); ctx.moveTo(zero[0], 0); ctx.lineTo(zero[0], MAP); ctx.moveTo(0, zero[1]); ctx.lineTo(MAP, zero[1]); ctx.stroke();
      if (info.points) {
        ctx.globalAlpha = 0.6;
        info.points.forEach(function (p, i) {
          var c = self.toCanvas(p[0], p[1]);
          ctx.fillStyle = COLOURS[info.labels[i] % 10];
          ctx.fillRect(c[0] - 1.5, c[1] - 1.5, 3, 3);
        });
        ctx.globalAlpha = 1;
      }
      ctx.fillStyle = "#888"; ctx.font = "11px sans-serif";
      var r = info.ranges;
      ctx.fillText(fmt(r[0][0], 1) + " … " + fmt(r[0][1], 1), 4, MAP - 4);
      ctx.save(); ctx.translate(12, MAP - 60); ctx.rotate(-Math.PI / 2); ctx.fillText(fmt(r[1][0], 1) + " … " + fmt(r[1][1], 1), 0, 0); ctx.restore();
      this.background = bg;
    }
    var ctx2 = this.map.getContext("2d");
    ctx2.drawImage(this.background, 0, 0);
    if (this.dragFrom) {
      var a = this.toCanvas(this.dragFrom[0], this.dragFrom[1]), b = this.toCanvas(this.coords[0], this.coords[1]);
      ctx2.strokeStyle = "#246"; ctx2.lineWidth = 2; ctx2.setLineDash([5, 4]);
      ctx2.beginPath(); ctx2.moveTo(a[0], a[1]); ctx2.lineTo(b[0], b[1]); ctx2.stroke(); ctx2.setLineDash([]);
    }
    var p = this.toCanvas(this.coords[0], this.coords[1]);
    ctx2.strokeStyle = "#000"; ctx2.lineWidth = 1.5;
    ctx2.beginPath(); ctx2.arc(p[0], p[1], 7, 0, 2 * Math.PI); ctx2.moveTo(p[0] - 11, p[1]); ctx2.lineTo(p[0] + 11, p[1]); ctx2.moveTo(p[0], p[1] - 11); ctx2.lineTo(p[0], p[1] + 11); ctx2.stroke();
  };

  Explorer.prototype.bindMap = function () {
    var self = this, map = this.map;
    function at(e) {
      var box = map.getBoundingClientRect();
      return self.fromCanvas((e.clientX - box.left) / box.width * MAP, (e.clientY - box.top) / box.height * MAP);
    }
    map.addEventListener("pointermove", function (e) { var c = at(e); self.coords[0] = c[0]; self.coords[1] = c[1]; self.touch(); });
    map.addEventListener("pointerdown", function (e) {
      map.setPointerCapture && map.setPointerCapture(e.pointerId);
      var c = at(e); self.coords[0] = c[0]; self.coords[1] = c[1]; self.dragFrom = c.slice(); self.dragCoords = self.coords.slice(); self.touch();
    });
    function finish(e) {
      if (!self.dragFrom) return;
      var c = at(e), a = self.toCanvas(self.dragFrom[0], self.dragFrom[1]), b = self.toCanvas(c[0], c[1]);
      var from = self.dragCoords; self.dragFrom = null;
      if (Math.hypot(a[0] - b[0], a[1] - b[1]) > 6) {
        var to = self.coords.slice(); to[0] = c[0]; to[1] = c[1];
        self.interpolate(self.z(from), self.z(to), "from (" + fmt(from[0]) + ", " + fmt(from[1]) + ") to (" + fmt(to[0]) + ", " + fmt(to[1]) + ")");
      }
      self.drawMap();
    }
    map.addEventListener("pointerup", finish);
    map.addEventListener("pointercancel", function () { self.dragFrom = null; self.drawMap(); });
    map.addEventListener("keydown", function (e) {
      var r = self.info.ranges, step = 0.02, moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1] }, m = moves[e.key];
      if (!m) return;
      e.preventDefault();
      self.coords[0] += m[0] * step * (r[0][1] - r[0][0]); self.coords[1] += m[1] * step * (r[1][1] - r[1][0]);
      self.touch();
    });
  };

  // --- decoding -----------------------------------------------------------------------------

  Explorer.prototype.setDigit = function (d) {
    this.digit = d;
    Array.prototype.forEach.call(this.picker.children, function (b) { b.setAttribute("aria-pressed", String(Number(b.dataset.digit) === d)); });
    this.touch();
  };

  // Something changed: decode the current point. At most one request is in flight; moves that
  // arrive meanwhile fold into one more request with the latest point.
  Explorer.prototype.touch = function () {
    if (!this.eventTime) this.eventTime = performance.now();
    this.drawMap();
    if (this.busy) { this.pending = true; return; }
    this.run();
  };

  Explorer.prototype.run = function () {
    var self = this, started = this.eventTime, z = this.z(this.coords);
    this.eventTime = 0; this.busy = true; this.pending = false;
    this.source.decode([z], this.info.conditional ? [this.digit] : null).then(function (out) {
      self.show(out.images[0], out.readings[0], z);
      self.decodes += 1;
      self.latency = performance.now() - started;
      self.root.dataset.decodes = String(self.decodes);
      self.root.dataset.latencyMs = self.latency.toFixed(1);
      self.status.textContent = "decoded in " + self.latency.toFixed(0) + " ms";
      self.status.classList.remove("gx-error");
      // the row of every digit costs ten decodes: drawn once the pointer rests, so it never
      // holds up the digit under the pointer
      if (self.every && !self.pending) return self.decodeEvery(z);
    }).catch(function (e) { self.fail(e); }).then(function () {
      self.busy = false;
      if (self.pending) self.run();
    });
  };

  Explorer.prototype.decodeEvery = function (z) {
    var self = this, zs = [], digits = [];
    for (var d = 0; d < 10; d++) { zs.push(z); digits.push(d); }
    return this.source.decode(zs, digits).then(function (out) {
      self.fillStrip(self.every, out, function (i) { return self.info.class_names[i]; }, self.digit);
      self.root.dataset.everyRows = String(Number(self.root.dataset.everyRows || 0) + 1);
    });
  };

  Explorer.prototype.fail = function (e) {
    this.status.textContent = "error: " + e.message;
    this.status.classList.add("gx-error");
  };

  Explorer.prototype.readingText = function (r) {
    if (r.digit === null || r.digit === undefined) return "no classifier for this dataset";
    return this.info.class_names[r.digit] + " " + Math.round(100 * r.confidence) + "%";
  };

  Explorer.prototype.show = function (image, r, z) {
    this.showReading(image, r);
    this.zText.textContent = z.length <= 4 ? "z = (" + z.map(function (v) { return fmt(v); }).join(", ") + ")" : "z: " + z.length + " numbers, |z| = " + fmt(Math.hypot.apply(null, z));
  };

  // the picture, what the classifier reads in it, and its nearest training digit
  Explorer.prototype.showReading = function (image, r) {
    drawDigit(this.digitCanvas, image);
    drawDigit(this.nearCanvas, r.nearest.image);
    this.reading.textContent = "";
    if (r.digit === null || r.digit === undefined) this.reading.textContent = "(the classifier reads MNIST digits only)";
    else {
      this.reading.appendChild(document.createTextNode("classifier reads "));
      this.reading.appendChild(el("b", { text: this.info.class_names[r.digit] }));
      this.reading.appendChild(document.createTextNode(" (" + Math.round(100 * r.confidence) + "% sure)"));
    }
    var name = this.info.class_names[r.nearest.label], byClass = this.info.typical_distance_by_class[r.nearest.label];
    var typical = byClass === null || byClass === undefined ? this.info.typical_distance : byClass;
    this.nearInfo.textContent = "a " + name + ", distance " + fmt(r.nearest.distance) + " (nearest of " + this.info.n_train + " training digits)";
    this.nearInfo.appendChild(el("div", { text: "Real test digits " + (typical === byClass ? "of class " + name + " " : "") + "lie " + fmt(typical) + " from their nearest training digit (median)." }));
    if (r.nearest.distance < 0.6 * typical) this.nearInfo.appendChild(el("div", { class: "gx-warn", text: "Much closer than that: here the model reproduces a training digit." }));
  };

  Explorer.prototype.fillStrip = function (strip, out, label, selected) {
    var self = this;
    strip.textContent = "";
    out.images.forEach(function (image, i) {
      var c = el("canvas", { width: 56, height: 56 }), r = out.readings[i];
      drawDigit(c, image);
      var cell = el("div", { class: "gx-cell" + (i === selected ? " gx-on" : ""), title: "nearest training digit: a " + self.info.class_names[r.nearest.label] + " at distance " + fmt(r.nearest.distance) }, [
        c, el("div", { text: label(i) }), el("div", { text: self.readingText(r) }), el("div", { text: "nn " + fmt(r.nearest.distance, 1) }),
      ]);
      if (strip === self.every) { cell.style.cursor = "pointer"; cell.addEventListener("click", function () { self.setDigit(i); }); }
      strip.appendChild(cell);
    });
  };

  Explorer.prototype.interpolate = function (za, zb, what) {
    var self = this, zs = [], digits = this.info.conditional ? [] : null;
    for (var s = 0; s < STRIP; s++) {
      var t = s / (STRIP - 1);
      zs.push(za.map(function (a, i) { return Math.round(((1 - t) * a + t * zb[i]) * 1e5) / 1e5; }));
      if (digits) digits.push(this.digit);
    }
    return this.source.decode(zs, digits).then(function (out) {
      self.stripCaption.textContent = "Interpolation " + what + ":";
      self.fillStrip(self.strip, out, function (i) { return "t=" + fmt(i / (STRIP - 1), 1); }, -1);
      self.root.dataset.strips = String(Number(self.root.dataset.strips || 0) + 1);
    }).catch(function (e) { self.fail(e); });
  };

  Explorer.prototype.interpolateSeeds = function () {
    var self = this, a = this.seedValue(this.seedInput), b = this.seedValue(this.seedB);
    Promise.all([this.source.seed(a), this.source.seed(b)]).then(function (zs) {
      return self.interpolate(zs[0], zs[1], "from seed " + a + " to seed " + b);
    }).catch(function (e) { self.fail(e); });
  };


  // --- an iterative model (a flow): a seed sets the noise x0, a slider the solver's steps -------

  function FlowExplorer(root, info, source) {
    this.root = root; this.info = info; this.source = source;
    var sampler = info.sampler;
    this.live = !source.stepChoices;
    this.stepChoices = source.stepChoices || null;  // offline: the step counts computed in advance
    this.seed = source.seeds ? source.seeds[0] : 0;
    this.steps = this.stepChoices ? this.stepChoices[this.stepChoices.length - 1] : sampler.default_steps;
    this.digit = info.conditional && this.live ? 0 : null;
    this.guidance = info.conditional && this.live && sampler.guidance ? sampler.guidance["default"] : null;
    this.busy = false; this.pending = false; this.eventTime = 0; this.decodes = 0;
    this.build();
    this.touch();
  }
  ["showReading", "fillStrip", "readingText", "fail"].forEach(function (name) { FlowExplorer.prototype[name] = Explorer.prototype[name]; });

  FlowExplorer.prototype.build = function () {
    var info = this.info, self = this, sampler = info.sampler;
    buildHead(this, "noise of " + info.latent_dim + " numbers, integrated step by step");
    var pair = buildPair(this, "sample");
    var controls = el("div", { class: "gx-controls" });
    if (this.live) {
      this.seedInput = el("input", { type: "number", class: "gx-seed", min: "0", max: String(info.limits.max_seed), value: "0", "aria-label": "seed" });
      this.seedInput.addEventListener("change", function () { self.seed = Explorer.prototype.seedValue.call(self, self.seedInput); self.touch(); });
    } else {
      this.seedInput = el("select", { class: "gx-seed", "aria-label": "seed" });
      this.source.seeds.forEach(function (s, i) {
        self.seedInput.appendChild(el("option", { value: String(s), text: String(s) + (self.source.data.digits ? " (digit " + info.class_names[self.source.data.digits[i]] + ")" : "") }));
      });
      this.seedInput.addEventListener("change", function () { self.seed = Number(self.seedInput.value); self.touch(); });
    }
    controls.appendChild(el("label", {}, [document.createTextNode("seed (sets the noise x₀)"), this.seedInput]));
    var steps = this.stepChoices
      ? { min: "0", max: String(this.stepChoices.length - 1), value: String(this.stepChoices.length - 1) }
      : { min: "1", max: String(sampler.max_steps), value: String(this.steps) };
    this.stepSlider = el("input", { type: "range", class: "gx-steps", min: steps.min, max: steps.max, step: "1", value: steps.value, "aria-label": "solver steps" });
    this.stepText = el("span", { class: "gx-steptext" });
    this.stepSlider.addEventListener("input", function () {
      var v = Number(self.stepSlider.value);
      self.steps = self.stepChoices ? self.stepChoices[v] : v;
      self.touch();
    });
    controls.appendChild(el("label", {}, [document.createTextNode("steps"), this.stepSlider, this.stepText]));
    if (info.conditional && this.live) {
      this.picker = el("div", { class: "gx-picker", role: "group", "aria-label": "digit" });
      info.class_names.forEach(function (n, d) {
        var b = el("button", { type: "button", "data-digit": String(d), "aria-pressed": String(d === self.digit), text: n });
        b.addEventListener("click", function () { Explorer.prototype.setDigit.call(self, d); });
        self.picker.appendChild(b);
      });
      controls.appendChild(el("div", {}, [el("div", { class: "gx-note", text: "Digit to draw:" }), this.picker]));
      var g = sampler.guidance;
      this.guidanceSlider = el("input", { type: "range", class: "gx-guidance", min: String(g.min), max: String(g.max), step: "0.25", value: String(g["default"]), "aria-label": "guidance" });
      this.guidanceText = el("span", { text: fmt(g["default"]) });
      this.guidanceSlider.addEventListener("input", function () { self.guidance = Number(self.guidanceSlider.value); self.guidanceText.textContent = fmt(self.guidance); self.touch(); });
      controls.appendChild(el("label", {}, [document.createTextNode("guidance"), this.guidanceSlider, this.guidanceText]));
      controls.appendChild(el("div", { class: "gx-note", text: "Guidance 1: the conditional field; 0: the unconditional one; above 1: pushed further towards the digit." }));
    }
    if (this.live) {
      this.seedB = el("input", { type: "number", class: "gx-seed-b", min: "0", max: String(info.limits.max_seed), value: "1", "aria-label": "second seed" });
      var interp = el("button", { type: "button", class: "gx-interp", text: "interpolate" });
      interp.addEventListener("click", function () { self.interpolateSeeds(); });
      controls.appendChild(el("label", {}, [document.createTextNode("from this seed's noise to seed"), this.seedB, interp]));
    }
    controls.appendChild(el("div", { class: "gx-note", text: "Each step is one more pass of the network (two with Heun's solver): more steps follow the learned field more closely." }));
    var side = el("div", { class: "gx-side gx-wide" }, [pair, this.zText]);
    this.root.appendChild(el("div", { class: "gx-main" }, [side, el("div", { class: "gx-side" }, [controls])]));
    this.trajectory = el("div", { class: "gx-strip gx-trajectory" });
    this.root.appendChild(el("div", {}, [el("div", { class: "gx-caption", text: "Along t: the noise (left) becoming the sample (right)" }), this.trajectory]));
    this.stripCaption = el("div", { class: "gx-caption", text: this.live ? "Interpolation between two seeds' noises: pick a second seed." : "Interpolation between seeds needs the live explorer (genlab explore RUN)." });
    this.strip = el("div", { class: "gx-strip" });
    this.root.appendChild(el("div", {}, [this.stripCaption, this.strip]));
  };

  FlowExplorer.prototype.request = function () {
    return { seed: this.seed, steps: this.steps, digit: this.digit, guidance: this.guidance };
  };

  // The same one-request-in-flight rule as the map: moves that arrive meanwhile fold into one more.
  FlowExplorer.prototype.touch = function () {
    if (!this.eventTime) this.eventTime = performance.now();
    this.stepText.textContent = String(this.steps);
    if (this.busy) { this.pending = true; return; }
    this.run();
  };

  FlowExplorer.prototype.run = function () {
    var self = this, started = this.eventTime, req = this.request();
    this.eventTime = 0; this.busy = true; this.pending = false;
    this.source.flow(req).then(function (out) {
      self.showReading(out.image, out.reading);
      self.zText.textContent = "seed " + req.seed + ": " + out.steps + " step" + (out.steps > 1 ? "s" : "") + ", " + out.nfe + " network evaluation" + (out.nfe > 1 ? "s" : "") + (req.guidance !== null ? ", guidance " + fmt(req.guidance) : "");
      self.fillFrames(out);
      self.decodes += 1;
      self.latency = performance.now() - started;
      self.root.dataset.decodes = String(self.decodes);
      self.root.dataset.steps = String(out.steps);
      self.root.dataset.latencyMs = self.latency.toFixed(1);
      self.status.textContent = "integrated in " + self.latency.toFixed(0) + " ms";
      self.status.classList.remove("gx-error");
    }).catch(function (e) { self.fail(e); }).then(function () {
      self.busy = false;
      if (self.pending) self.run();
    });
  };

  FlowExplorer.prototype.fillFrames = function (out) {
    var strip = this.trajectory;
    strip.textContent = "";
    out.frames.forEach(function (image, i) {
      var c = el("canvas", { width: 56, height: 56 });
      drawDigit(c, image);
      strip.appendChild(el("div", { class: "gx-cell" }, [c, el("div", { text: "t=" + fmt(out.times[i]) })]));
    });
  };

  FlowExplorer.prototype.interpolateSeeds = function () {
    var self = this, a = this.seed, b = Explorer.prototype.seedValue.call(this, this.seedB);
    this.source.interpolateSeeds(a, b, this.digit).then(function (out) {
      self.stripCaption.textContent = "Interpolation from seed " + a + "'s noise to seed " + b + "'s (along the sphere), each integrated with the model's default sampler:";
      self.fillStrip(self.strip, out, function (i) { return "s=" + fmt(i / (STRIP - 1), 1); }, -1);
      self.root.dataset.strips = String(Number(self.root.dataset.strips || 0) + 1);
    }).catch(function (e) { self.fail(e); });
  };

  function makeExplorer(root, info, source) {
    return info.iterative ? new FlowExplorer(root, info, source) : new Explorer(root, info, source);
  }

  // --- mounting -----------------------------------------------------------------------------

  var mounted = [];
  function mountAll() {
    var live = document.querySelector("[data-gx-live]:not([data-gx-mounted])");
    if (live) {
      live.setAttribute("data-gx-mounted", "");
      fetch("/api/info").then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then(function (info) { mounted.push(makeExplorer(live, info, new LiveSource(""))); })
        .catch(function (e) { live.textContent = "Could not load the run: " + e.message; });
    }
    Array.prototype.forEach.call(document.querySelectorAll("[data-gx-grid]:not([data-gx-mounted])"), function (root) {
      root.setAttribute("data-gx-mounted", "");
      var data = JSON.parse(document.getElementById(root.getAttribute("data-gx-grid")).textContent);
      mounted.push(makeExplorer(root, data.info, data.info.iterative ? new FlowGridSource(data) : new GridSource(data)));
    });
  }
  window.GenlabExplorer = { mountAll: mountAll, explorers: mounted, Explorer: Explorer, FlowExplorer: FlowExplorer, LiveSource: LiveSource, GridSource: GridSource, FlowGridSource: FlowGridSource };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", mountAll); else mountAll();
})();
