// emo's on-device page: the camera, YuNet and an emo model, all in this browser (pipeline.js on
// onnxruntime-web). No frame, crop or result is sent anywhere: after the page, the runtime and
// the models have loaded (and, once cached by the service worker, not even those) the page makes
// no request at all.
import { grey, ModelLoadError, Pipeline, wasmSimd } from "./pipeline.js";

const $ = (id) => document.getElementById(id);
const view = $("view");
const ctx = view.getContext("2d");
const grab = document.createElement("canvas"); // each frame is read back from here
const gctx = grab.getContext("2d", { willReadFrequently: true });
const video = $("camera");
const COLOR_OF = {
  angry: "#e53935", disgust: "#8e24aa", fear: "#3949ab", happy: "#fdd835", sad: "#1e88e5",
  surprise: "#fb8c00", neutral: "#43a047", contempt: "#6d4c41",
};
const MAX_PIXELS = 50_000_000; // emo.inference.images.MAX_PIXELS: larger photos are refused

let ort = null;
let config = null;
let pipe = null; // the chosen model's Pipeline
const pipes = new Map(); // name -> Promise<Pipeline>
let stream = null;
let facing = "user";
let running = false;
let loopId = 0; // a new loop (restart, switch) ends the old one

// What the page measures; tests and benchmarks/web.py read it (window.emo.stats).
const stats = { frames: 0, since: 0, fps: 0, detectMs: 0, modelMs: 0, faceMs: 0, faces: 0, last: 0, sum: { frameMs: 0, faceMs: 0, faces: 0 } };

function status(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

function fail(text) {
  status(text, true);
  running = false;
}

const colorOf = (label) => COLOR_OF[label] || "#9e9e9e";

// ------------------------------------------------------------------------------ drawing
function draw(source, faces) {
  if (view.width !== source.width || view.height !== source.height) {
    view.width = source.width;
    view.height = source.height;
  }
  ctx.drawImage(source, 0, 0);
  const scale = Math.max(view.width, view.height) / 640;
  ctx.lineWidth = Math.max(2, Math.round(3 * scale));
  ctx.font = `600 ${Math.round(16 * scale)}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  for (const f of faces) {
    const [x, y, w, h] = f.box;
    const color = colorOf(f.label);
    ctx.strokeStyle = color;
    ctx.strokeRect(x, y, w, h);
    const text = `${f.faceId === undefined ? "" : `#${f.faceId} `}${f.label} ${Math.round(100 * f.scores[f.label])}%`;
    const tw = ctx.measureText(text).width + 8 * scale;
    const th = Math.round(22 * scale);
    const ty = y >= th ? y : y + h + th;
    ctx.fillStyle = color;
    ctx.fillRect(x - ctx.lineWidth / 2, ty - th, tw, th);
    ctx.fillStyle = f.label === "happy" ? "#111" : "#fff";
    ctx.fillText(text, x + 4 * scale, ty - 3 * scale);
  }
}

function listFaces(faces) {
  $("faces").replaceChildren(
    ...faces.map((f) => {
      const li = document.createElement("li");
      li.dataset.label = f.label;
      li.style.setProperty("--face-color", colorOf(f.label));
      const title = document.createElement("div");
      title.className = "title";
      title.textContent = `${f.faceId === undefined ? "" : `face #${f.faceId}: `}${f.label} ${Math.round(100 * f.scores[f.label])}%`;
      li.append(title);
      for (const [name, p] of Object.entries(f.scores).sort((a, b) => b[1] - a[1])) {
        const bar = document.createElement("div");
        bar.className = "bar";
        bar.innerHTML = `<span></span><span class="track"><span class="fill"></span></span><span class="pct"></span>`;
        bar.children[0].textContent = name;
        bar.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
        bar.querySelector(".fill").style.background = colorOf(name);
        bar.children[2].textContent = `${Math.round(100 * p)}%`;
        li.append(bar);
      }
      return li;
    }),
  );
}

function showStats() {
  const model = stats.faces ? ` · model ${stats.faceMs.toFixed(1)} ms/face` : "";
  $("stats").textContent = `${stats.fps.toFixed(1)} FPS · detect ${stats.detectMs.toFixed(1)} ms${model}`;
}

// -------------------------------------------------------------------------------- camera
function frameSource() {
  const w = video.videoWidth;
  const h = video.videoHeight;
  if (grab.width !== w || grab.height !== h) {
    grab.width = w;
    grab.height = h;
  }
  gctx.drawImage(video, 0, 0, w, h);
  return grey(gctx.getImageData(0, 0, w, h).data, w, h);
}

async function step(id) {
  if (!running || id !== loopId) return;
  if (video.readyState >= 2 && video.videoWidth) {
    const t0 = performance.now();
    let faces;
    try {
      faces = await pipe.frame(frameSource());
    } catch (err) {
      stopCamera();
      fail(`The models stopped on a frame (${err.message || err}). Reload the page to start again.`);
      return;
    }
    if (!running || id !== loopId) return;
    draw(grab, faces);
    listFaces(faces);
    const now = performance.now();
    const dt = Math.max(now - (stats.last || t0), 1e-3) / 1000;
    stats.fps = stats.frames === 0 ? 1 / dt : 0.9 * stats.fps + 0.1 / dt;
    stats.last = now;
    stats.frames += 1;
    stats.detectMs = pipe.tracker.detector.ms;
    stats.faces = faces.length;
    if (faces.length) stats.faceMs = pipe.classifier.ms / pipe.classifier.faces;
    stats.sum.frameMs += now - t0;
    if (faces.length) {
      stats.sum.faceMs += pipe.classifier.ms;
      stats.sum.faces += faces.length;
    }
    showStats();
  }
  schedule(id);
}

function schedule(id) {
  if (!running || id !== loopId) return;
  // One frame at a time, each a new camera frame where the browser says when one arrives.
  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) video.requestVideoFrameCallback(() => step(id));
  else requestAnimationFrame(() => step(id));
}

function cameraError(err) {
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError") {
    return "Camera permission was denied. Allow the camera for this site (the camera icon in the address bar, or the browser's site settings), then press Start camera.";
  }
  if (name === "NotFoundError" || name === "OverconstrainedError" || name === "DevicesNotFoundError") {
    return "No camera was found. Connect one (or close the app using it) and press Start camera; you can still classify a photo.";
  }
  if (name === "NotReadableError" || name === "AbortError") {
    return "The camera could not be started: another app may be using it. Close that app and press Start camera.";
  }
  return `The camera could not be started (${name || "error"}: ${(err && err.message) || err}).`;
}

async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    fail(
      "The camera needs a secure page: open this page at https://… or on http://localhost. On a phone, serve it with emo serve --https (see the Web app docs).",
    );
    return;
  }
  stopCamera();
  status("Starting the camera…");
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: false,
      video: { facingMode: facing, width: { ideal: 640 }, height: { ideal: 480 } },
    });
  } catch (err) {
    fail(cameraError(err));
    return;
  }
  video.srcObject = stream;
  try {
    await video.play();
  } catch (err) {
    fail(cameraError(err));
    return;
  }
  pipe.reset();
  Object.assign(stats, { frames: 0, fps: 0, last: 0, since: performance.now(), sum: { frameMs: 0, faceMs: 0, faces: 0 } });
  running = true;
  loopId += 1;
  $("start").textContent = "Stop camera";
  $("flip").disabled = false;
  status(`Camera on: ${video.videoWidth}×${video.videoHeight}, ${pipe.classifier.meta.name} (${pipe.classifier.meta.purpose}).`);
  schedule(loopId);
}

function stopCamera() {
  running = false;
  loopId += 1;
  if (stream) for (const track of stream.getTracks()) track.stop();
  stream = null;
  video.srcObject = null;
  $("start").textContent = "Start camera";
}

// --------------------------------------------------------------------------------- photo
function bitmapGrey(bitmap) {
  if (bitmap.width * bitmap.height > MAX_PIXELS) {
    throw new Error(`the photo is ${bitmap.width}×${bitmap.height}, over ${MAX_PIXELS / 1e6} M pixels: use a smaller one`);
  }
  grab.width = bitmap.width;
  grab.height = bitmap.height;
  gctx.drawImage(bitmap, 0, 0);
  return grey(gctx.getImageData(0, 0, bitmap.width, bitmap.height).data, bitmap.width, bitmap.height);
}

async function photoFaces(bitmap, options = {}) {
  return pipe.predict(bitmapGrey(bitmap), options);
}

async function onPhoto(file) {
  stopCamera();
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    fail(`${file.name} is not an image this browser can read: choose a JPEG, PNG or WebP photo.`);
    return;
  }
  try {
    const faces = await photoFaces(bitmap);
    draw(grab, faces);
    listFaces(faces);
    status(faces.length ? `${faces.length} face${faces.length > 1 ? "s" : ""} in ${file.name}.` : `No face found in ${file.name}.`);
  } catch (err) {
    fail(`${file.name}: ${err.message}`);
  }
}

// ------------------------------------------------------------------------------- models
function loadPipe(name) {
  if (!pipes.has(name)) {
    const p = Pipeline.load(ort, config, name);
    p.catch(() => pipes.delete(name)); // a failed load can be retried
    pipes.set(name, p);
  }
  return pipes.get(name);
}

async function chooseModel(name) {
  $("model").disabled = true;
  status(`Loading ${name}…`);
  try {
    pipe = await loadPipe(name);
  } catch (err) {
    // The model in use stays (and the camera with it); the list shows it again.
    status(err instanceof ModelLoadError ? loadMessage(err) : String(err), true);
    if (pipe) $("model").value = pipe.classifier.meta.name;
    return;
  } finally {
    $("model").disabled = false;
  }
  $("model").value = name;
  pipe.reset();
  status(running ? `Camera on, ${name}.` : `Ready: ${name}. Press Start camera, or choose a photo.`);
}

function loadMessage(err) {
  return `Could not load ${err.file} (${err.why}). Check the connection and reload the page; once it has loaded, the page also works offline.`;
}

async function init() {
  if (!wasmSimd()) {
    throw new Error(
      "This browser cannot run emo's models: it lacks WebAssembly SIMD. Update it (Chrome or Edge 91+, Firefox 89+, Safari 16.4+), or open this page in another browser.",
    );
  }
  try {
    const response = await fetch("config.json");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    config = await response.json();
  } catch (err) {
    throw new ModelLoadError("config.json", err.message);
  }
  $("server-mode").hidden = !config.server;
  try {
    ort = await import("./vendor/ort.wasm.min.mjs");
  } catch (err) {
    throw new ModelLoadError("vendor/ort.wasm.min.mjs (onnxruntime-web)", String(err.message || err).split("\n")[0]);
  }
  ort.env.wasm.numThreads = 1; // a face or two is too small a job to share; and no cross-origin isolation needed
  ort.env.wasm.wasmPaths = new URL("vendor/", location.href).href;
  ort.env.logLevel = "error";
  const select = $("model");
  select.replaceChildren(
    ...config.models.map((m) => {
      const o = document.createElement("option");
      o.value = m.name;
      const acc = m.accuracy ? `, ${(100 * m.accuracy).toFixed(1)}% FER-2013` : "";
      o.textContent = `${m.purpose === m.name ? m.name : `${m.purpose}: ${m.name}`} (${(m.bytes / 1e6).toFixed(1)} MB${acc})`;
      o.title = m.summary || "";
      return o;
    }),
  );
  pipe = await loadPipe(config.models[0].name);
  select.disabled = false;
  $("start").disabled = false;
  $("photo").disabled = false;
  status(`Ready: ${pipe.classifier.meta.name}. Press Start camera, or choose a photo.`);
  return pipe;
}

function registerWorker() {
  if (!("serviceWorker" in navigator) || !window.isSecureContext) return;
  navigator.serviceWorker
    .register("sw.js")
    .then(() => navigator.serviceWorker.ready)
    .then(() => {
      $("offline-note").textContent = "It is saved for offline use.";
    })
    .catch(() => {}); // the page works without it; only offline use is lost
}

$("start").addEventListener("click", () => (running ? stopCamera() : startCamera()));
$("flip").addEventListener("click", () => {
  facing = facing === "user" ? "environment" : "user";
  if (running) startCamera();
});
$("model").addEventListener("change", (e) => chooseModel(e.target.value));
$("photo").addEventListener("change", (e) => e.target.files[0] && onPhoto(e.target.files[0]));

const ready = init();
ready.catch((err) => fail(err instanceof ModelLoadError ? loadMessage(err) : err.message));
registerWorker();

// For tests and benchmarks: the page's own pipeline on any image, and its live counters.
window.emo = {
  ready,
  stats,
  get config() {
    return config;
  },
  get pipeline() {
    return pipe;
  },
  /** Faces of an image given by URL (a data: URL in the tests) at the photo settings. */
  async predictUrl(url, options = {}) {
    const blob = await (await fetch(url)).blob();
    return photoFaces(await createImageBitmap(blob), options);
  },
  /** One live frame given by URL, as the camera loop runs it (tracking, no TTA, smoothing, ids). */
  async liveUrl(url) {
    const blob = await (await fetch(url)).blob();
    return pipe.frame(bitmapGrey(await createImageBitmap(blob)));
  },
  chooseModel,
  startCamera,
  stopCamera,
};
