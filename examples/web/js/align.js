// Framing faces as the model's training data did (fer_onnx/alignment.py) and turning them into
// the model's input batch (fer_onnx/preprocessing.py). Image operations run in OpenCV.js, which
// gives the same pixels as OpenCV in Python; the arithmetic around them follows numpy's order.

import { roundHalfEven } from './numeric.js';

/**
 * Least-squares similarity transform from `source` to `target` points (alignment.similarity).
 * @param {number[][]} source - (x, y) points.
 * @param {number[][]} target - As many (x, y) points.
 * @returns {number[]} The 2x3 matrix, row-major.
 */
export function similarity(source, target) {
  const n = source.length;
  const mean = (points) => {
    let x = 0;
    let y = 0;
    for (const p of points) { x += p[0]; y += p[1]; }
    return [x / n, y / n];
  };
  const sm = mean(source);
  const dm = mean(target);
  // Complex-number form: d ~ z * s with z = a + ib; numpy's sums, products and division.
  let denom = 0;
  let re = 0;
  let im = 0;
  for (let i = 0; i < n; i += 1) {
    const sr = source[i][0] - sm[0];
    const si = source[i][1] - sm[1];
    const dr = target[i][0] - dm[0];
    const di = target[i][1] - dm[1];
    const magnitude = Math.hypot(sr, si);
    denom += magnitude * magnitude;
    re += sr * dr - (-si) * di;
    im += sr * di + (-si) * dr;
  }
  let a = 1;
  let b = 0;
  if (denom > 0) {
    const scale = 1 / denom; // numpy divides a complex by a real as z * (1 / d)
    a = re * scale;
    b = im * scale;
  }
  return [a, -b, dm[0] - (a * sm[0] + -b * sm[1]), b, a, dm[1] - (b * sm[0] + a * sm[1])];
}

function invertAffine(m) { // cv2.invertAffineTransform
  let d = m[0] * m[4] - m[1] * m[3];
  d = d !== 0 ? 1 / d : 0;
  const a11 = m[4] * d;
  const a22 = m[0] * d;
  const a12 = -m[1] * d;
  const a21 = -m[3] * d;
  return [a11, a12, -a11 * m[2] - a12 * m[5], a21, a22, -a21 * m[2] - a22 * m[5]];
}

function templatePoints(template, width, height) {
  return template.landmarks.map(([x, y]) => [x * width, y * height]);
}

/**
 * Warp a face onto the template's landmarks at the model's input size (alignment.align_face).
 * @param {object} cv - OpenCV.js.
 * @param {object} image - The whole image, a cv.Mat (BGR).
 * @param {number[][]} landmarks - The face's 5 points in pixels of `image`.
 * @param {{landmarks: number[][]}} template - The model's crop template.
 * @param {number} height - Model input height.
 * @param {number} width - Model input width.
 * @returns {object} A new cv.Mat of height x width, same type as `image`; delete() it.
 */
export function alignFace(cv, image, landmarks, template, height, width) {
  // Snap to 1/8 px as alignment.py does, so that last-bit float differences of the detector
  // (wasm vs x86 kernels) do not move the warp.
  const grid = 8;
  let points = landmarks.map(([x, y]) => [roundHalfEven(x * grid) / grid, roundHalfEven(y * grid) / grid]);
  let matrix = similarity(points, templatePoints(template, width, height));
  let source = image;
  const scale = Math.hypot(matrix[0], matrix[3]);
  if (scale < 0.5) {
    // Shrink the face's neighbourhood with area interpolation first, then warp at ~1:1.
    const inv = invertAffine(matrix);
    const corners = [[0, 0], [width, 0], [0, height], [width, height]];
    const xs = corners.map(([cx, cy]) => cx * inv[0] + cy * inv[1] + inv[2]);
    const ys = corners.map(([cx, cy]) => cx * inv[3] + cy * inv[4] + inv[5]);
    const x0 = Math.max(Math.floor(Math.min(...xs)) - 2, 0);
    const y0 = Math.max(Math.floor(Math.min(...ys)) - 2, 0);
    const x1 = Math.min(Math.ceil(Math.max(...xs)) + 2, image.cols);
    const y1 = Math.min(Math.ceil(Math.max(...ys)) + 2, image.rows);
    if (x1 > x0 && y1 > y0) {
      const region = image.roi(new cv.Rect(x0, y0, x1 - x0, y1 - y0));
      const newW = Math.max(1, roundHalfEven(region.cols * scale));
      const newH = Math.max(1, roundHalfEven(region.rows * scale));
      source = new cv.Mat();
      cv.resize(region, source, new cv.Size(newW, newH), 0, 0, cv.INTER_AREA);
      const fx = newW / region.cols;
      const fy = newH / region.rows;
      region.delete();
      points = points.map(([x, y]) => [(x - x0) * fx, (y - y0) * fy]);
      matrix = similarity(points, templatePoints(template, width, height));
    }
  }
  const m = cv.matFromArray(2, 3, cv.CV_64F, matrix);
  const out = new cv.Mat();
  cv.warpAffine(
    source, out, m, new cv.Size(width, height), cv.INTER_LINEAR, cv.BORDER_REPLICATE,
    new cv.Scalar(),
  );
  m.delete();
  if (source !== image) source.delete();
  return out;
}

/**
 * The plain box crop (images.crop_faces, margin 0), for models without a crop template.
 * @returns {object} A cv.Mat view into `image`; delete() it.
 */
export function cropBox(cv, image, box) {
  const [x, y, w, h] = box;
  const x1 = Math.max(x, 0);
  const y1 = Math.max(y, 0);
  const x2 = Math.min(x + w, image.cols);
  const y2 = Math.min(y + h, image.rows);
  return image.roi(new cv.Rect(x1, y1, x2 - x1, y2 - y1));
}

/**
 * Colour-convert and resize BGR faces into one float32 batch (preprocessing.prepare_faces).
 * @param {object} cv - OpenCV.js.
 * @param {object[]} faces - BGR cv.Mat face images of any size.
 * @param {{height: number, width: number, color: string, channels: number}} info - Model input.
 * @param {boolean} channelsFirst - NCHW (true) or NHWC (false) layout.
 * @returns {Float32Array} The batch, values 0..255.
 */
export function prepareFaces(cv, faces, info, channelsFirst) {
  const { height, width, channels } = info;
  const size = height * width * channels;
  const batch = new Float32Array(faces.length * size);
  const codes = { gray: cv.COLOR_BGR2GRAY, rgb: cv.COLOR_BGR2RGB };
  faces.forEach((face, n) => {
    let converted = face;
    if (info.color in codes) {
      converted = new cv.Mat();
      cv.cvtColor(face, converted, codes[info.color]);
    }
    let sized = converted;
    if (converted.rows !== height || converted.cols !== width) {
      const shrinking = converted.rows * converted.cols > height * width;
      sized = new cv.Mat();
      cv.resize(converted, sized, new cv.Size(width, height), 0, 0,
        shrinking ? cv.INTER_AREA : cv.INTER_LINEAR);
    }
    if (!sized.isContinuous()) sized = sized.clone(); // a box crop is a view into the image
    const data = sized.data; // HWC
    const offset = n * size;
    if (channelsFirst) {
      const plane = height * width;
      for (let i = 0; i < plane; i += 1) {
        for (let c = 0; c < channels; c += 1) batch[offset + c * plane + i] = data[i * channels + c];
      }
    } else {
      for (let i = 0; i < size; i += 1) batch[offset + i] = data[i];
    }
    if (sized !== converted) sized.delete();
    if (converted !== face) converted.delete();
  });
  return batch;
}
