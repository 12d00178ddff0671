// Read an ONNX file's `metadata_props` (the map Python reads with
// `session.get_modelmeta().custom_metadata_map`), which onnxruntime-web does not expose.
//
// An ONNX file is a protobuf `ModelProto`; `metadata_props` is its repeated field 14, each entry a
// `StringStringEntryProto` {key = 1, value = 2}. Only the top level of the message is walked: the
// graph (field 7) is skipped by its length, so this costs next to nothing even for large models.

const METADATA_PROPS = 14;
const ENTRY_KEY = 1;
const ENTRY_VALUE = 2;

class Reader {
  constructor(bytes, start = 0, end = bytes.length) {
    this.bytes = bytes;
    this.pos = start;
    this.end = end;
  }

  varint() {
    // Lengths and field tags fit in a double exactly; avoid 32-bit bitwise operators.
    let value = 0;
    let factor = 1;
    for (let i = 0; i < 10; i += 1) {
      if (this.pos >= this.end) throw new Error('truncated varint');
      const byte = this.bytes[this.pos];
      this.pos += 1;
      value += (byte & 0x7f) * factor;
      if ((byte & 0x80) === 0) return value;
      factor *= 128;
    }
    throw new Error('varint longer than 10 bytes');
  }

  skip(wireType) {
    switch (wireType) {
      case 0: this.varint(); break;
      case 1: this.pos += 8; break;
      case 2: { const length = this.varint(); this.pos += length; break; }
      case 5: this.pos += 4; break;
      default: throw new Error(`unsupported protobuf wire type ${wireType}`);
    }
    if (this.pos > this.end) throw new Error('truncated field');
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function readEntry(bytes, start, end) {
  const reader = new Reader(bytes, start, end);
  let key = '';
  let value = '';
  while (reader.pos < reader.end) {
    const tag = reader.varint();
    const field = Math.floor(tag / 8);
    const wireType = tag % 8;
    if ((field === ENTRY_KEY || field === ENTRY_VALUE) && wireType === 2) {
      const length = reader.varint();
      const text = utf8.decode(bytes.subarray(reader.pos, reader.pos + length));
      reader.pos += length;
      if (field === ENTRY_KEY) key = text;
      else value = text;
    } else {
      reader.skip(wireType);
    }
  }
  return [key, value];
}

/**
 * The metadata map of an ONNX model.
 * @param {Uint8Array} bytes - The whole .onnx file.
 * @returns {Object<string, string>} key -> value; later duplicates win, as in onnxruntime.
 */
export function readMetadataProps(bytes) {
  const reader = new Reader(bytes);
  const props = {};
  try {
    while (reader.pos < reader.end) {
      const tag = reader.varint();
      const field = Math.floor(tag / 8);
      const wireType = tag % 8;
      if (field === METADATA_PROPS && wireType === 2) {
        const length = reader.varint();
        const [key, value] = readEntry(bytes, reader.pos, reader.pos + length);
        reader.pos += length;
        props[key] = value;
      } else {
        reader.skip(wireType);
      }
    }
  } catch (error) {
    throw new Error(`not a readable ONNX file (${error.message})`);
  }
  return props;
}
