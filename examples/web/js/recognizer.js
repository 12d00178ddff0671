// The browser twin of fer_onnx.EmotionRecognizer: detect (YuNet) -> frame each face as the
// model's metadata says -> one batched classifier run -> probabilities per face.

import { alignFace, cropBox, prepareFaces } from './align.js';
import { modelInfo } from './model-info.js';
import { readMetadataProps } from './onnx-metadata.js';
import { YuNet } from './yunet.js';

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) {
    throw new Error(`cannot load ${url}: HTTP ${response.status}; serve this page with \`fer-onnx web\``);
  }
  return new Uint8Array(await response.arrayBuffer());
}

// NHWC or NCHW, decided from the input shape as EmotionRecognizer._check_io does.
function channelsFirst(session, info, source) {
  const input = session.inputMetadata?.[0];
  const shape = input?.shape;
  if (!shape || shape.length !== 4) {
    throw new Error(`${source}: expected a 4-D image input, got ${JSON.stringify(shape)}`);
  }
  if (input.type !== 'float32') {
    throw new Error(`${source}: its input is ${input.type}; fer-onnx feeds float32 faces`);
  }
  if (Number.isInteger(shape[0])) {
    throw new Error(`${source}: its batch dimension is fixed at ${shape[0]}; re-export it with a dynamic one`);
  }
  const dims = shape.slice(1).map((d) => (Number.isInteger(d) ? d : null));
  const fits = (expected) => dims.every((d, i) => d === null || d === expected[i]);
  if (fits([info.height, info.width, info.channels])) return false;
  if (fits([info.channels, info.height, info.width])) return true;
  throw new Error(
    `${source}: input shape ${JSON.stringify(shape)} does not match its metadata `
    + `(${info.height}x${info.width}, ${info.color})`,
  );
}

const f32 = Math.fround;

// The runtime's softmax for models whose metadata says fer_onnx.output = logits, in float32 as
// numpy computes it (subtract the row maximum, exp, divide by the row sum).
function softmaxRows(values, rows, cols) {
  const out = new Float32Array(values.length);
  for (let r = 0; r < rows; r += 1) {
    const row = values.subarray(r * cols, (r + 1) * cols);
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    let sum = 0;
    for (let c = 0; c < cols; c += 1) {
      out[r * cols + c] = f32(Math.exp(f32(row[c] - max)));
      sum = f32(sum + out[r * cols + c]);
    }
    for (let c = 0; c < cols; c += 1) out[r * cols + c] = f32(out[r * cols + c] / sum);
  }
  return out;
}

// EmotionRecognizer's checks of what a model returned.
function checkOutputs(values, rows, cols, info, source) {
  if (!values.every(Number.isFinite)) {
    throw new Error(`${source} returned non-finite values (NaN or inf)`);
  }
  if (info.output === 'logits') return softmaxRows(values, rows, cols);
  for (let r = 0; r < rows; r += 1) {
    const row = values.subarray(r * cols, (r + 1) * cols);
    let sum = 0;
    for (const v of row) sum = f32(sum + v);
    if (row.some((v) => v < -1e-4) || Math.abs(sum - 1) > 0.05) {
      throw new Error(
        `${source} returned values that are not probabilities (rows must be >= 0 and sum to 1). `
        + 'If it outputs logits, say so in its metadata: fer-onnx model stamp ... --softmax.',
      );
    }
  }
  return values;
}

export class Recognizer {
  /**
   * Load the detector and the classifier. Everything about the classifier comes from its file.
   * @param {object} ort - onnxruntime-web.
   * @param {object} cv - OpenCV.js.
   * @param {{detectorUrl: string, classifierUrl: string, detector: object,
   *   align?: boolean}} options - Model URLs and YuNet settings (see fer-onnx web's config).
   */
  static async create(ort, cv, options) {
    const sessionOptions = { executionProviders: ['wasm'], graphOptimizationLevel: 'all' };
    const [detectorBytes, classifierBytes] = await Promise.all([
      fetchBytes(options.detectorUrl), fetchBytes(options.classifierUrl),
    ]);
    const info = modelInfo(readMetadataProps(classifierBytes), options.classifierUrl);
    const detectorSession = await ort.InferenceSession.create(detectorBytes, sessionOptions);
    const classifierSession = await ort.InferenceSession.create(classifierBytes, sessionOptions);
    return new Recognizer(ort, cv, detectorSession, classifierSession, info, options);
  }

  constructor(ort, cv, detectorSession, classifierSession, info, options) {
    this.ort = ort;
    this.cv = cv;
    this.detector = new YuNet(ort, cv, detectorSession, options.detector);
    this.session = classifierSession;
    this.info = info;
    this.align = options.align ?? true;
    if (classifierSession.inputNames.length !== 1 || classifierSession.outputNames.length < 1) {
      throw new Error(`${options.classifierUrl}: expected one input and one output`);
    }
    this.source = options.classifierUrl;
    this.inputName = classifierSession.inputNames[0];
    this.outputName = classifierSession.outputNames[0];
    this.channelsFirst = channelsFirst(classifierSession, info, options.classifierUrl);
  }

  get labels() {
    return this.info.labels;
  }

  /**
   * Faces and expressions in an RGBA ImageData (as EmotionRecognizer.recognize).
   * @param {ImageData} imageData - Decoded pixels.
   * @returns {Promise<{faces: object[], timings: object}>} faces left to right, each with box
   *   [x, y, w, h], detectionScore, landmarks, label, score and probabilities {label: p}.
   */
  async recognize(imageData) {
    const { cv } = this;
    const t0 = performance.now();
    const rgba = cv.matFromImageData(imageData);
    const bgr = new cv.Mat();
    cv.cvtColor(rgba, bgr, cv.COLOR_RGBA2BGR);
    rgba.delete();
    try {
      const found = (await this.detector.detect(bgr))
        .sort((p, q) => p.box[0] - q.box[0] || p.box[1] - q.box[1]); // reading order, stable
      const t1 = performance.now();
      if (!found.length) {
        return { faces: [], timings: { detectMs: t1 - t0, classifyMs: 0, totalMs: t1 - t0 } };
      }
      const probs = await this.classify(bgr, found);
      const t2 = performance.now();
      const faces = found.map((d, i) => this.result(d, probs, i));
      return { faces, timings: { detectMs: t1 - t0, classifyMs: t2 - t1, totalMs: t2 - t0 } };
    } finally {
      bgr.delete();
    }
  }

  /**
   * Classify given detections (box, landmarks, score) of an image, skipping the detector: the
   * crop/align and classifier stages alone, for comparing them with another runtime's.
   * @returns {Promise<object[]>} One face result per detection, in order.
   */
  async recognizeDetections(imageData, detections) {
    const { cv } = this;
    const rgba = cv.matFromImageData(imageData);
    const bgr = new cv.Mat();
    cv.cvtColor(rgba, bgr, cv.COLOR_RGBA2BGR);
    rgba.delete();
    try {
      if (!detections.length) return [];
      const probs = await this.classify(bgr, detections);
      return detections.map((d, i) => this.result(d, probs, i));
    } finally {
      bgr.delete();
    }
  }

  /** The crop/align stage, the batch and one session run; (N, K) raw outputs as probabilities. */
  async classify(bgr, detections) {
    const { cv, info } = this;
    const template = this.align ? info.template : null;
    const faces = detections.map((d) => (template !== null
      ? alignFace(cv, bgr, d.landmarks, template, info.height, info.width)
      : cropBox(cv, bgr, d.box)));
    let batch;
    try {
      batch = prepareFaces(cv, faces, info, this.channelsFirst);
    } finally {
      for (const face of faces) face.delete();
    }
    const shape = this.channelsFirst
      ? [faces.length, info.channels, info.height, info.width]
      : [faces.length, info.height, info.width, info.channels];
    const [low, high] = info.valueRange;
    if (low !== 0 || high !== 255) {
      // Faces are prepared as 0..255; a model that wants another range gets a linear map.
      const scale = f32((high - low) / 255);
      const offset = f32(low);
      for (let i = 0; i < batch.length; i += 1) batch[i] = f32(f32(batch[i] * scale) + offset);
    }
    const input = new this.ort.Tensor('float32', batch, shape);
    const outputs = await this.session.run({ [this.inputName]: input }, [this.outputName]);
    const output = outputs[this.outputName];
    const k = info.labels.length;
    if (output.dims.length !== 2 || output.dims[0] !== faces.length || output.dims[1] !== k) {
      throw new Error(`model returned shape [${output.dims}], expected [${faces.length}, ${k}]`);
    }
    const values = Float32Array.from(output.data);
    output.dispose?.();
    return checkOutputs(values, faces.length, k, info, this.source);
  }

  result(detection, probs, i) {
    const k = this.labels.length;
    const row = Array.from(probs.subarray(i * k, (i + 1) * k));
    let best = 0;
    for (let c = 1; c < k; c += 1) if (row[c] > row[best]) best = c;
    const sum = row.reduce((s, v) => s + v, 0);
    const probabilities = {};
    this.labels.forEach((label, c) => { probabilities[label] = row[c] / sum; });
    const label = this.labels[best];
    return {
      box: detection.box,
      detectionScore: detection.score,
      landmarks: detection.landmarks,
      label,
      score: probabilities[label],
      probabilities,
    };
  }
}
