/** Check a PNG the way a viewer would: signature, IHDR, and a zlib stream that inflates to the right size. */
import fs from 'node:fs';
import zlib from 'node:zlib';

export function readPng(file: string): { width: number; height: number } {
  const buf = fs.readFileSync(file);
  if (!buf.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) throw new Error(`${file}: not a PNG`);
  let pos = 8;
  let width = 0, height = 0, bitDepth = 0, colorType = 0;
  const idat: Buffer[] = [];
  while (pos < buf.length) {
    const len = buf.readUInt32BE(pos);
    const type = buf.toString('ascii', pos + 4, pos + 8);
    const data = buf.subarray(pos + 8, pos + 8 + len);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0); height = data.readUInt32BE(4); bitDepth = data[8]!; colorType = data[9]!;
    } else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') break;
    pos += 12 + len;
  }
  const channels = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 }[colorType] ?? 0;
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const expected = height * (1 + Math.ceil((width * channels * bitDepth) / 8));
  if (raw.length !== expected) throw new Error(`${file}: image data is ${raw.length} bytes, expected ${expected}`);
  return { width, height };
}
