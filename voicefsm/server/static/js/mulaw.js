// G.711 mu-law, bit-exact with Python's audioop.lin2ulaw / ulaw2lin (and voicefsm.core.audio).
// audioop encodes the top 14 bits of each 16-bit sample, so the table is indexed by sample >> 2.

const CLIP = 8159;
const SEGMENT_ENDS = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];

function encode14(value) {
  let mask = 0xff;
  if (value < 0) {
    value = -value;
    mask = 0x7f;
  }
  const magnitude = Math.min(value, CLIP) + 0x21;
  let segment = 0;
  while (segment < 8 && magnitude > SEGMENT_ENDS[segment]) segment += 1;
  if (segment >= 8) return 0x7f ^ mask;
  return ((segment << 4) | ((magnitude >> (segment + 1)) & 0x0f)) ^ mask;
}

const ENCODE = new Uint8Array(16384); // index: (sample >> 2) + 8192
for (let v = -8192; v < 8192; v += 1) ENCODE[v + 8192] = encode14(v);

/** 256 entries: mu-law byte -> 16-bit sample. */
export const DECODE = new Int16Array(256);
for (let i = 0; i < 256; i += 1) {
  const u = ~i & 0xff;
  const t = (((u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
  DECODE[i] = u & 0x80 ? 0x84 - t : t - 0x84;
}

/** The mu-law byte of digital silence (what PCM 0 encodes to). */
export const SILENCE = 0xff;

/** Encode one 16-bit sample (an integer in [-32768, 32767]). */
export function encodeSample(sample) {
  return ENCODE[(sample >> 2) + 8192];
}

/** Encode an Int16Array (or array of ints) as mu-law bytes. */
export function encodePcm16(samples) {
  const out = new Uint8Array(samples.length);
  for (let i = 0; i < samples.length; i += 1) out[i] = ENCODE[(samples[i] >> 2) + 8192];
  return out;
}

/** Float samples in [-1, 1] (Web Audio) -> 16-bit integer samples, clipped. */
export function floatToPcm16(value) {
  const scaled = Math.round(value * 32768);
  return scaled > 32767 ? 32767 : scaled < -32768 ? -32768 : scaled;
}

/** Encode Web Audio float samples as mu-law bytes into `out` (a Uint8Array at least as long). */
export function encodeFloat(samples, out = new Uint8Array(samples.length)) {
  for (let i = 0; i < samples.length; i += 1) out[i] = ENCODE[(floatToPcm16(samples[i]) >> 2) + 8192];
  return out;
}

/** Decode mu-law bytes to Web Audio float samples in [-1, 1). */
export function decodeToFloat(bytes, out = new Float32Array(bytes.length)) {
  for (let i = 0; i < bytes.length; i += 1) out[i] = DECODE[bytes[i]] / 32768;
  return out;
}

/** Bytes -> base64 (chunked so large buffers do not overflow the argument list). */
export function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x2000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x2000));
  }
  return btoa(text);
}

/** base64 -> bytes. */
export function fromBase64(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i += 1) out[i] = raw.charCodeAt(i);
  return out;
}
