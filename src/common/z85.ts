/**
 * Z85 (ZeroMQ RFC 32) encoding. The ZAP handler receives a client's CURVE key as 32 raw bytes while key
 * files and the allowlist hold Z85 text, so the handler needs this tiny encoder to compare them.
 */
const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#';

export function z85Encode(data: Uint8Array): string {
  if (data.length % 4 !== 0) throw new Error('Z85 input length must be a multiple of 4');
  let out = '';
  for (let i = 0; i < data.length; i += 4) {
    let value = ((data[i]! << 24) >>> 0) + (data[i + 1]! << 16) + (data[i + 2]! << 8) + data[i + 3]!;
    const chunk: string[] = [];
    for (let j = 0; j < 5; j++) {
      chunk.unshift(ALPHABET[value % 85]!);
      value = Math.floor(value / 85);
    }
    out += chunk.join('');
  }
  return out;
}

/** A CURVE key in Z85 is 40 characters of the alphabet above. */
export function isZ85Key(text: string): boolean {
  return text.length === 40 && [...text].every((c) => ALPHABET.includes(c));
}
