// What a classifier says about itself: the fer-onnx metadata contract, read as
// fer_onnx.metadata.ModelInfo.from_metadata reads it in Python. Nothing about the model (labels,
// input size, colour mode, crop template) is written in this page: it all comes from the file.

export const KEY_LABELS = 'fer_onnx.labels';
export const KEY_INPUT_SIZE = 'fer_onnx.input_size';
export const KEY_COLOR = 'fer_onnx.color_mode';
export const KEY_VALUE_RANGE = 'fer_onnx.value_range';
export const KEY_CROP_TEMPLATE = 'fer_onnx.crop_template';
export const KEY_OUTPUT = 'fer_onnx.output';

const REQUIRED_KEYS = [KEY_LABELS, KEY_INPUT_SIZE, KEY_COLOR, KEY_VALUE_RANGE];
const COLOR_MODES = ['gray', 'rgb', 'bgr'];
const OUTPUT_KINDS = ['probabilities', 'logits'];

function finite(value) {
  return typeof value === 'number' && Number.isFinite(value);
}

function parseTemplate(text) {
  const data = JSON.parse(text);
  const landmarks = data.landmarks;
  if (!Array.isArray(landmarks) || landmarks.length !== 5
      || !landmarks.every((p) => Array.isArray(p) && p.length === 2 && p.every(finite))) {
    throw new Error(`a crop template needs 5 finite (x, y) points, got ${JSON.stringify(landmarks)}`);
  }
  const box = data.box ?? null;
  if (box !== null && (!Array.isArray(box) || box.length !== 4 || !box.every(finite))) {
    throw new Error(`template box must be finite (x, y, w, h), got ${JSON.stringify(box)}`);
  }
  return { landmarks: landmarks.map(([x, y]) => [x, y]), box };
}

/**
 * Parse a classifier's metadata map.
 * @param {Object<string, string>} props - From readMetadataProps.
 * @param {string} source - Name of the model, for error messages.
 * @returns {{labels: string[], height: number, width: number, color: string, channels: number,
 *   valueRange: number[], template: ?{landmarks: number[][], box: ?number[]}, output: string}}
 */
export function modelInfo(props, source) {
  const missing = REQUIRED_KEYS.filter((key) => !(key in props));
  if (missing.length) {
    throw new Error(
      `${source} lacks the metadata fer-onnx needs: ${missing.join(', ')}. Stamp it with `
      + '`fer-onnx model stamp` or export it with `fer-onnx-factory export`.',
    );
  }
  try {
    const labels = JSON.parse(props[KEY_LABELS]);
    if (!Array.isArray(labels) || !labels.length || !labels.every((l) => typeof l === 'string')
        || new Set(labels).size !== labels.length) {
      throw new Error(`${KEY_LABELS} must be a JSON list of distinct strings`);
    }
    const [height, width] = JSON.parse(props[KEY_INPUT_SIZE]).map((v) => Math.trunc(Number(v)));
    if (!(height > 0 && width > 0)) throw new Error(`input size must be positive, got ${height}x${width}`);
    const color = props[KEY_COLOR];
    if (!COLOR_MODES.includes(color)) {
      throw new Error(`${KEY_COLOR} must be one of ${COLOR_MODES.join(', ')}, got ${color}`);
    }
    const valueRange = JSON.parse(props[KEY_VALUE_RANGE]).map(Number);
    if (valueRange.length !== 2 || !valueRange.every(Number.isFinite) || !(valueRange[0] < valueRange[1])) {
      throw new Error(`${KEY_VALUE_RANGE} must be finite with low < high`);
    }
    const output = props[KEY_OUTPUT] ?? 'probabilities';
    if (!OUTPUT_KINDS.includes(output)) {
      throw new Error(`${KEY_OUTPUT} must be one of ${OUTPUT_KINDS.join(', ')}, got ${output}`);
    }
    const template = KEY_CROP_TEMPLATE in props ? parseTemplate(props[KEY_CROP_TEMPLATE]) : null;
    return {
      labels,
      height,
      width,
      color,
      channels: color === 'gray' ? 1 : 3,
      valueRange,
      template,
      output,
    };
  } catch (error) {
    throw new Error(`${source} has malformed fer-onnx metadata: ${error.message}`);
  }
}
