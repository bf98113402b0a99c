/** Checksums the emulated firmwares' `crypto` libraries share. */

/** CRC-32 (IEEE, reflected, as zlib) of `data`, unsigned 0..2^32-1; the firmwares push it as a signed 32-bit integer. */
export function crc32(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) {
    c ^= data[i];
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}
