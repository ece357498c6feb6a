// emo's page: camera frames go to /live over a WebSocket, one frame in flight at a time (the
// server answers the newest one); each answer is drawn over the very frame it belongs to, so a
// box never trails a moving face. A photo goes to /predict. Everything here is served by emo
// itself: no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("view");
const ctx = canvas.getContext("2d");
const grab = document.createElement("canvas"); // frames are encoded to JPEG from here
const PALETTE = ["#e53935", "#8e24aa", "#3949ab", "#fdd835", "#1e88e5", "#fb8c00", "#43a047"];
const COLOR_OF = { angry: "#e53935", disgust: "#8e24aa", fear: "#3949ab", happy: "#fdd835",
  sad: "#1e88e5", surprise: "#fb8c00", neutral: "#43a047" };

let classes = [];
let video = null;   // the camera, once started
let photo = null;   // an uploaded photo (ImageBitmap) while it is shown
let socket = null;
let sent = null;    // the frame in flight (ImageBitmap)
let shown = null;   // the frame whose faces are drawn
let faces = [];     // the latest answer's faces
let inFlight = false;
let answered = [];  // times of the last second's answers, for FPS

function colorOf(label) {
  return COLOR_OF[label] || PALETTE[Math.max(classes.indexOf(label), 0) % PALETTE.length];
}

function status(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

function listFaces(list) {
  $("faces").replaceChildren(...list.map((f) => {
    const li = document.createElement("li");
    const [x, y, w, h] = f.box;
    li.dataset.label = f.label;
    li.dataset.color = colorOf(f.label);
    li.style.setProperty("--face-color", colorOf(f.label));
    li.textContent = `${f.label} ${(100 * f.scores[f.label]).toFixed(0)}% at (${x}, ${y}), ${w}×${h} px`;
    return li;
  }));
}

// k: canvas pixels per image pixel; scale: how much larger than at 640 px to draw lines and text
function drawFaces(list, k, scale) {
  const line = Math.max(3, Math.round(3 * scale));
  ctx.font = `${Math.round(16 * scale)}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  for (const f of list) {
    const [x, y, w, h] = f.box.map((v) => v * k);
    const color = colorOf(f.label);
    ctx.lineWidth = line;
    ctx.strokeStyle = color;
    ctx.strokeRect(x + line / 2, y + line / 2, w - line, h - line);
    // the label on a filled tab above the box (inside it when the box touches the top)
    const text = `${f.label} ${(100 * f.scores[f.label]).toFixed(0)}%`;
    const pad = 4 * scale, th = 20 * scale, tw = ctx.measureText(text).width + 2 * pad;
    const ty = y >= th ? y - th : y + line;
    ctx.fillStyle = color;
    ctx.fillRect(x, ty, tw, th);
    ctx.fillStyle = "#000";
    ctx.fillText(text, x + pad, ty + 2 * scale);
    // a probability bar per class, beside the box (right if there is room, else left)
    const bw = 90 * scale, bh = 14 * scale, gap = 6 * scale;
    const bx = x + w + gap + bw + 60 * scale <= canvas.width ? x + w + gap : Math.max(0, x - gap - bw - 60 * scale);
    ctx.font = `${Math.round(12 * scale)}px system-ui, sans-serif`;
    Object.entries(f.scores).forEach(([name, p], i) => {
      const by = y + i * (bh + 2 * scale);
      ctx.fillStyle = "rgba(0, 0, 0, 0.55)";
      ctx.fillRect(bx, by, bw + 60 * scale, bh);
      ctx.fillStyle = colorOf(name);
      ctx.fillRect(bx + 60 * scale, by, bw * p, bh);
      ctx.fillStyle = "#fff";
      ctx.fillText(name, bx + 3 * scale, by + scale);
    });
    ctx.font = `${Math.round(16 * scale)}px system-ui, sans-serif`;
  }
}

function drawFps(scale) {
  const now = performance.now();
  answered = answered.filter((t) => now - t < 1000);
  const text = `${answered.length} FPS`;
  ctx.font = `${Math.round(16 * scale)}px system-ui, sans-serif`;
  ctx.fillStyle = "rgba(0, 0, 0, 0.6)";
  ctx.fillRect(0, 0, ctx.measureText(text).width + 12 * scale, 24 * scale);
  ctx.fillStyle = "#fff";
  ctx.fillText(text, 6 * scale, 4 * scale);
}

function draw() {
  const source = photo || shown || video;
  if (source) {
    const w = source.videoWidth || source.width, h = source.videoHeight || source.height;
    if (w && h) {
      const k = Math.max(1, 640 / w); // a small photo is shown 640 px wide, so its bars fit beside the face
      const cw = Math.round(w * k), ch = Math.round(h * k);
      if (canvas.width !== cw || canvas.height !== ch) { canvas.width = cw; canvas.height = ch; }
      const scale = Math.max(1, cw / 640);
      ctx.drawImage(source, 0, 0, cw, ch);
      drawFaces(faces, k, scale);
      if (!photo) drawFps(scale);
    }
  }
  if (video && !photo) requestAnimationFrame(draw);
}

function sendFrame() {
  if (!video || photo || inFlight || !socket || socket.readyState !== WebSocket.OPEN) return;
  if (!video.videoWidth) { setTimeout(sendFrame, 50); return; }
  inFlight = true;
  createImageBitmap(video).then((frame) => {
    grab.width = frame.width;
    grab.height = frame.height;
    grab.getContext("2d").drawImage(frame, 0, 0);
    sent = frame;
    grab.toBlob((blob) => socket.send(blob), "image/jpeg", 0.85);
  }).catch(() => { inFlight = false; setTimeout(sendFrame, 100); }); // camera not ready yet
}

// "auto" (empty) leaves TTA to the server: none on /live, the model's recorded one on /predict.
const ttaQuery = () => ($("tta").value ? `?tta=${$("tta").value}` : "");

function openSocket() {
  if (socket) socket.close();
  const url = new URL(`live${ttaQuery()}`, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(url);
  inFlight = false;
  socket.onopen = () => { status("Live: streaming camera frames."); sendFrame(); };
  socket.onmessage = (event) => {
    const answer = JSON.parse(event.data);
    inFlight = false;
    if (answer.error) {
      status(answer.error, true);
    } else if (!photo) {
      if (shown && shown !== sent) shown.close();
      shown = sent;
      faces = answer.faces;
      answered.push(performance.now());
      listFaces(faces);
      status(faces.length ? `Live: ${faces.length} face(s), ${answer.ms} ms on the server.` : "Live: no face found.");
    }
    sendFrame();
  };
  socket.onclose = (event) => { if (event.target === socket) status(`Live connection closed ${event.reason || ""}`, true); };
}

async function startCamera() {
  if (video) video.srcObject.getTracks().forEach((track) => track.stop());
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    video = document.createElement("video");
    video.muted = true;
    video.playsInline = true;
    video.srcObject = stream;
    await video.play();
  } catch (err) {
    status(`No camera: ${err.message}. You can still classify a photo.`, true);
    return;
  }
  photo = null;
  shown = null;
  faces = [];
  $("camera").textContent = "Restart camera";
  openSocket();
  requestAnimationFrame(draw);
}

async function classifyPhoto(event) {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) return;
  status("Classifying…");
  const body = new FormData();
  body.append("file", file);
  const response = await fetch(`predict${ttaQuery()}`, { method: "POST", body });
  const answer = await response.json();
  if (!response.ok) { status(`${response.status}: ${answer.detail}`, true); return; }
  photo = await createImageBitmap(file);
  faces = answer.faces;
  listFaces(faces);
  status(`${file.name}: ${faces.length} face(s) in ${answer.width}×${answer.height} px.`);
  draw();
}

$("camera").addEventListener("click", startCamera);
$("upload").addEventListener("submit", classifyPhoto);
$("tta").addEventListener("change", () => { if (video && !photo) openSocket(); });
fetch("health").then((r) => r.json()).then((h) => {
  classes = h.classes;
  $("model").textContent = `model ${h.model} (${h.backend}), ${h.classes.length} classes`;
}).catch(() => status("The server does not answer /health.", true));
// The on-device page is at / where this install has it (its config.json answers); otherwise / is
// this page, and the link would lead back here.
fetch("config.json", { method: "HEAD" }).then((r) => { $("device-mode").hidden = !r.ok; }).catch(() => {});
