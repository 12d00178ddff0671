// The page: loads the libraries and models, runs photos and webcam frames, draws results.
// Automation (tests, benchmarks) uses window.ferDemo; data-state on <body> says where it is:
// loading -> ready -> busy -> done (or error).

import * as ort from '../node_modules/onnxruntime-web/dist/ort.wasm.min.mjs';
import { Recognizer } from './recognizer.js';

// Box colours, as fer_onnx.draw's palette (RGB here, BGR there).
const PALETTE = [
  [255, 200, 0], [0, 160, 255], [80, 220, 80], [230, 80, 230], [255, 60, 60], [80, 255, 255],
  [255, 120, 160],
];

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(window.location.search);
const state = {
  recognizer: null, config: null, imageData: null, source: null, webcam: null, last: null,
};

function setState(name, message) {
  document.body.dataset.state = name;
  if (message !== undefined) $('status').textContent = message;
}

function fail(error) {
  console.error(error);
  setState('error', `Error: ${error.message ?? error}`);
}

// Resolves to {cv}, not cv: OpenCV.js's module object is a thenable whose then() hands back the
// module itself, so resolving a promise with it directly would never settle.
async function loadOpenCv() {
  let cv = globalThis.cv;
  if (cv === undefined) throw new Error('OpenCV.js did not load: run `npm ci` in examples/web');
  if (cv instanceof Promise) cv = await cv;
  if (typeof cv.Mat !== 'function') {
    await new Promise((resolve) => { cv.onRuntimeInitialized = resolve; });
  }
  return { cv };
}

async function loadConfig() {
  const response = await fetch('fer-onnx.json');
  if (!response.ok) {
    throw new Error('fer-onnx.json not found: serve this page with `fer-onnx web`');
  }
  return response.json();
}

function classifierUrl(name) {
  const entry = state.config.classifiers.find((c) => c.name === name);
  if (!entry) throw new Error(`no classifier named ${name}; choose one of the list`);
  return entry.url;
}

async function loadRecognizer(cv, name) {
  setState('loading', `Loading ${name}…`);
  state.recognizer = await Recognizer.create(ort, cv, {
    detectorUrl: state.config.detector.url,
    classifierUrl: classifierUrl(name),
    detector: state.config.detector.options,
  });
  state.model = name;
}

function statusLine() {
  const threads = ort.env.wasm.numThreads;
  const isolated = globalThis.crossOriginIsolated ? '' : ' (not cross-origin isolated: 1 thread)';
  return `Ready: ${state.model}, ${state.recognizer.labels.length} labels from the model's `
    + `metadata; onnxruntime-web ${ort.env.versions.web}, wasm, ${threads} thread(s)${isolated}.`;
}

// -- drawing ----------------------------------------------------------------------------------

function drawFaces(ctx, faces, width, height) {
  const thickness = Math.max(2, Math.round(Math.min(width, height) / 300));
  const fontSize = Math.max(12, Math.round(Math.min(width, height) / 28));
  ctx.font = `600 ${fontSize}px system-ui, sans-serif`;
  ctx.textBaseline = 'bottom';
  faces.forEach((face, i) => {
    const [r, g, b] = PALETTE[i % PALETTE.length];
    const color = `rgb(${r}, ${g}, ${b})`;
    const [x, y, w, h] = face.box;
    ctx.lineWidth = thickness;
    ctx.strokeStyle = color;
    ctx.strokeRect(x + thickness / 2, y + thickness / 2, w - thickness, h - thickness);
    const text = `${face.label} ${Math.round(face.score * 100)}%`;
    const tw = ctx.measureText(text).width;
    const ty = Math.max(y - 4, fontSize + 4);
    ctx.fillStyle = 'rgba(0, 0, 0, 0.8)';
    ctx.fillRect(x, ty - fontSize - 4, tw + 8, fontSize + 6);
    ctx.fillStyle = color;
    ctx.fillText(text, x + 4, ty);
  });
}

function showTable(faces, labels) {
  const table = $('faces');
  table.hidden = faces.length === 0;
  table.tHead.innerHTML = `<tr><th>face</th><th>box x,y,w,h</th>${
    labels.map((l) => `<th>${l}</th>`).join('')}</tr>`;
  table.tBodies[0].innerHTML = faces.map((face, i) => {
    const [r, g, b] = PALETTE[i % PALETTE.length];
    const cells = labels.map((l) => `<td${l === face.label ? ' class="best"' : ''}>${
      face.probabilities[l].toFixed(3)}</td>`).join('');
    return `<tr><td><span class="swatch" style="background: rgb(${r},${g},${b})"></span>${
      i + 1}</td><td>${face.box.join(',')}</td>${cells}</tr>`;
  }).join('');
}

function timingText(timings, note = '') {
  return `${timings.totalMs.toFixed(1)} ms per frame (detect ${timings.detectMs.toFixed(1)} ms, `
    + `classify ${timings.classifyMs.toFixed(1)} ms)${note}`;
}

// -- photos -----------------------------------------------------------------------------------

async function decode(file) {
  // No colour management and no premultiplied alpha: the pixels as the file stores them, as
  // OpenCV's imdecode returns them (EXIF orientation applied by both).
  const bitmap = await createImageBitmap(file, {
    colorSpaceConversion: 'none', premultiplyAlpha: 'none', imageOrientation: 'from-image',
  });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  return ctx.getImageData(0, 0, canvas.width, canvas.height);
}

function render(imageData, result) {
  const canvas = $('canvas');
  canvas.width = imageData.width;
  canvas.height = imageData.height;
  const ctx = canvas.getContext('2d');
  ctx.putImageData(imageData, 0, 0);
  drawFaces(ctx, result.faces, imageData.width, imageData.height);
  showTable(result.faces, state.recognizer.labels);
}

async function runPhoto(file) {
  stopWebcam();
  setState('busy', `Processing ${file.name}…`);
  const imageData = await decode(file);
  state.imageData = imageData;
  state.source = file.name;
  await recognizeCurrent();
}

async function recognizeCurrent() {
  const result = await state.recognizer.recognize(state.imageData);
  render(state.imageData, result);
  $('timing').textContent = timingText(result.timings);
  state.last = {
    source: state.source,
    width: state.imageData.width,
    height: state.imageData.height,
    model: state.model,
    threads: ort.env.wasm.numThreads,
    isolated: globalThis.crossOriginIsolated,
    ...result,
  };
  setState('done', `${state.source}: ${result.faces.length} face(s). ${statusLine()}`);
  return state.last;
}

// -- webcam -----------------------------------------------------------------------------------

async function startWebcam() {
  const video = $('video');
  const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  video.srcObject = stream;
  await video.play();
  const work = new OffscreenCanvas(video.videoWidth, video.videoHeight);
  const ctx = work.getContext('2d', { willReadFrequently: true });
  const webcam = { stream, frames: 0, emaMs: 0, running: true };
  state.webcam = webcam;
  state.source = 'webcam';
  $('webcam').textContent = 'Stop webcam';
  setState('busy', `Webcam ${video.videoWidth}x${video.videoHeight}. ${statusLine()}`);
  const loop = async () => {
    if (!webcam.running) return;
    try {
      ctx.drawImage(video, 0, 0);
      const imageData = ctx.getImageData(0, 0, work.width, work.height);
      const result = await state.recognizer.recognize(imageData);
      if (!webcam.running) return;
      render(imageData, result);
      webcam.frames += 1;
      const ms = result.timings.totalMs;
      webcam.emaMs = webcam.frames === 1 ? ms : 0.9 * webcam.emaMs + 0.1 * ms;
      $('timing').textContent = timingText(result.timings, `; average ${webcam.emaMs.toFixed(1)} ms, `
        + `${webcam.frames} frames`);
      state.imageData = imageData;
      state.last = { source: 'webcam', frames: webcam.frames, ...result };
      requestAnimationFrame(loop);
    } catch (error) {
      stopWebcam();
      fail(error);
    }
  };
  requestAnimationFrame(loop);
}

function stopWebcam() {
  if (!state.webcam) return;
  state.webcam.running = false;
  for (const track of state.webcam.stream.getTracks()) track.stop();
  state.webcam = null;
  $('webcam').textContent = 'Start webcam';
}

// -- automation -------------------------------------------------------------------------------

window.ferDemo = {
  /** The last result: source, size, model, threads, faces and timings. */
  get last() { return state.last; },
  /** Crop/align and classify the current photo's faces at the given detections
   * ({box: [x, y, w, h], landmarks: [[x, y] x 5], score}), without the detector. */
  async classifyDetections(detections) {
    if (!state.imageData) throw new Error('load a photo first');
    return state.recognizer.recognizeDetections(state.imageData, detections);
  },
  /** Recognise (and draw) the current photo `n` more times; per-run total milliseconds. */
  async benchmark(n) {
    if (!state.imageData || state.webcam) throw new Error('load a photo first');
    const times = [];
    for (let i = 0; i < n; i += 1) times.push((await recognizeCurrent()).timings.totalMs);
    return times;
  },
};

// -- start ------------------------------------------------------------------------------------

async function main() {
  const threads = params.get('threads');
  if (threads) ort.env.wasm.numThreads = Number(threads);
  $('threads').value = threads ?? '';
  ort.env.wasm.wasmPaths = new URL('../node_modules/onnxruntime-web/dist/', import.meta.url).href;
  const [{ cv }, config] = await Promise.all([loadOpenCv(), loadConfig()]);
  state.config = config;
  const select = $('model');
  for (const c of config.classifiers) select.add(new Option(c.name, c.name));
  select.value = params.get('model') ?? config.default;
  await loadRecognizer(cv, select.value);
  for (const id of ['file', 'webcam', 'model']) $(id).disabled = false;
  $('file').addEventListener('change', (event) => {
    const [file] = event.target.files;
    if (file) runPhoto(file).catch(fail);
  });
  $('webcam').addEventListener('click', () => {
    if (state.webcam) stopWebcam();
    else startWebcam().catch(fail);
  });
  select.addEventListener('change', () => {
    loadRecognizer(cv, select.value)
      .then(() => (state.imageData && !state.webcam ? recognizeCurrent() : setState('ready', statusLine())))
      .catch(fail);
  });
  $('threads').addEventListener('change', (event) => {
    // onnxruntime-web fixes its thread count when the first session is created: reload.
    if (event.target.value) params.set('threads', event.target.value);
    else params.delete('threads');
    params.set('model', select.value);
    window.location.search = params.toString();
  });
  setState('ready', statusLine());
}

main().catch(fail);
