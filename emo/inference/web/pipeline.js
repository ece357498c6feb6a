// emo's pipeline in the browser: the same steps, in the same arithmetic, as the Python runtime
// (emo/inference/detect.py, preprocess.py, recognizer.py, video.py), so a face gets the same box
// and the same probabilities on the device as from `EmotionRecognizer.predict`
// (tests/test_web_browser.py holds the two together on photos, generated scenes and a clip;
// tests/test_web.py the pixel arithmetic against OpenCV's).
//
//   grey (cv2 BGR2GRAY) -> shrink (cv2 INTER_AREA) -> YuNet (onnxruntime-web) -> decode + NMS
//   (cv2.FaceDetectorYN) -> square crops framed from the landmarks -> 48x48 (INTER_AREA) ->
//   normalise (the model's metadata) -> emo model (+ flip TTA) -> probabilities
//
// Every setting (thresholds, framing, sizes, class names, normalisation) comes from config.json,
// which Python writes from the same constants and model metadata it uses itself.
// Nothing here touches the network or the page: functions of pixels, and two ONNX sessions.

// ------------------------------------------------------------------------------ numbers
const f32 = Math.fround;

/** Python's round(): halves to even (numpy's rint too). */
export function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** C's lrint for saturate_cast<uchar>(float): round half to even, then clamp to 0..255. */
function toU8(x) {
  const r = roundHalfEven(x);
  return r < 0 ? 0 : r > 255 ? 255 : r;
}

// ------------------------------------------------------------------------------- images
/**
 * A grey image {data: Uint8Array, width, height} from RGBA pixels (ImageData), as OpenCV's
 * cvtColor(BGR2GRAY) computes 8-bit images: fixed point, 15 bits.
 */
export function grey(rgba, width, height) {
  const n = width * height;
  const out = new Uint8Array(n);
  if (rgba.byteOffset % 4 === 0 && LITTLE_ENDIAN) {
    const px = new Uint32Array(rgba.buffer, rgba.byteOffset, n); // one read a pixel: R, G, B, A bytes
    for (let i = 0; i < n; i++) {
      const v = px[i];
      out[i] = ((v & 255) * 9798 + ((v >>> 8) & 255) * 19235 + ((v >>> 16) & 255) * 3735 + 16384) >> 15;
    }
  } else {
    for (let i = 0, j = 0; i < n; i++, j += 4) {
      out[i] = (rgba[j] * 9798 + rgba[j + 1] * 19235 + rgba[j + 2] * 3735 + 16384) >> 15;
    }
  }
  return { data: out, width, height };
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** The (width x height) part of a grey image at (x, y), copied; the caller keeps it inside. */
export function region(img, x, y, width, height) {
  const out = new Uint8Array(width * height);
  for (let r = 0; r < height; r++) {
    const start = (y + r) * img.width + x;
    out.set(img.data.subarray(start, start + width), r * width);
  }
  return { data: out, width, height };
}

// OpenCV's resize tables for INTER_AREA when shrinking (computeResizeAreaTab): per output pixel,
// the source pixels it covers and their weights (float32, as OpenCV stores them).
function areaTable(ssize, dsize, scale) {
  const di = [];
  const si = [];
  const alpha = [];
  const push = (d, src, a) => {
    di.push(d);
    si.push(src);
    alpha.push(a);
  };
  for (let dx = 0; dx < dsize; dx++) {
    const fsx1 = dx * scale;
    const fsx2 = fsx1 + scale;
    const cellWidth = Math.min(scale, ssize - fsx1);
    let sx1 = Math.ceil(fsx1);
    let sx2 = Math.floor(fsx2);
    sx2 = Math.min(sx2, ssize - 1);
    sx1 = Math.min(sx1, sx2);
    if (sx1 - fsx1 > 1e-3) push(dx, sx1 - 1, (sx1 - fsx1) / cellWidth);
    for (let sx = sx1; sx < sx2; sx++) push(dx, sx, 1.0 / cellWidth);
    if (fsx2 - sx2 > 1e-3) push(dx, sx2, Math.min(Math.min(fsx2 - sx2, 1), cellWidth) / cellWidth);
  }
  return { di: Int32Array.from(di), si: Int32Array.from(si), alpha: Float32Array.from(alpha), n: di.length };
}

function resizeAreaShrink(img, dw, dh, scaleX, scaleY) {
  // Sums in float32, as OpenCV's (a Float32Array store rounds each sum of two float32 values
  // exactly as a float32 add does; each product is rounded by fround).
  const { data, width: sw, height: sh } = img;
  const xt = areaTable(sw, dw, scaleX);
  const yt = areaTable(sh, dh, scaleY);
  const out = new Uint8Array(dw * dh);
  const buf = new Float32Array(dw);
  const sum = new Float32Array(dw);
  let prev = yt.n ? yt.di[0] : 0;
  for (let j = 0; j < yt.n; j++) {
    const dy = yt.di[j];
    if (dy !== prev) {
      for (let dx = 0; dx < dw; dx++) out[prev * dw + dx] = toU8(sum[dx]);
      sum.fill(0);
      prev = dy;
    }
    buf.fill(0);
    const row = yt.si[j] * sw;
    for (let k = 0; k < xt.n; k++) buf[xt.di[k]] += f32(xt.alpha[k] * data[row + xt.si[k]]);
    const beta = yt.alpha[j];
    for (let dx = 0; dx < dw; dx++) sum[dx] += f32(beta * buf[dx]);
  }
  if (yt.n) for (let dx = 0; dx < dw; dx++) out[prev * dw + dx] = toU8(sum[dx]);
  return { data: out, width: dw, height: dh };
}

function resizeAreaFast(img, dw, dh, k) {
  // An integer factor k in both directions: box averages (OpenCV's resizeAreaFast; its 2x2 kernel
  // rounds as (sum + 2) >> 2, the others as round-half-even of sum / k^2).
  const { data, width: sw } = img;
  const out = new Uint8Array(dw * dh);
  const area = k * k;
  const scale = f32(1 / area);
  for (let dy = 0; dy < dh; dy++) {
    for (let dx = 0; dx < dw; dx++) {
      let s = 0;
      for (let y = 0; y < k; y++) {
        const row = (dy * k + y) * sw + dx * k;
        for (let x = 0; x < k; x++) s += data[row + x];
      }
      out[dy * dw + dx] = k === 2 ? (s + 2) >> 2 : toU8(f32(s * scale));
    }
  }
  return { data: out, width: dw, height: dh };
}

function linearTable(ssize, dsize, scale, invScale) {
  // OpenCV's INTER_AREA when enlarging: linear weights of its "area mode", fixed point (2048).
  const ofs = new Int32Array(dsize);
  const alpha = new Int32Array(dsize * 2);
  for (let dx = 0; dx < dsize; dx++) {
    let sx = Math.floor(dx * scale);
    let fx = f32(dx + 1 - (sx + 1) * invScale);
    fx = fx <= 0 ? 0 : f32(fx - Math.floor(fx));
    if (sx < 0) {
      fx = 0;
      sx = 0;
    }
    if (sx >= ssize - 1) {
      fx = 0;
      sx = ssize - 1;
    }
    ofs[dx] = sx;
    alpha[2 * dx] = roundHalfEven(f32(1 - fx) * 2048);
    alpha[2 * dx + 1] = roundHalfEven(fx * 2048);
  }
  return { ofs, alpha };
}

function resizeAreaEnlarge(img, dw, dh, scaleX, scaleY, invX, invY) {
  const { data, width: sw, height: sh } = img;
  const xt = linearTable(sw, dw, scaleX, invX);
  const yt = linearTable(sh, dh, scaleY, invY);
  const rowOf = (sy) => {
    const r = new Int32Array(dw);
    const base = sy * sw;
    for (let dx = 0; dx < dw; dx++) {
      const sx = xt.ofs[dx];
      const nx = Math.min(sx + 1, sw - 1);
      r[dx] = data[base + sx] * xt.alpha[2 * dx] + data[base + nx] * xt.alpha[2 * dx + 1];
    }
    return r;
  };
  const out = new Uint8Array(dw * dh);
  for (let dy = 0; dy < dh; dy++) {
    const sy = yt.ofs[dy];
    const r0 = rowOf(sy);
    const r1 = rowOf(Math.min(sy + 1, sh - 1));
    const b0 = yt.alpha[2 * dy];
    const b1 = yt.alpha[2 * dy + 1];
    for (let dx = 0; dx < dw; dx++) {
      const v = (((b0 * (r0[dx] >> 4)) >> 16) + ((b1 * (r1[dx] >> 4)) >> 16) + 2) >> 2;
      out[dy * dw + dx] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
  }
  return { data: out, width: dw, height: dh };
}

/** cv2.resize(img, (dw, dh), interpolation=cv2.INTER_AREA) of a grey image. */
export function resizeArea(img, dw, dh) {
  const { width: sw, height: sh } = img;
  if (sw === dw && sh === dh) return img;
  const invX = dw / sw;
  const invY = dh / sh;
  const scaleX = 1 / invX;
  const scaleY = 1 / invY;
  if (scaleX >= 1 && scaleY >= 1) {
    const kx = Math.trunc(scaleX);
    const ky = Math.trunc(scaleY);
    if (Math.abs(scaleX - kx) < Number.EPSILON && Math.abs(scaleY - ky) < Number.EPSILON && kx === ky) {
      return resizeAreaFast(img, dw, dh, kx);
    }
    return resizeAreaShrink(img, dw, dh, scaleX, scaleY);
  }
  return resizeAreaEnlarge(img, dw, dh, scaleX, scaleY, invX, invY);
}

/** emo.inference.detect.shrink: resized by `scale` (<= 1), each side at least one pixel. */
export function shrink(img, scale) {
  if (scale >= 1) return img;
  return resizeArea(img, Math.max(1, roundHalfEven(img.width * scale)), Math.max(1, roundHalfEven(img.height * scale)));
}

// -------------------------------------------------------------------------------- boxes
/** Intersection over union of two (x, y, w, h) boxes (emo.inference.video.iou). */
export function iou(a, b) {
  const x0 = Math.max(a[0], b[0]);
  const y0 = Math.max(a[1], b[1]);
  const x1 = Math.min(a[0] + a[2], b[0] + b[2]);
  const y1 = Math.min(a[1] + a[3], b[1] + b[3]);
  const inter = Math.max(0, x1 - x0) * Math.max(0, y1 - y0);
  const union = a[2] * a[3] + b[2] * b[3] - inter;
  return union > 0 ? inter / union : 0;
}

/** A box cut to the image (clip_box): what the user is shown. */
export function clipBox([x, y, w, h], width, height) {
  const x0 = Math.max(x, 0);
  const y0 = Math.max(y, 0);
  const x1 = Math.min(x + w, width);
  const y1 = Math.min(y + h, height);
  return [x0, y0, Math.max(x1 - x0, 0), Math.max(y1 - y0, 0)];
}

/** Boxes with at least one pixel inside the image (usable_boxes). */
export function usableBoxes(boxes, width, height) {
  return boxes.filter(([x, y, w, h]) => w > 0 && h > 0 && x < width && y < height && x + w > 0 && y + h > 0);
}

/**
 * A square crop of a grey image at a box, as crop_faces does: the box first cut to the image
 * grown by half its size on each side (fit_boxes), the part outside filled with border pixels.
 */
export function cropFace(img, box) {
  const { data, width, height } = img;
  const mx = Math.floor(width / 2);
  const my = Math.floor(height / 2);
  const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);
  const x0 = clamp(box[0], -mx, width + mx);
  const y0 = clamp(box[1], -my, height + my);
  const x1 = clamp(box[0] + box[2], -mx, width + mx);
  const y1 = clamp(box[1] + box[3], -my, height + my);
  const w = Math.max(x1 - x0, 0);
  const h = Math.max(y1 - y0, 0);
  const out = new Uint8Array(w * h);
  for (let r = 0; r < h; r++) {
    const sy = clamp(y0 + r, 0, height - 1) * width;
    for (let c = 0; c < w; c++) out[r * w + c] = data[sy + clamp(x0 + c, 0, width - 1)];
  }
  return { data: out, width: w, height: h };
}

// ----------------------------------------------------------------------------- detector
/**
 * YuNet on onnxruntime-web with cv2.FaceDetectorYN's pre- and post-processing, and emo's framing
 * from its landmarks (emo.inference.detect.YuNetDetector).
 */
export class Detector {
  constructor(ort, session, cfg) {
    this.ort = ort;
    this.session = session;
    this.cfg = cfg; // config.json's "detector"
    this.maxSide = cfg.max_side;
    this.minFace = cfg.min_face;
    this.ms = 0; // the last network run's time
  }

  /** YuNet's rows [x, y, w, h, 5 landmarks as x, y, score] in `img`'s pixels plus `offset`. */
  async raw(img, { maxSide = this.maxSide, minFace = this.minFace, maxFace = 0, offset = [0, 0] } = {}) {
    const scale = maxSide ? Math.min(1, maxSide / Math.max(img.width, img.height)) : 1;
    const small = shrink(img, scale);
    const rows = await this.network(small);
    const kept = [];
    for (const row of rows) {
      for (let k = 0; k < 14; k++) row[k] /= scale;
      for (const k of [0, 4, 6, 8, 10, 12]) row[k] += offset[0];
      for (const k of [1, 5, 7, 9, 11, 13]) row[k] += offset[1];
      const side = Math.max(row[2], row[3]);
      if (side >= minFace && (!maxFace || side <= maxFace)) kept.push(row);
    }
    return kept;
  }

  /** cv2.FaceDetectorYN.detect on a grey image (made 3-channel, padded to a multiple of 32). */
  async network(img) {
    const { width, height, data } = img;
    const padW = Math.floor((width - 1) / 32 + 1) * 32;
    const padH = Math.floor((height - 1) / 32 + 1) * 32;
    const plane = padW * padH;
    const input = new Float32Array(3 * plane);
    for (let r = 0; r < height; r++) {
      for (let c = 0; c < width; c++) {
        const v = data[r * width + c];
        const i = r * padW + c;
        input[i] = v;
        input[plane + i] = v;
        input[2 * plane + i] = v;
      }
    }
    const t0 = performance.now();
    const out = await this.session.run({ input: new this.ort.Tensor("float32", input, [1, 3, padH, padW]) });
    this.ms = performance.now() - t0;
    const { score_threshold: threshold, nms_threshold: nms, top_k: topK } = this.cfg;
    const faces = [];
    for (const stride of [8, 16, 32]) {
      const cols = Math.floor(padW / stride);
      const rows = Math.floor(padH / stride);
      const cls = out[`cls_${stride}`].data;
      const obj = out[`obj_${stride}`].data;
      const bbox = out[`bbox_${stride}`].data;
      const kps = out[`kps_${stride}`].data;
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) {
          const idx = r * cols + c;
          const clsScore = Math.min(Math.max(cls[idx], 0), 1);
          const objScore = Math.min(Math.max(obj[idx], 0), 1);
          const score = f32(Math.sqrt(f32(clsScore * objScore)));
          if (score < threshold) continue;
          const cx = f32(f32(c + bbox[idx * 4]) * stride);
          const cy = f32(f32(r + bbox[idx * 4 + 1]) * stride);
          const w = f32(f32(Math.exp(bbox[idx * 4 + 2])) * stride);
          const h = f32(f32(Math.exp(bbox[idx * 4 + 3])) * stride);
          const face = [f32(cx - w / 2), f32(cy - h / 2), w, h];
          for (let n = 0; n < 5; n++) {
            face.push(f32(f32(kps[idx * 10 + 2 * n] + c) * stride));
            face.push(f32(f32(kps[idx * 10 + 2 * n + 1] + r) * stride));
          }
          face.push(score);
          faces.push(face);
        }
      }
    }
    return faces.length > 1 ? nmsBoxes(faces, threshold, nms, topK) : faces;
  }

  /** YuNet's rows -> square boxes [x, y, side, side] in FER-2013's framing (YuNetDetector.frame). */
  frame(row) {
    const [fx, fy] = this.cfg.centre;
    const ex = (row[4] + row[6]) / 2;
    const ey = (row[5] + row[7]) / 2;
    const mx = (row[10] + row[12]) / 2;
    const my = (row[11] + row[13]) / 2;
    const length = Math.hypot(row[4] - row[6], row[5] - row[7]) + Math.hypot(ex - mx, ey - my);
    const cx = (ex + mx) / 2 + fx * length;
    const cy = (ey + my) / 2 + fy * length;
    const side = this.cfg.framing * length;
    return [cx - side / 2, cy - side / 2, side, side].map(roundHalfEven);
  }

  /** Square face boxes, largest first, of a grey image. */
  async detect(img, options = {}) {
    const boxes = (await this.raw(img, options)).map((row) => this.frame(row));
    return boxes.map((b, i) => [b, i]).sort((a, b) => b[0][2] - a[0][2] || a[1] - b[1]).map((p) => p[0]);
  }
}

/** cv::dnn::NMSBoxes on Rect2i boxes (int-truncated), as cv2.FaceDetectorYN calls it. */
function nmsBoxes(faces, threshold, nms, topK) {
  const rects = faces.map((f) => [Math.trunc(f[0]), Math.trunc(f[1]), Math.trunc(f[2]), Math.trunc(f[3])]);
  let order = faces.map((f, i) => [f[14], i]).filter(([s]) => s > threshold);
  order = order.map((p, k) => [...p, k]).sort((a, b) => b[0] - a[0] || a[2] - b[2]);
  if (topK > 0 && order.length > topK) order = order.slice(0, topK);
  const kept = [];
  for (const [, i] of order) {
    let keep = true;
    for (const k of kept) {
      if (!keep) break;
      keep = f32(1 - f32(1 - rectOverlap(rects[i], rects[k]))) <= nms;
    }
    if (keep) kept.push(i);
  }
  return kept.map((i) => faces[i]);
}

function rectOverlap(a, b) {
  const areaA = a[2] * a[3];
  const areaB = b[2] * b[3];
  if (areaA + areaB <= 0) return 1;
  const x0 = Math.max(a[0], b[0]);
  const y0 = Math.max(a[1], b[1]);
  const x1 = Math.min(a[0] + a[2], b[0] + b[2]);
  const y1 = Math.min(a[1] + a[3], b[1] + b[3]);
  const inter = x1 > x0 && y1 > y0 ? (x1 - x0) * (y1 - y0) : 0;
  return inter / (areaA + areaB - inter);
}

// ---------------------------------------------------------------------------- classifier
/** An emo model on onnxruntime-web: grey crops -> probabilities, with its own preprocessing. */
export class Classifier {
  constructor(ort, session, meta) {
    this.ort = ort;
    this.session = session;
    this.meta = meta; // config.json's model entry: class_names, preprocess, tta, ...
    this.classNames = meta.class_names;
    this.ms = 0; // the last network run's time
    this.faces = 0; // ... and how many faces it classified
  }

  /** preprocess_faces of one crop: resized (INTER_AREA), scaled to 0..1, normalised (float32). */
  input(crop, out, offset) {
    const { image_size: size, mean, std } = this.meta.preprocess;
    const face = resizeArea(crop, size, size);
    const m = f32(mean);
    const s = f32(std);
    for (let i = 0; i < size * size; i++) out[offset + i] = f32(f32(f32(face.data[i] / 255) - m) / s);
  }

  /** Probabilities (one Float32Array per crop); tta "none" or "flip" (the mirrored face too). */
  async probs(crops, tta = "none") {
    if (tta !== "none" && tta !== "flip") throw new Error(`tta ${tta} is not supported here: use none or flip`);
    if (!crops.length) return [];
    const size = this.meta.preprocess.image_size;
    const n = crops.length;
    const views = tta === "flip" ? 2 : 1;
    const plane = size * size;
    const x = new Float32Array(views * n * plane);
    crops.forEach((crop, i) => this.input(crop, x, i * plane));
    if (views === 2) {
      for (let i = 0; i < n; i++) {
        for (let r = 0; r < size; r++) {
          for (let c = 0; c < size; c++) {
            x[(n + i) * plane + r * size + c] = x[i * plane + r * size + (size - 1 - c)];
          }
        }
      }
    }
    const t0 = performance.now();
    const input = new this.ort.Tensor("float32", x, [views * n, 1, size, size]);
    const out = await this.session.run({ [this.session.inputNames[0]]: input });
    this.ms = performance.now() - t0;
    this.faces = n;
    const p = out[this.session.outputNames[0]].data;
    const c = this.classNames.length;
    const result = [];
    for (let i = 0; i < n; i++) {
      const row = new Float32Array(c);
      for (let k = 0; k < c; k++) {
        let s = 0;
        for (let v = 0; v < views; v++) s += p[(v * n + i) * c + k];
        row[k] = f32(s / views);
      }
      result.push(row);
    }
    return result;
  }
}

function argmax(p) {
  let best = 0;
  for (let k = 1; k < p.length; k++) if (p[k] > p[best]) best = k;
  return best;
}

/** {box, label, scores} per box and probabilities (EmotionRecognizer.faces). */
export function facesOf(classNames, boxes, probs, width, height) {
  return boxes.map((box, i) => ({
    box: clipBox(box, width, height),
    label: classNames[argmax(probs[i])],
    scores: Object.fromEntries(classNames.map((c, k) => [c, probs[i][k]])),
  }));
}

// ------------------------------------------------------------------------------- video
/**
 * Face boxes for consecutive frames at a fraction of full detection's cost (FaceTracker): the whole
 * frame every `detectEvery` frames, in between a window around each face's last box.
 */
export class FaceTracker {
  constructor(detector, detectEvery = 5) {
    this.detector = detector;
    this.detectEvery = detectEvery;
    this.boxes = [];
    this.frame = 0;
    this.fullSearches = 0;
  }

  async track(img) {
    if (this.frame % this.detectEvery === 0 || !this.boxes.length) {
      this.boxes = await this.detector.detect(img);
      this.fullSearches += 1;
    } else {
      const boxes = [];
      for (const box of this.boxes) boxes.push(await this.follow(img, box));
      this.boxes = boxes;
    }
    this.boxes = usableBoxes(this.boxes, img.width, img.height);
    this.frame += 1;
    return this.boxes;
  }

  async follow(img, box) {
    const [x, y, side] = box.map(Math.trunc);
    const cx = x + side / 2;
    const cy = y + side / 2;
    const x0 = Math.max(0, Math.trunc(cx - side));
    const y0 = Math.max(0, Math.trunc(cy - side));
    const x1 = Math.min(img.width, Math.trunc(cx + side));
    const y1 = Math.min(img.height, Math.trunc(cy + side));
    if (x1 - x0 < 24 || y1 - y0 < 24) return box;
    const face = side * this.detector.cfg.raw_per_crop;
    const window = region(img, x0, y0, x1 - x0, y1 - y0);
    const found = await this.detector.raw(window, {
      maxSide: Math.trunc((this.detector.cfg.track_face * Math.max(window.width, window.height)) / face),
      minFace: Math.trunc(0.7 * face),
      maxFace: Math.trunc(1.4 * face),
      offset: [x0, y0],
    });
    if (!found.length) return box;
    let nearest = found[0];
    let best = Infinity;
    for (const row of found) {
      const d = (row[0] + row[2] / 2 - cx) ** 2 + (row[1] + row[3] / 2 - cy) ** 2;
      if (d < best) {
        best = d;
        nearest = row;
      }
    }
    return this.detector.frame(nearest);
  }
}

/** Face ids across frames and an exponential moving average of each face's probabilities (Smoother). */
export class Smoother {
  constructor(alpha = 0.8, minIou = 0.3) {
    this.alpha = alpha;
    this.minIou = minIou;
    this.tracks = [];
    this.nextId = 0;
  }

  smooth(faces, classNames) {
    const free = this.tracks.map((_, i) => i);
    const tracks = [];
    const out = faces.map((face) => {
      let probs = Float32Array.from(classNames, (c) => face.scores[c]);
      const overlaps = free.map((i) => iou(face.box, this.tracks[i].box));
      let id;
      const best = overlaps.length ? overlaps.indexOf(Math.max(...overlaps)) : -1;
      if (best >= 0 && overlaps[best] >= this.minIou) {
        const track = this.tracks[free.splice(best, 1)[0]];
        probs = probs.map((p, k) => this.alpha * track.probs[k] + (1 - this.alpha) * p);
        id = track.id;
      } else {
        id = this.nextId++;
      }
      tracks.push({ box: face.box, probs, id });
      return {
        ...face,
        faceId: id,
        label: classNames[argmax(probs)],
        scores: Object.fromEntries(classNames.map((c, k) => [c, probs[k]])),
      };
    });
    this.tracks = tracks;
    return out;
  }
}

// ----------------------------------------------------------------------------- pipeline
/** Detector + classifier: photos (`predict`) and live frames (`frame`, with tracking and smoothing). */
export class Pipeline {
  constructor(detector, classifier, live) {
    this.detector = detector;
    this.classifier = classifier;
    this.live = live; // config.json's "live": detection sizes, detect_every, smooth, min_iou
    this.reset();
  }

  /**
   * Load both networks. `ort` is onnxruntime-web's module; `config` is config.json; `model` a name
   * in config.models. Errors name the file that failed.
   */
  static async load(ort, config, model, base = "") {
    const entry = config.models.find((m) => m.name === model || m.purpose === model);
    if (!entry) throw new Error(`no model ${model} in config.json`);
    const options = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
    const open = async (file) => {
      let bytes;
      try {
        const response = await fetch(base + file);
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        bytes = new Uint8Array(await response.arrayBuffer());
      } catch (err) {
        throw new ModelLoadError(file, err.message);
      }
      try {
        return await ort.InferenceSession.create(bytes, options);
      } catch (err) {
        throw new ModelLoadError(file, String(err.message || err).split("\n")[0]);
      }
    };
    const [det, cls] = await Promise.all([open(config.detector.file), open(entry.file)]);
    return new Pipeline(new Detector(ort, det, config.detector), new Classifier(ort, cls, entry), config.live);
  }

  reset() {
    this.tracker = new FaceTracker(
      new Detector(this.detector.ort, this.detector.session, { ...this.detector.cfg, ...this.live.detector }),
      this.live.detect_every,
    );
    this.tracker.detector.maxSide = this.live.detector.max_side;
    this.tracker.detector.minFace = this.live.detector.min_face;
    this.smoother = new Smoother(this.live.smooth, this.live.min_iou);
  }

  get classNames() {
    return this.classifier.classNames;
  }

  /** EmotionRecognizer.predict on one grey image: faces found at the photo settings, largest first. */
  async predict(img, { tta = this.classifier.meta.tta, maxSide, minFace } = {}) {
    const boxes = usableBoxes(await this.detector.detect(img, { maxSide, minFace }), img.width, img.height);
    const probs = await this.classifier.probs(
      boxes.map((b) => cropFace(img, b)),
      tta,
    );
    return facesOf(this.classNames, boxes, probs, img.width, img.height);
  }

  /** One live frame (python -m emo.realtime): tracked boxes, no TTA, smoothed, with face ids. */
  async frame(img) {
    const boxes = await this.tracker.track(img);
    const probs = await this.classifier.probs(
      boxes.map((b) => cropFace(img, b)),
      "none",
    );
    return this.smoother.smooth(facesOf(this.classNames, boxes, probs, img.width, img.height), this.classNames);
  }
}

/** A model or runtime file that did not load: its name and why, for the page to say. */
export class ModelLoadError extends Error {
  constructor(file, why) {
    super(`could not load ${file} (${why})`);
    this.file = file;
    this.why = why;
  }
}

/** WebAssembly with SIMD, which onnxruntime-web's build needs (a 1-instruction SIMD module). */
export function wasmSimd() {
  try {
    return (
      typeof WebAssembly === "object" &&
      WebAssembly.validate(
        new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11]),
      )
    );
  } catch {
    return false;
  }
}
