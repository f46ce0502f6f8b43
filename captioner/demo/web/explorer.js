/* The attention explorer: draws every word's attention heatmap in the browser.
 *
 * app.py runs this file as the `js_on_load` of a gr.HTML component (gradio gives it `element`,
 * the component's root, `props` and `watch`). The server sends, once per caption, one grid x grid
 * attention map per word, the true cell centres and the display size (see captioner/demo/core.py
 * `explorer_payload`). The image itself is not sent again: the page already shows it in the
 * input component (#input-image: the visitor's upload or the example clicked), and the heatmaps
 * are drawn over that (only a scene-lab scene, a few KB, comes with its caption). From then on, moving the slider, clicking a word or a thumbnail repaints
 * here, within one animation frame, and asks the server nothing.
 *
 * The visitor can also question the model (each asks the server once, through a gradio event
 * that this file triggers): pick another word from a word's alternatives ("pick"), make the model
 * look at a point of the image at the selected word ("look"), or go back to the model's own
 * caption ("reset"). The payload also carries each word's gate (drawn as a bar under the word),
 * the beam hypotheses and, in the scene lab, the objects' boxes and whether each word's
 * attention peak fell inside the box of the object it names.
 *
 * The maths is the same as captioner/visualize.py `attention_overlay`: bilinear interpolation
 * between the true cell centres (constant beyond the outermost ones), the map scaled to its own
 * peak, and the picture dimmed where the heat is low: each pixel times the brightness level
 * FLOOR + (1 - FLOOR) * sqrt(heat) (never tinted, so every object keeps its own colour). A test
 * compares these pixels with the server's.
 *
 * The page address records the view (example or lab scene, settings, forced words, look-here
 * point, selected word, soft or hard model): app.py's `restore` rebuilds it from a shared link.
 *
 * "Why this word?" asks the server once for the selected word's three maps (attention, Grad-CAM,
 * occlusion; captioner/demo/why.py); they come back with the same caption (`why`) and are drawn
 * here side by side with the same `heatmap` and `blend` as the attention. Where the app offers
 * a soft and a hard model, moving the page's "Attention" radio asks for the same view with the
 * other model ("switch"), at the same word.
 */
(function (global) {
  "use strict";

  // ---- the maths (pure functions, also called by the tests) ----

  /** For each of `size` pixel centres, the two cells it lies between and the weight of the
   * second: numpy.interp over the cell centres (fractions of the side), as visualize.py does. */
  function interpolation(size, centres) {
    const n = centres.length;
    const lo = new Int32Array(size), hi = new Int32Array(size), w = new Float64Array(size);
    let k = 0;
    for (let i = 0; i < size; i++) {
      const p = (i + 0.5) / size;
      if (p <= centres[0]) { lo[i] = hi[i] = 0; continue; }
      if (p >= centres[n - 1]) { lo[i] = hi[i] = n - 1; continue; }
      while (centres[k + 1] < p) k++;  // pixels are visited in order: k only moves forward
      lo[i] = k; hi[i] = k + 1;
      w[i] = (p - centres[k]) / (centres[k + 1] - centres[k]);
    }
    return { lo, hi, w };
  }

  /** One word's map as the server packs it (core.py `pack_map`: base64, one byte per cell,
   * the square root of the map scaled to its peak) -> the map scaled to its peak. */
  function unpackMap(text) {
    const bytes = atob(text);
    const map = new Float64Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) map[i] = (bytes.charCodeAt(i) / 255) ** 2;
    return map;
  }

  /** One word's map (flattened grid x grid, row-major) -> width x height heat in [0, 1],
   * scaled to its own peak. Separable: rows first (height x grid), then columns. */
  function heatmap(attention, grid, width, height, centres) {
    const rows = interpolation(height, centres), cols = interpolation(width, centres);
    const byRow = new Float64Array(height * grid);
    for (let y = 0; y < height; y++) {
      const a = rows.lo[y] * grid, b = rows.hi[y] * grid, t = rows.w[y];
      for (let c = 0; c < grid; c++) {
        byRow[y * grid + c] = attention[a + c] * (1 - t) + attention[b + c] * t;
      }
    }
    const heat = new Float64Array(width * height);
    let peak = 0;
    for (let y = 0; y < height; y++) {
      const row = y * grid;
      for (let x = 0; x < width; x++) {
        const t = cols.w[x];
        const v = byRow[row + cols.lo[x]] * (1 - t) + byRow[row + cols.hi[x]] * t;
        heat[y * width + x] = v;
        if (v > peak) peak = v;
      }
    }
    if (peak > 0) for (let i = 0; i < heat.length; i++) heat[i] /= peak;
    return heat;
  }

  /** Dim the image's RGBA pixels by the heat into `out` (an ImageData's data): each channel
   * times the same brightness level (visualize.py `overlay_weight`), so hues are kept. */
  function blend(pixels, heat, floor, out) {
    for (let i = 0, p = 0; i < heat.length; i++, p += 4) {
      const level = Math.min(255, Math.floor(Math.sqrt(heat[i]) * (1 - floor) * 255
                                             + floor * 255 + 0.5)) / 255;
      out[p] = Math.round(pixels[p] * level);
      out[p + 1] = Math.round(pixels[p + 1] * level);
      out[p + 2] = Math.round(pixels[p + 2] * level);
      out[p + 3] = 255;
    }
    return out;
  }

  // ---- the component ----

  const THUMB = 112;  // gallery thumbnails: longer side in CSS pixels
  const EMPTY = "Click an example or upload a picture to see where the model looks for each word.";

  function mount(element, props, watch, trigger) {
    let data = null;      // the server's payload for the caption shown
    let pixels = null;    // the display image's RGBA pixels, at width x height
    let thumbPixels = null;
    let cache = [];       // ImageData per word, drawn once on first view
    let current = 1;      // 1-based word number shown
    let looking = false;  // "look here" armed: the next click on the heatmap is a point
    let loads = 0;        // captions received so far: a late image load must not win
    let painted = 0;      // paints so far (tests and benchmarks read #heatmap's data-painted)
    let pending = null;   // the word the visitor changed: shown again when the answer comes
    let source = null;    // what the shown picture is, for the page address (null: an upload)
    let why = null;       // the server's "why this word?" for the caption shown, if asked
    let whyDrawn = 0;     // explanations drawn so far (tests read #why's data-drawn)

    const $ = (selector) => element.querySelector(selector);

    /** A canvas-sized copy of an image's pixels; `blocky`: enlarged by repeating pixels (a
     * lab scene arrives at its own small size, and its shapes' edges should stay crisp). */
    function pixelsOf(image, width, height, blocky = false) {
      const canvas = document.createElement("canvas");
      canvas.width = width; canvas.height = height;
      const ctx = canvas.getContext("2d", { willReadFrequently: true });
      ctx.imageSmoothingEnabled = !blocky;
      ctx.imageSmoothingQuality = "high";
      ctx.drawImage(image, 0, 0, width, height);
      return ctx.getImageData(0, 0, width, height).data;
    }

    function overlay(word, width, height, base) {
      const out = new ImageData(width, height);
      const heat = heatmap(data.attention[word - 1], data.grid, width, height, data.centres);
      blend(base, heat, props.floor, out.data);
      return out;
    }

    /** Show word `word`: the heatmap, the slider, the marked word and thumbnail. */
    function select(word) {
      if (!data || !pixels || !data.tokens.length) return;
      current = Math.min(Math.max(Math.round(word) || 1, 1), data.tokens.length);
      const canvas = $("#heatmap canvas");
      if (!cache[current]) cache[current] = overlay(current, data.width, data.height, pixels);
      canvas.getContext("2d").putImageData(cache[current], 0, 0);
      drawMarks(canvas.getContext("2d"));
      showAlternatives();
      $("#why").hidden = !why || why.word !== current;  // it explains one word only
      const slider = $("#word-slider input[type=range]");
      if (Number(slider.value) !== current) slider.value = String(current);
      $("#word-slider .cx-position").textContent = current + " / " + data.tokens.length;
      element.querySelectorAll("[data-word]").forEach((node) => {
        const on = Number(node.dataset.word) === current;
        node.classList.toggle("cx-current", on);
        node.setAttribute("aria-selected", on ? "true" : "false");
      });
      share();
      painted += 1;  // stamped on #heatmap for tests and benchmarks
      const stamp = $("#heatmap").dataset;
      stamp.word = String(current);
      stamp.painted = String(painted);
      stamp.paintedAt = String(performance.now());
    }

    /** On the heatmap: the boxes of the objects the selected word names (scene lab: one
     * box, or all of a counted group's, "two small red circles"; solid when the attention
     * peak fell inside one of them, dashed when not) and the point the model was made to
     * look at (look here). */
    function drawMarks(ctx) {
      const w = data.width, h = data.height;
      const named = (data.lab?.words || []).find((x) => x.index === current - 1);
      if (named) {  // white on black: stands out on every scene colour; a miss is dashed
        const boxes = (named.objects || [named.object]).map((k) => data.lab.objects[k].box);
        const line = Math.max(2, w / 160);
        ctx.setLineDash(named.hit ? [] : [3 * line, 2 * line]);
        for (const [colour, width] of [["black", 3 * line], ["white", line]]) {
          ctx.lineWidth = width; ctx.strokeStyle = colour;
          for (const [bx0, by0, bx1, by1] of boxes) {
            ctx.strokeRect(bx0 * w, by0 * h, (bx1 - bx0) * w, (by1 - by0) * h);
          }
        }
        ctx.setLineDash([]);
        const [x0, y0, , y1] = boxes[0];  // the label goes by the first box
        const label = named.hit ? "hit: peak inside" : "miss: peak outside";
        ctx.font = "600 " + Math.round(w / 26) + "px sans-serif";
        const tw = ctx.measureText(label).width + 8, th = Math.round(w / 20);
        const lx = Math.min(Math.max(0, x0 * w), w - tw);
        const ly = y0 * h > th + 2 ? y0 * h - th - 2 : Math.min(h - th, y1 * h + 2);
        ctx.fillStyle = "black"; ctx.fillRect(lx, ly, tw, th);
        ctx.fillStyle = "white"; ctx.textBaseline = "middle";
        ctx.fillText(label, lx + 4, ly + th / 2);
      }
      if (data.look && data.look.word === current) {
        const x = data.look.x * w, y = data.look.y * h, r = Math.max(6, w / 40);
        ctx.lineWidth = 2; ctx.strokeStyle = "white";
        ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI);
        ctx.moveTo(x - 2 * r, y); ctx.lineTo(x + 2 * r, y);
        ctx.moveTo(x, y - 2 * r); ctx.lineTo(x, y + 2 * r); ctx.stroke();
      }
    }

    /** Draw "why this word?": each map over the picture exactly as a word's attention (the same
     * interpolation, scaling to its own peak and dimming). Grad-CAM is >= 0 already; occlusion
     * is a drop in log p(word) and can be negative (removing the cell *helped* the word): only
     * the drops are drawn, a map with none leaves the picture dimmed. */
    function drawWhy() {
      const pct = (p) => (100 * p).toFixed(1) + " %";
      $(".cx-why-title").textContent = "Why \u201c" + why.token + "\u201d (word " + why.word
        + ", " + why.model + " attention)? p(word) " + pct(why.probability) + " \u2192 "
        + pct(why.probability_without_attended) + " when the attended cells (half the "
        + "attention) are replaced by the background" + (why.steered ? " (the model's own "
        + "attention here, not your look-here point)" : "") + ".";
      element.querySelectorAll("#why figure").forEach((figure) => {
        const name = figure.dataset.map;
        // the attention one is the heatmap's own map (the same drawing, to the pixel)
        const values = name === "attention" ? data.attention[why.word - 1]
          : why[name].map((v) => Math.max(0, v));
        const c = figure.querySelector("canvas");
        c.width = data.width; c.height = data.height;
        const out = new ImageData(data.width, data.height);
        blend(pixels, heatmap(values, why.grid, data.width, data.height, data.centres),
              props.floor, out.data);
        c.getContext("2d").putImageData(out, 0, 0);
        figure.querySelector("figcaption span").textContent = why.notes[name];
      });
      whyDrawn += 1;
      $("#why").dataset.drawn = String(whyDrawn);
    }

    /** The selected word's alternatives: the top words of the distribution it was chosen from.
     * Picking another one asks the model to write the rest of the caption from there. */
    function showAlternatives() {
      const box = $("#alternatives");
      const options = (data.alternatives || [])[current - 1] || [];
      if (!options.length) { box.replaceChildren(); box.hidden = true; return; }
      const title = document.createElement("span");
      title.className = "cx-alt-title";
      title.textContent = "Word " + current + " could have been (click to make the model "
        + "go on from there):";
      box.replaceChildren(title, ...options.map((option) => {
        const b = document.createElement("button");
        b.type = "button"; b.className = "cx-alt";
        b.dataset.alt = option.word;
        b.classList.toggle("cx-chosen", option.word === data.tokens[current - 1]);
        b.textContent = option.word + " " + percent(option.prob);
        b.title = "probability " + option.prob.toFixed(4);
        return b;
      }));
      box.hidden = false;
    }

    /** A probability as the alternatives show it ("< 0.1 %" rather than "0.0 %"). */
    function percent(p) {
      if (p < 0.001) return "< 0.1 %";
      return (100 * p).toFixed(p < 0.1 ? 1 : 0) + " %";
    }

    /** Ask the server for a new caption (a gradio event this component triggers); its answer
     * opens on the word the visitor changed. */
    function ask(event, details, message) {
      $(".cx-status").textContent = message;
      pending = current;
      looking = false;
      element.classList.remove("cx-looking");
      trigger(event, details);
    }

    /** After the first heatmap is on screen, one word per idle slice: its thumbnail, then its
     * full-size heatmap, so that a later step only copies a finished picture (under 1 ms). */
    function drawGallery(token) {
      const canvases = element.querySelectorAll("#gallery canvas");
      let i = 0;
      const next = () => {
        if (token !== data || i >= canvases.length) return;
        const c = canvases[i++];
        c.getContext("2d").putImageData(overlay(i, c.width, c.height, thumbPixels), 0, 0);
        if (!cache[i]) cache[i] = overlay(i, data.width, data.height, pixels);
        (global.requestIdleCallback || global.setTimeout)(next);
      };
      next();
    }

    function clear(message) {
      $("#words").replaceChildren();
      $("#alternatives").replaceChildren();
      $("#beams").replaceChildren();
      $("#beams").hidden = true;
      $(".cx-beams-title").hidden = true;
      $(".cx-reset").hidden = true;
      $(".cx-status").textContent = "";
      $("#gallery").replaceChildren();
      const slider = $("#word-slider input[type=range]");
      slider.disabled = true; slider.min = "1"; slider.max = "1"; slider.value = "1";
      $("#word-slider .cx-position").textContent = "–";
      $("#heatmap canvas").hidden = true;
      $(".cx-empty").hidden = false;
      $(".cx-empty").textContent = message;
      $(".cx-download").disabled = true;
      $(".cx-look").disabled = true;
      $(".cx-why").disabled = true;
      $(".cx-share").disabled = true;
      why = null;
      $("#why").hidden = true;
      warn(null);
    }

    /** The warning for an image unlike the model's training data: an alert above the picture,
     * and the caption itself shown faded (page CSS: #caption.cx-unsure). */
    function warn(message) {
      const alert = $("#cx-alert");
      alert.textContent = message ? "\u26a0 " + message : "";
      alert.hidden = !message;
      document.getElementById("caption")?.classList.toggle("cx-unsure", Boolean(message));
    }

    /** Record the view in the page address (history.replaceState: no reload, no request), so
     * that the link restores it; uploads cannot be shared. */
    function share() {
      const button = $(".cx-share");
      if (!source || !data) {
        button.disabled = true;
        button.textContent = data ? "No link for uploads" : "Copy link";
        button.title = "an uploaded picture cannot be shared by link (it stays on the server "
          + "only for a while); examples and scene-lab scenes can";
        if (global.location.search) global.history.replaceState(null, "", global.location.pathname);
        return;
      }
      const q = new URLSearchParams();
      if (source.example !== undefined) q.set("example", String(source.example));
      if (source.scene !== undefined) q.set("scene", String(source.scene));
      if (source.compose) q.set("compose", source.compose.map((o) => [o.shape, o.color, o.size,
        o.position[0], o.position[1]].join("-")).join("_"));
      q.set("beam", String(data.beam_size));
      q.set("len", String(data.max_len));
      if (data.forced) q.set("prefix", data.tokens.slice(0, data.forced).join(" "));
      if (data.look) q.set("look", [data.look.word, data.look.x.toFixed(3), data.look.y.toFixed(3)].join(","));
      if ((data.kinds || []).length > 1) q.set("model", data.attention_kind);
      q.set("word", String(current));
      global.history.replaceState(null, "", global.location.pathname + "?" + q.toString());
      button.disabled = false;
      button.textContent = "Copy link";
      button.title = "copy a link that opens this caption at this word";
    }

    /** A new caption from the server: build the words, slider and gallery, then paint word 1. */
    function load() {
      loads += 1;
      let value = props.value;
      // cached example outputs come back from gradio as the JSON text of the same payload
      if (typeof value === "string" && value.startsWith("{")) value = JSON.parse(value);
      if (value && typeof value === "object" && value.error && value.keep && data) {
        // a question the server could not answer: the caption shown is still right
        $(".cx-status").textContent = "\u26a0 " + value.error;
        pending = null;
        return;
      }
      data = null; pixels = null; cache = []; current = 1; why = null;
      const open = pending;
      pending = null;
      if (value && typeof value === "object" && value.error) {  // nothing shown is valid now
        source = null; share();
        clear("\u26a0 " + value.error);
        return;
      }
      if (!value || typeof value !== "object" || !Array.isArray(value.tokens)) {
        clear(EMPTY);
        return;
      }
      // a new picture says what it is; a question about the same picture keeps it
      if (value.source) source = value.source.upload ? null : value.source;
      warn(value.warning);
      if (!value.tokens.length) {
        clear("The caption has no words, so there is no attention.");
        warn(value.warning);
        return;
      }
      const ticket = loads;
      const words = $("#words");
      words.replaceChildren(...value.tokens.map((t, i) => {
        const b = document.createElement("button");
        b.type = "button"; b.className = "cx-word"; b.textContent = t;
        b.dataset.word = String(i + 1); b.setAttribute("role", "option");
        if (i < (value.forced || 0)) b.classList.add("cx-forced");  // chosen by the visitor
        if (value.look && value.look.word === i + 1) b.classList.add("cx-looked");
        if (value.gate) {  // how much of the attended image the word used
          const bar = document.createElement("span");
          bar.className = "cx-gate";
          bar.style.setProperty("--gate", String(value.gate[i]));
          bar.title = "gate " + value.gate[i].toFixed(2) + ": share of the attended image used";
          b.append(bar);
        }
        return b;
      }));
      const beams = value.beams || [];
      $("#beams").replaceChildren(...(beams.length > 1 ? beams : []).map((beam, i) => {
        const li = document.createElement("li");
        li.textContent = beam.score.toFixed(3) + "  " + beam.caption;
        if (i === 0) li.className = "cx-best";
        return li;
      }));
      $("#beams").hidden = beams.length < 2;
      $(".cx-beams-title").hidden = beams.length < 2;
      $(".cx-reset").hidden = !value.steered;
      $(".cx-status").textContent = "";
      const scale = THUMB / Math.max(value.width, value.height);
      const tw = Math.max(1, Math.round(value.width * scale));
      const th = Math.max(1, Math.round(value.height * scale));
      $("#gallery").replaceChildren(...value.tokens.map((t, i) => {
        const b = document.createElement("button");
        b.type = "button"; b.className = "cx-thumb"; b.dataset.word = String(i + 1);
        b.title = (i + 1) + ". " + t;
        const c = document.createElement("canvas");
        c.width = tw; c.height = th;
        const label = document.createElement("span");
        label.textContent = (i + 1) + ". " + t;
        b.append(c, label);
        return b;
      }));
      const slider = $("#word-slider input[type=range]");
      slider.min = "1"; slider.max = String(value.tokens.length); slider.value = "1";
      slider.disabled = value.tokens.length < 2;
      const canvas = $("#heatmap canvas");
      canvas.width = value.width; canvas.height = value.height;
      whenLoaded(value.image ? pictureFrom(value.image) : shownImage(), (image) => {
        if (ticket !== loads) return;  // a newer caption arrived meanwhile
        data = { ...value, attention: value.attention.map(unpackMap) };
        pixels = pixelsOf(image, value.width, value.height, Boolean(value.image));
        thumbPixels = pixelsOf(image, tw, th);
        canvas.hidden = false;
        $(".cx-empty").hidden = true;
        $(".cx-download").disabled = false;
        $(".cx-look").disabled = false;
        $(".cx-why").disabled = false;
        $(".cx-share").disabled = !source;
        why = value.why || null;
        if (why) drawWhy();
        select(open || value.word || value.open || 1);
        // the answer to "why this word?": on a phone it is below the words, out of sight
        if (why) $("#why").scrollIntoView({ block: "nearest" });
        drawGallery(data);
        // a scene-lab answer on a phone: the lab's button is far below, the caption is not
        if (value.lab && global.innerWidth < 640) document.getElementById("caption")?.scrollIntoView();
      });
    }

    /** The picture the input component shows: what was captioned. */
    function shownImage() {
      return document.querySelector(props.image_selector);
    }

    /** A picture the server sent with the caption (the scene lab's scenes, which arrive
     * together with the input component's new picture: this way there is no race). */
    function pictureFrom(url) {
      const img = new Image();
      img.src = url;
      return img;
    }

    /** Call `then(img)` once `img` (maybe still loading, maybe not there yet) has its pixels. */
    function whenLoaded(img, then, tries = 0) {
      if (img && img.complete && img.naturalWidth) return then(img);
      if (img) return img.addEventListener("load", () => then(img), { once: true });
      if (tries < 100) setTimeout(() => whenLoaded(shownImage(), then, tries + 1), 50);
    }

    /** Every word's heatmap and the caption in one PNG, made here on request. */
    function downloadGrid() {
      if (!data) return;
      const columns = 5, side = 224, labelH = 30, pad = 8;
      const panels = data.tokens.length + 1;
      const rows = Math.ceil(panels / columns);
      const titleH = data.warning ? 80 : 44;
      const grid = document.createElement("canvas");
      grid.width = columns * (side + pad) + pad;
      grid.height = titleH + rows * (side + labelH + pad) + pad;
      const ctx = grid.getContext("2d");
      ctx.fillStyle = "white"; ctx.fillRect(0, 0, grid.width, grid.height);
      ctx.fillStyle = "black"; ctx.textAlign = "center"; ctx.textBaseline = "top";
      ctx.font = "20px sans-serif";
      ctx.fillText(data.caption, grid.width / 2, 12, grid.width - 2 * pad);
      if (data.warning) {  // the honesty warning travels with the picture
        ctx.fillStyle = "#b45309"; ctx.font = "15px sans-serif";
        ctx.fillText("\u26a0 " + data.warning, grid.width / 2, 44, grid.width - 2 * pad);
        ctx.fillStyle = "black";
      }
      const scale = side / Math.max(data.width, data.height);
      const w = Math.round(data.width * scale), h = Math.round(data.height * scale);
      const source = document.createElement("canvas");
      source.width = data.width; source.height = data.height;
      ctx.font = "18px sans-serif";
      for (let k = 0; k < panels; k++) {
        const x = pad + (k % columns) * (side + pad);
        const y = titleH + Math.floor(k / columns) * (side + labelH + pad);
        const picture = k === 0 ? new ImageData(new Uint8ClampedArray(pixels), data.width, data.height)
          : (cache[k] = cache[k] || overlay(k, data.width, data.height, pixels));
        source.getContext("2d").putImageData(picture, 0, 0);
        ctx.drawImage(source, x + (side - w) / 2, y + (side - h) / 2, w, h);
        ctx.fillText(k === 0 ? "(image)" : k + ". " + data.tokens[k - 1], x + side / 2, y + side + 5);
      }
      grid.toBlob((blob) => {
        const link = document.createElement("a");
        link.href = URL.createObjectURL(blob);
        link.download = "attention-grid.png";
        link.click();
        setTimeout(() => URL.revokeObjectURL(link.href), 10000);
      }, "image/png");
    }

    // One set of listeners on the root (it outlives re-renders of the template).
    element.addEventListener("input", (event) => {
      if (event.target.matches("#word-slider input[type=range]")) select(Number(event.target.value));
    });
    element.addEventListener("click", (event) => {
      const word = event.target.closest("[data-word]");
      if (word && element.contains(word)) select(Number(word.dataset.word));
      if (event.target.closest(".cx-download")) downloadGrid();
      if (event.target.closest(".cx-share")) {
        global.navigator.clipboard?.writeText(global.location.href).then(
          () => { $(".cx-status").textContent = "link copied: it opens this caption at this word"; },
          () => { $(".cx-status").textContent = "copy the page address to share this view"; });
      }
      if (!data) return;
      const alt = event.target.closest("[data-alt]");
      if (alt && alt.dataset.alt !== data.tokens[current - 1]) {
        const prefix = data.tokens.slice(0, current - 1).concat([alt.dataset.alt]).join(" ");
        ask("pick", { prefix }, "writing the rest after \u201c" + prefix + "\u201d\u2026");
      }
      if (event.target.closest(".cx-reset")) ask("reset", {}, "back to the model's own caption\u2026");
      if (event.target.closest(".cx-why")) {
        // the server makes the same caption again from what it was made of (never our words)
        const details = { word: current, prefix: data.tokens.slice(0, data.forced || 0).join(" ") };
        if (data.look) Object.assign(details, { look_word: data.look.word, look_x: data.look.x,
                                                look_y: data.look.y });
        ask("why", details, "working out why word " + current + "\u2026");
      }
      if (event.target.closest(".cx-look")) {
        looking = !looking;
        element.classList.toggle("cx-looking", looking);
        $(".cx-status").textContent = looking
          ? "click the image: where should the model look for word " + current + "?" : "";
      }
      if (looking && event.target.matches("#heatmap canvas")) {
        const r = event.target.getBoundingClientRect();
        const x = (event.clientX - r.left) / r.width, y = (event.clientY - r.top) / r.height;
        ask("look", { word: current, x, y, prefix: data.tokens.slice(0, current - 1).join(" ") },
            "looking there for word " + current + "\u2026");
      }
    });
    element.addEventListener("keydown", (event) => {
      // arrow keys on a word or thumbnail step through the words, as on the slider
      if (!event.target.closest("[data-word]")) return;
      const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[event.key];
      if (!step) return;
      event.preventDefault();
      select(Number(event.target.closest("[data-word]").dataset.word) + step);  // from the focused one
      const focus = event.target.closest("#gallery") ? "#gallery" : "#words";
      element.querySelector(focus + ' [data-word="' + current + '"]')?.focus();
    });
    // the page's "Attention: soft / hard" radio (app.py) lives outside this component
    document.addEventListener("change", (event) => {
      if (!data || !event.target.matches("#attention-kind input[type=radio]")) return;
      ask("switch", { kind: event.target.value, word: current, link: global.location.search },
          "captioning with the " + event.target.value + " attention model\u2026");
    });
    watch("value", load);
    load();
  }

  global.CaptionerExplorer = { interpolation, heatmap, blend, unpackMap, mount };
})(window);
