// YuNet on onnxruntime-web, step for step as fer_onnx/yunet.py does it on onnxruntime:
// shrink to the detection width with area interpolation (OpenCV.js, bit-exact with cv2), pad
// bottom/right with zeros to multiples of 32, decode the three grids in float32 (Math.fround
// where numpy computes in float32), suppress overlaps like cv2.dnn.NMSBoxes, map back.

import { roundHalfEven } from './numeric.js';

export const STRIDES = [8, 16, 32];
const KINDS = ['cls', 'obj', 'bbox', 'kps'];
export const OUTPUT_NAMES = KINDS.flatMap((kind) => STRIDES.map((s) => `${kind}_${s}`));

const f32 = Math.fround;

/**
 * Decode YuNet's raw outputs (as fer_onnx.yunet.decode), before non-maximum suppression.
 * @returns {{boxes: number[][], scores: number[], points: number[][][]}} float32 values,
 *   in pixels of the network input, in grid order.
 */
export function decodeCandidates(outputs, padH, padW, scoreThreshold) {
  const threshold = f32(scoreThreshold); // numpy compares a float32 array with float32(threshold)
  const boxes = [];
  const scores = [];
  const points = [];
  for (const stride of STRIDES) {
    const cols = Math.floor(padW / stride);
    const rows = Math.floor(padH / stride);
    const cls = outputs[`cls_${stride}`].data;
    const obj = outputs[`obj_${stride}`].data;
    const bbox = outputs[`bbox_${stride}`].data;
    const kps = outputs[`kps_${stride}`].data;
    if (cls.length !== rows * cols) {
      throw new Error(
        `YuNet output cls_${stride} has ${cls.length} cells, expected ${rows}x${cols} for a `
        + `${padW}x${padH} input: is this a YuNet 2023mar model?`,
      );
    }
    for (let i = 0; i < cls.length; i += 1) {
      const c = Math.min(Math.max(cls[i], 0), 1);
      const o = Math.min(Math.max(obj[i], 0), 1);
      const score = f32(Math.sqrt(f32(c * o)));
      if (!(score >= threshold)) continue;
      const cx = i % cols;
      const cy = Math.floor(i / cols);
      const centreX = f32(f32(cx + bbox[4 * i]) * stride);
      const centreY = f32(f32(cy + bbox[4 * i + 1]) * stride);
      const w = f32(f32(Math.exp(bbox[4 * i + 2])) * stride);
      const h = f32(f32(Math.exp(bbox[4 * i + 3])) * stride);
      boxes.push([f32(centreX - f32(w / 2)), f32(centreY - f32(h / 2)), w, h]);
      scores.push(score);
      const face = [];
      for (let k = 0; k < 5; k += 1) {
        face.push([
          f32(f32(kps[10 * i + 2 * k] + cx) * stride),
          f32(f32(kps[10 * i + 2 * k + 1] + cy) * stride),
        ]);
      }
      points.push(face);
    }
  }
  return { boxes, scores, points };
}

// cv::Rect2d intersection (operator&=) and the overlap cv::dnn::NMSBoxes derives from it.
function intersectionArea(a, b) {
  if (a[2] <= 0 || a[3] <= 0 || b[2] <= 0 || b[3] <= 0) return 0;
  const [xMin, xMax] = a[0] < b[0] ? [a, b] : [b, a];
  const [yMin, yMax] = a[1] < b[1] ? [a, b] : [b, a];
  if ((xMin[0] < 0 && xMin[0] + xMin[2] < xMax[0]) || xMax[0] > xMin[0] + xMin[2]
      || (yMin[1] < 0 && yMin[1] + yMin[3] < yMax[1]) || yMax[1] > yMin[1] + yMin[3]) return 0;
  const width = Math.min(xMin[2] - (xMax[0] - xMin[0]), xMax[2]);
  const height = Math.min(yMin[3] - (yMax[1] - yMin[1]), yMax[3]);
  return width <= 0 || height <= 0 ? 0 : width * height;
}

function overlap(a, b) {
  const areaA = a[2] * a[3];
  const areaB = b[2] * b[3];
  let distance = 0;
  if (areaA + areaB > Number.EPSILON) {
    const inter = intersectionArea(a, b);
    distance = 1 - inter / (areaA + areaB - inter);
  }
  return f32(1 - f32(distance));
}

/**
 * cv2.dnn.NMSBoxes: candidates scoring above the threshold, best first (stable), top_k of them,
 * each kept unless it overlaps a kept one by more than nmsThreshold.
 * @returns {number[]} Indices of the kept boxes, best first.
 */
export function nmsBoxes(boxes, scores, scoreThreshold, nmsThreshold, topK) {
  const threshold = f32(scoreThreshold);
  const limit = f32(nmsThreshold);
  let order = scores.map((s, i) => [s, i]).filter(([s]) => s > threshold);
  order.sort((p, q) => q[0] - p[0]); // Array.prototype.sort is stable, like std::stable_sort
  if (topK > 0 && topK < order.length) order = order.slice(0, topK);
  const kept = [];
  for (const [, index] of order) {
    if (kept.every((k) => overlap(boxes[index], boxes[k]) <= limit)) kept.push(index);
  }
  return kept;
}

/**
 * A YuNet face detector on an onnxruntime-web session.
 */
export class YuNet {
  /**
   * @param {object} ort - The onnxruntime-web module.
   * @param {object} cv - OpenCV.js.
   * @param {object} session - An ort.InferenceSession of a YuNet 2023mar model.
   * @param {{scoreThreshold: number, nmsThreshold: number, topK: number,
   *   detectWidth: ?number}} options - fer_onnx.yunet.YuNetDetector's settings.
   */
  constructor(ort, cv, session, options) {
    const missing = OUTPUT_NAMES.filter((n) => !session.outputNames.includes(n));
    if (session.inputNames.length !== 1 || missing.length) {
      throw new Error(`not a YuNet 2023mar model: expected one input and outputs ${OUTPUT_NAMES.join(', ')}`);
    }
    this.ort = ort;
    this.cv = cv;
    this.session = session;
    this.inputName = session.inputNames[0];
    this.options = options;
    const shape = session.inputMetadata?.[0]?.shape ?? [];
    const [h, w] = shape.slice(2);
    this.fixed = Number.isInteger(h) && Number.isInteger(w) ? [h, w] : null;
  }

  /**
   * Faces in a BGR cv.Mat, best score first (as YuNetDetector.detect).
   * @returns {Promise<{box: number[], score: number, landmarks: number[][]}[]>} box as
   *   [x, y, width, height] in integer pixels of the image.
   */
  async detect(bgr) {
    const { cv } = this;
    const { scoreThreshold, nmsThreshold, topK, detectWidth } = this.options;
    const width = bgr.cols;
    const height = bgr.rows;
    let scale = 1.0;
    if (detectWidth !== null && width > detectWidth) scale = detectWidth / width;
    if (this.fixed !== null) scale = Math.min(this.fixed[0] / height, this.fixed[1] / width);
    const smallW = Math.max(1, roundHalfEven(width * scale));
    const smallH = Math.max(1, roundHalfEven(height * scale));
    let small = bgr;
    if (smallW !== width || smallH !== height) {
      small = new cv.Mat();
      cv.resize(bgr, small, new cv.Size(smallW, smallH), 0, 0, cv.INTER_AREA);
    }
    const [padH, padW] = this.fixed ?? [Math.ceil(smallH / 32) * 32, Math.ceil(smallW / 32) * 32];
    const blob = new Float32Array(3 * padH * padW);
    const pixels = small.data;
    const plane = padH * padW;
    for (let y = 0; y < smallH; y += 1) {
      for (let x = 0; x < smallW; x += 1) {
        const src = 3 * (y * smallW + x);
        const dst = y * padW + x;
        blob[dst] = pixels[src];
        blob[plane + dst] = pixels[src + 1];
        blob[2 * plane + dst] = pixels[src + 2];
      }
    }
    if (small !== bgr) small.delete();
    const input = new this.ort.Tensor('float32', blob, [1, 3, padH, padW]);
    const outputs = await this.session.run({ [this.inputName]: input }, OUTPUT_NAMES);
    const { boxes, scores, points } = decodeCandidates(outputs, padH, padW, scoreThreshold);
    for (const name of OUTPUT_NAMES) outputs[name].dispose?.();
    const keep = nmsBoxes(boxes, scores, scoreThreshold, nmsThreshold, topK);
    // Back to image pixels: x and y scale separately (the shrunk size was rounded).
    const sx = smallW / width;
    const sy = smallH / height;
    const found = [];
    for (const i of keep) {
      const [bx, by, bw, bh] = boxes[i];
      const x = f32(bx / sx);
      const y = f32(by / sy);
      const w = f32(bw / sx);
      const h = f32(bh / sy);
      const landmarks = points[i].map(([px, py]) => [
        Math.min(Math.max(f32(px / sx), 0), width - 1),
        Math.min(Math.max(f32(py / sy), 0), height - 1),
      ]);
      const x1 = Math.max(roundHalfEven(x), 0);
      const y1 = Math.max(roundHalfEven(y), 0);
      const x2 = Math.min(roundHalfEven(f32(x + w)), width);
      const y2 = Math.min(roundHalfEven(f32(y + h)), height);
      if (x2 <= x1 || y2 <= y1) continue;
      found.push({ box: [x1, y1, x2 - x1, y2 - y1], score: Math.min(scores[i], 1), landmarks });
    }
    return found;
  }
}
