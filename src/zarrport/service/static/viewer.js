/* zarrport viewer: a map of one variable of one dataset of `zarrport serve`, a time slider,
   a colormap and range, a legend, and the time series at a clicked point.

   Everything comes from the server this page is served by (relative URLs: the page also works
   under a path prefix): /stac/collections, /xarray/{variables,info,statistics,tiles,point},
   /colorMaps. No external fonts, glyphs, sprites or tiles: the page works offline.
   `window.zarrportViewer` exposes the state for tests and the browser console. */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const LAT_LIMIT = 85.0511; // Web Mercator
  const pageParams = new URLSearchParams(location.search);

  const state = {
    dataset: null, // {collection: id} or {url: "..."}
    variable: null,
    units: "",
    dim: null, // the dimension the slider moves along (time), or null
    times: [], // its labels, as the server writes them
    bounds: null, // [w, s, e, n], degrees
    colormap: $("colormap").value,
    vmin: null,
    vmax: null,
  };
  // for tests and the console
  const viewer = (window.zarrportViewer = {
    state, map: null, tileUrl: null, series: null, errors: [], ready: false,
    settled: () => viewer.map !== null && viewer.tileUrl !== null && !viewer.loading &&
      viewer.map.loaded() && viewer.map.areTilesLoaded(),
    loading: false,
  });
  let generation = 0; // bumped on every new dataset/variable: late answers are dropped
  let marker = null;

  // ------------------------------------------------------------------ API and status

  class ApiError extends Error {}

  function datasetParams() {
    const q = new URLSearchParams();
    if (state.dataset && state.dataset.collection) q.set("collection", state.dataset.collection);
    if (state.dataset && state.dataset.url) q.set("url", state.dataset.url);
    return q;
  }

  function apiUrl(path, extra) {
    const q = datasetParams();
    for (const [k, v] of extra || []) q.append(k, v);
    const s = q.toString();
    return s ? `${path}?${s}` : path;
  }

  async function api(url, options) {
    let resp;
    try {
      resp = await fetch(url, options);
    } catch (err) {
      throw new ApiError(`${url.split("?")[0]}: the server did not answer (${err.message})`);
    }
    let payload = null;
    try {
      payload = await resp.json();
    } catch (err) {
      payload = null;
    }
    if (!resp.ok) {
      const e = payload && payload.error;
      const detail = e ? `${e.code}: ${e.message}` : `HTTP ${resp.status} ${resp.statusText}`;
      const err = new ApiError(detail);
      err.status = resp.status;
      throw err;
    }
    return payload;
  }

  function setStatus(text, isError) {
    const el = $("status");
    el.textContent = text || "";
    el.classList.toggle("error", Boolean(isError));
    if (isError) viewer.errors.push(text);
  }

  function fail(err) {
    setStatus(err instanceof Error ? err.message : String(err), true);
  }

  // ------------------------------------------------------------------ the map

  function createMap() {
    const map = new maplibregl.Map({
      container: "map",
      style: {
        version: 8,
        sources: {},
        layers: [{ id: "background", type: "background", paint: { "background-color": "#e8ecef" } }],
      },
      center: [0, 20],
      zoom: 0.6,
      fadeDuration: 0,
      attributionControl: false,
      renderWorldCopies: false,
      dragRotate: false,
      pitchWithRotate: false,
    });
    map.touchZoomRotate.disableRotation();
    map.keyboard.disableRotation();
    map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "top-right");
    map.addControl(new maplibregl.ScaleControl(), "bottom-left");
    map.on("error", (e) => tileError(e.error || e));
    map.on("click", (e) => showPoint(e.lngLat.wrap().lng, e.lngLat.lat));
    map.getCanvas().style.cursor = "crosshair";
    viewer.map = map;
    return new Promise((resolve) => map.once("load", () => resolve(map)));
  }

  async function tileError(error) {
    let text = (error && error.message) || String(error);
    if (error && error.body && typeof error.body.text === "function") {
      try {
        const e = JSON.parse(await error.body.text()).error;
        if (e) text = `${e.code}: ${e.message}`;
      } catch (_) {
        /* not JSON: keep the message */
      }
    }
    if (error && error.status === 404) return; // a tile outside the data: nothing to draw
    fail(`tile: ${text}`);
  }

  function tileUrl() {
    const extra = [["variable", state.variable]];
    if (state.dim && state.times.length) extra.push(["sel", `${state.dim}=${selectedTime()}`]);
    extra.push(["rescale", `${state.vmin},${state.vmax}`]);
    extra.push(["colormap_name", state.colormap]);
    const path = apiUrl("xarray/tiles/WebMercatorQuad/{z}/{x}/{y}.png", extra);
    // MapLibre needs an absolute URL; the braces must stay unescaped
    return new URL(path, location.href).href.replace(/%7B/g, "{").replace(/%7D/g, "}");
  }

  function updateTiles() {
    if (!viewer.map || !state.variable || state.vmin === null) return;
    const url = tileUrl();
    if (url === viewer.tileUrl) return;
    viewer.tileUrl = url;
    const map = viewer.map;
    const source = map.getSource("data");
    if (source) {
      source.setTiles([url]);
    } else {
      const [w, s, e, n] = state.bounds;
      map.addSource("data", {
        type: "raster",
        tiles: [url],
        tileSize: 256,
        bounds: [w, Math.max(s, -LAT_LIMIT), e, Math.min(n, LAT_LIMIT)],
      });
      map.addLayer({ id: "data", type: "raster", source: "data",
                     paint: { "raster-fade-duration": 0, "raster-resampling": "nearest" } });
    }
    updateLegend();
  }

  // ------------------------------------------------------------------ dataset and variable

  async function loadCollections() {
    let answer;
    try {
      answer = await api("stac/collections");
    } catch (err) {
      if (err.status === 404) return null; // no catalog (--catalog): name a url instead
      throw err;
    }
    return answer.collections || [];
  }

  function fillSelect(select, items) {
    select.replaceChildren(...items.map(([value, text]) => {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = text;
      return option;
    }));
  }

  function collectionVariables(collection) {
    const vars = collection["cube:variables"] || {};
    return Object.entries(vars)
      .filter(([, v]) => v.type === "data")
      .map(([name, v]) => ({ name, unit: v.unit || "", description: v.description || "" }));
  }

  let collections = [];

  async function chooseCollection(id) {
    const collection = collections.find((c) => c.id === id);
    state.dataset = { collection: id };
    const variables = collectionVariables(collection || {});
    await setVariables(variables);
  }

  async function openUrl(url) {
    state.dataset = { url };
    setStatus(`opening ${url} ...`);
    const answer = await api(apiUrl("xarray/variables"));
    if (!answer.variables.length) throw new ApiError(`${url}: no variable with latitude/longitude`);
    await setVariables(answer.variables);
  }

  let variables = [];

  async function setVariables(list) {
    variables = list;
    fillSelect($("variable"), list.map((v) => [v.name, v.description ? `${v.name} — ${v.description}` : v.name]));
    const wanted = pageParams.get("variable");
    pageParams.delete("variable"); // only for the first dataset shown
    if (wanted && list.some((v) => v.name === wanted)) $("variable").value = wanted;
    if (!list.length) {
      state.variable = null;
      setStatus("this collection has no data variable", true);
      return;
    }
    await chooseVariable($("variable").value);
  }

  async function chooseVariable(name) {
    const mine = ++generation;
    viewer.ready = false;
    viewer.loading = true;
    setStatus(`loading ${name} ...`);
    try {
      const info = await api(apiUrl("xarray/info", [["variable", name], ["show_times", "true"]]));
      if (mine !== generation) return;
      state.variable = name;
      const meta = variables.find((v) => v.name === name) || {};
      const attrs = info.attrs || {};
      state.units = attrs.units || meta.unit || "";
      state.longName = attrs.long_name || meta.description || "";
      const dims = (info.dimensions || []).filter((d) => d !== "x" && d !== "y");
      state.dim = dims.length ? dims[0] : null;
      state.times = !state.dim ? [] : parseList(info.times) ||
        (info.band_descriptions || []).map((b) => String(b[1]));
      const geographic = /4326|CRS84/i.test(String(info.crs || "4326"));
      state.bounds = geographic && info.bounds ? info.bounds : [-180, -90, 180, 90];
      setupSlider();
      await autoRange(attrs, mine);
      if (mine !== generation) return;
      const first = !viewer.map.getSource("data");
      updateTiles();
      if (first) fitBounds();
      clearPoint();
      setStatus(describe());
      viewer.ready = true;
    } finally {
      if (mine === generation) viewer.loading = false;
    }
  }

  function parseList(value) {
    if (Array.isArray(value)) return value.map(String);
    return null;
  }

  function describe() {
    const where = state.dataset.collection ? state.dataset.collection : state.dataset.url;
    const n = state.times.length ? `, ${state.times.length} ${state.dim} steps` : "";
    return `${state.variable}${state.longName ? ` (${state.longName})` : ""} of ${where}${n}`;
  }

  function fitBounds() {
    const [w, s, e, n] = state.bounds;
    viewer.map.fitBounds([[w, Math.max(s, -LAT_LIMIT)], [e, Math.min(n, LAT_LIMIT)]],
                         { padding: 10, animate: false });
  }

  // ------------------------------------------------------------------ time

  function setupSlider() {
    const slider = $("time");
    $("time-field").hidden = !state.times.length;
    slider.max = String(Math.max(state.times.length - 1, 0));
    let index = 0;
    const wanted = pageParams.get("time");
    if (wanted) {
      pageParams.delete("time");
      const found = state.times.findIndex((t) => t.startsWith(wanted));
      if (found >= 0) index = found;
    }
    slider.value = String(index);
    document.querySelector("label[for=time]").firstChild.textContent = `${cap(state.dim || "time")} `;
    showTime();
  }

  function cap(s) { return s.charAt(0).toUpperCase() + s.slice(1); }

  function selectedTime() {
    return state.times[Number($("time").value)] || "";
  }

  function timeText() {
    const t = selectedTime();
    return t.endsWith(" 00:00:00") ? t.slice(0, 10) : t.replace(/:00$/, "");
  }

  function showTime() {
    const text = timeText();
    $("time-label").textContent = text;
    $("time").setAttribute("aria-valuetext", text);
    markTime();
  }

  let timeTimer = null;
  $("time").addEventListener("input", () => {
    showTime();
    clearTimeout(timeTimer);
    timeTimer = setTimeout(updateTiles, 200); // a held arrow key: the last value only
  });
  $("time").addEventListener("change", () => {
    clearTimeout(timeTimer);
    updateTiles();
  });

  // ------------------------------------------------------------------ range and legend

  async function autoRange(attrs, mine) {
    let lo = null;
    let hi = null;
    try {
      const [w, s, e, n] = state.bounds;
      const ring = [[w, s], [e, s], [e, n], [w, n], [w, s]];
      const extra = [["variable", state.variable], ["max_size", "256"]];
      if (state.dim && state.times.length) extra.push(["sel", `${state.dim}=${selectedTime()}`]);
      const answer = await api(apiUrl("xarray/statistics", extra), {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ type: "Feature", properties: {},
                               geometry: { type: "Polygon", coordinates: [ring] } }),
      });
      const stats = Object.values((answer.properties || {}).statistics || {})[0] || {};
      lo = stats.percentile_2;
      hi = stats.percentile_98;
    } catch (err) {
      if (mine === generation) fail(`range: ${err.message}`);
    }
    if (!(Number.isFinite(lo) && Number.isFinite(hi) && hi > lo)) {
      lo = Number(attrs.valid_min);
      hi = Number(attrs.valid_max);
    }
    if (!(Number.isFinite(lo) && Number.isFinite(hi) && hi > lo)) {
      lo = 0;
      hi = 1;
    }
    if (mine !== generation) return;
    setRange(lo, hi);
  }

  function round(x) {
    return Number(x.toPrecision(4));
  }

  function setRange(lo, hi) {
    state.vmin = round(lo);
    state.vmax = round(hi);
    $("vmin").value = String(state.vmin);
    $("vmax").value = String(state.vmax);
  }

  function rangeInput() {
    const lo = Number($("vmin").value);
    const hi = Number($("vmax").value);
    if ($("vmin").value === "" || $("vmax").value === "" || !Number.isFinite(lo) ||
        !Number.isFinite(hi) || !(hi > lo)) {
      setStatus("range: min must be a number below max", true);
      return;
    }
    state.vmin = lo;
    state.vmax = hi;
    setStatus(describe());
    updateTiles();
  }
  $("vmin").addEventListener("change", rangeInput);
  $("vmax").addEventListener("change", rangeInput);
  $("auto-range").addEventListener("click", async () => {
    const mine = generation;
    await autoRange({}, mine);
    updateTiles();
  });

  $("colormap").addEventListener("change", () => {
    state.colormap = $("colormap").value;
    updateTiles();
  });

  function updateLegend() {
    const bar = $("legend-bar");
    const src = `colorMaps/${encodeURIComponent(state.colormap)}?f=png&width=256&height=12`;
    if (bar.getAttribute("src") !== src) {
      bar.onerror = () => fail(`legend: no colour bar for ${state.colormap}`);
      bar.src = src;
      bar.alt = `colour bar ${state.colormap}`;
    }
    $("legend-min").textContent = fmt(state.vmin);
    $("legend-max").textContent = fmt(state.vmax);
    $("legend-units").textContent = state.units;
  }

  // ------------------------------------------------------------------ a point's series

  function clearPoint() {
    viewer.series = null;
    if (marker) marker.remove();
    marker = null;
    const svg = $("plot");
    svg.replaceChildren(svgEl("title", { id: "plot-title" }, "Click the map for a time series"),
                        svgEl("text", { x: "50%", y: "50%", "text-anchor": "middle", class: "hint" },
                              "Click the map for the time series at a point"));
  }

  async function showPoint(lon, lat) {
    if (!state.variable) return;
    const mine = generation;
    if (marker) marker.remove();
    marker = new maplibregl.Marker({ color: "#d9480f" }).setLngLat([lon, lat]).addTo(viewer.map);
    setStatus(`reading ${state.variable} at ${lonLat(lon, lat)} ...`);
    let answer;
    try {
      const path = `xarray/point/${lon.toFixed(5)},${lat.toFixed(5)}`;
      answer = await api(apiUrl(path, [["variable", state.variable]]));
    } catch (err) {
      if (mine === generation) fail(`point: ${err.message}`);
      return;
    }
    if (mine !== generation) return;
    const values = (answer.values || []).map((v) => (v === null || v === undefined ? null : Number(v)));
    const labels = answer.band_descriptions || state.times;
    viewer.series = { lon, lat, times: labels.map(String), values };
    drawPlot($("plot"), viewer.series);
    setStatus(describe());
  }

  function lonLat(lon, lat) {
    const ns = lat >= 0 ? "N" : "S";
    const ew = lon >= 0 ? "E" : "W";
    return `${Math.abs(lat).toFixed(2)}°${ns}, ${Math.abs(lon).toFixed(2)}°${ew}`;
  }

  // ------------------------------------------------------------------ plotting

  const SVG = "http://www.w3.org/2000/svg";

  function svgEl(name, attrs, text) {
    const el = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    if (text !== undefined) el.textContent = text;
    return el;
  }

  /* ~count "nice" ticks (1, 2, 5 x 10^k steps) covering [lo, hi]. */
  function niceTicks(lo, hi, count) {
    if (!(hi > lo)) {
      const pad = Math.abs(lo) * 0.01 || 1;
      lo -= pad;
      hi += pad;
    }
    const raw = (hi - lo) / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
    const start = Math.floor(lo / step) * step;
    const stop = Math.ceil(hi / step) * step;
    const ticks = [];
    for (let t = start; t <= stop + step / 2; t += step) ticks.push(Number(t.toPrecision(12)));
    return { ticks, lo: start, hi: stop, step };
  }

  function fmt(x) {
    if (x === null || x === undefined || !Number.isFinite(x)) return "";
    const a = Math.abs(x);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return x.toExponential(2);
    return String(Number(x.toPrecision(5)));
  }

  function shortTime(t) {
    return String(t).slice(0, 10);
  }

  function drawPlot(svg, series) {
    const width = svg.clientWidth || 600;
    const height = svg.clientHeight || 190;
    const m = { left: 58, right: 14, top: 24, bottom: 30 };
    const w = width - m.left - m.right;
    const h = height - m.top - m.bottom;
    const { values, times } = series;
    const finite = values.filter((v) => v !== null && Number.isFinite(v));
    const title = `${state.variable}${state.units ? ` (${state.units})` : ""} at ` +
      `${lonLat(series.lon, series.lat)}` +
      (finite.length < values.length ? ` — ${values.length - finite.length} missing` : "");
    const children = [svgEl("title", { id: "plot-title" }, title),
                      svgEl("text", { x: m.left, y: 15, class: "title" }, title)];
    if (!finite.length) {
      children.push(svgEl("text", { x: "50%", y: "55%", "text-anchor": "middle", class: "hint" },
                          "no data at this point"));
      svg.replaceChildren(...children);
      return;
    }
    const y = niceTicks(Math.min(...finite), Math.max(...finite), 4);
    const n = values.length;
    const sx = (i) => m.left + (n > 1 ? (i / (n - 1)) * w : w / 2);
    const sy = (v) => m.top + h - ((v - y.lo) / (y.hi - y.lo)) * h;
    for (const t of y.ticks) {
      const py = sy(t).toFixed(1);
      children.push(svgEl("line", { x1: m.left, x2: m.left + w, y1: py, y2: py, class: "grid" }));
      children.push(svgEl("text", { x: m.left - 5, y: py, dy: "0.32em", "text-anchor": "end",
                                     class: "tick" }, fmt(t)));
    }
    const xt = Math.min(n, Math.max(2, Math.floor(w / 90)));
    for (let k = 0; k < xt; k++) {
      const i = n > 1 ? Math.round((k * (n - 1)) / (xt - 1 || 1)) : 0;
      const px = sx(i).toFixed(1);
      children.push(svgEl("line", { x1: px, x2: px, y1: m.top + h, y2: m.top + h + 4, class: "axis" }));
      children.push(svgEl("text", { x: px, y: m.top + h + 16, "text-anchor": k === 0 ? "start" :
                                     k === xt - 1 ? "end" : "middle", class: "tick" },
                          shortTime(times[i] ?? i)));
    }
    children.push(svgEl("path", { class: "axis",
                                  d: `M${m.left},${m.top}V${m.top + h}H${m.left + w}` }));
    let d = "";
    let points = 0;
    let pen = false;
    values.forEach((v, i) => {
      if (v === null || !Number.isFinite(v)) {
        pen = false;
        return;
      }
      d += `${pen ? "L" : "M"}${sx(i).toFixed(2)},${sy(v).toFixed(2)}`;
      pen = true;
      points += 1;
    });
    children.push(svgEl("path", { id: "series", class: "series", d, "data-points": points,
                                  "data-values": JSON.stringify(values),
                                  "data-y-domain": `${y.lo},${y.hi}` }));
    const now = svgEl("line", { id: "plot-now", class: "now", y1: m.top, y2: m.top + h });
    children.push(now);
    svg.replaceChildren(...children);
    svg.dataset.n = String(n);
    viewer.plotScale = { sx, n };
    markTime();
  }

  /* the slider's time as a dashed line on the plot */
  function markTime() {
    const now = $("plot-now");
    if (!now || !viewer.plotScale) return;
    const i = Number($("time").value);
    const visible = state.times.length > 0 && i < viewer.plotScale.n;
    now.style.display = visible ? "" : "none";
    if (visible) {
      const px = viewer.plotScale.sx(i).toFixed(1);
      now.setAttribute("x1", px);
      now.setAttribute("x2", px);
    }
  }

  // ------------------------------------------------------------------ start

  async function start() {
    if (pageParams.get("colormap")) {
      const c = pageParams.get("colormap");
      if ([...$("colormap").options].some((o) => o.value === c)) $("colormap").value = c;
      state.colormap = $("colormap").value;
    }
    await createMap();
    const wantedUrl = pageParams.get("url");
    collections = wantedUrl ? null : await loadCollections();
    if (collections === null || !collections.length) {
      $("url-field").hidden = false;
      const open = () => {
        const url = $("url").value.trim();
        if (!url) {
          setStatus("name a dataset: a path or URL under the server's --allow roots", true);
          return;
        }
        openUrl(url).catch(fail);
      };
      $("open-url").addEventListener("click", open);
      $("url").addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
      if (wantedUrl) {
        $("url").value = wantedUrl;
        await openUrl(wantedUrl);
      } else {
        setStatus(collections === null
          ? "this server has no STAC catalog: name a dataset URL or path"
          : "the catalog has no collections: name a dataset URL or path");
      }
      return;
    }
    $("collection-field").hidden = false;
    fillSelect($("collection"), collections.map((c) => [c.id, c.id]));
    $("collection").addEventListener("change",
                                      () => chooseCollection($("collection").value).catch(fail));
    const wanted = pageParams.get("collection");
    if (wanted) {
      if (!collections.some((c) => c.id === wanted)) {
        setStatus(`not_served: no collection '${wanted}' in the catalog`, true);
        return;
      }
      $("collection").value = wanted;
    }
    await chooseCollection($("collection").value);
  }

  $("variable").addEventListener("change", () => chooseVariable($("variable").value).catch(fail));
  start().catch(fail);
})();
