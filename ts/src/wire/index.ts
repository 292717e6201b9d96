// The novate wire protocol for TypeScript: the codecs generated from crates/wire/schema/novate.xml
// plus SOFH framing (Simple Open Framing Header 1.0), mirroring crates/wire/src/frame.rs.
export * from './generated';

/** Bytes of the SOFH header: u32 big-endian length (header included), u16 big-endian encoding type. */
export const SOFH_LENGTH = 6;
/** SOFH encoding type of SBE 1.0 little-endian. */
export const SBE_LE_ENCODING = 0x5be0;
/** Longest frame accepted, header included (same limit as the Rust side). */
export const FRAME_LENGTH_MAX = 64 * 1024;

export class FrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FrameError';
  }
}

/** Write a SOFH header for a message of `messageLength` bytes at `offset`. */
export function writeSofh(buf: Uint8Array, offset: number, messageLength: number): void {
  const total = messageLength + SOFH_LENGTH;
  if (total > FRAME_LENGTH_MAX) throw new FrameError(`frame of ${total} bytes, max ${FRAME_LENGTH_MAX}`);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  view.setUint32(offset, total, false);
  view.setUint16(offset + 4, SBE_LE_ENCODING, false);
}

/**
 * The frame at `offset`: its SBE message and total length, or `undefined` when more bytes are
 * needed. Throws `FrameError` for a bad header (as soon as its 6 bytes are there).
 */
export function parseFrame(buf: Uint8Array, offset = 0): { message: Uint8Array; length: number } | undefined {
  if (buf.byteLength - offset < SOFH_LENGTH) return undefined;
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const length = view.getUint32(offset, false);
  const encoding = view.getUint16(offset + 4, false);
  if (encoding !== SBE_LE_ENCODING) throw new FrameError(`encoding type 0x${encoding.toString(16)}`);
  if (length < SOFH_LENGTH) throw new FrameError(`frame length ${length} below the header`);
  if (length > FRAME_LENGTH_MAX) throw new FrameError(`frame length ${length} above ${FRAME_LENGTH_MAX}`);
  if (buf.byteLength - offset < length) return undefined;
  return { message: buf.subarray(offset + SOFH_LENGTH, offset + length), length };
}

/**
 * Incremental SOFH decoder for a byte stream (mirrors Rust's `StreamDecoder`): push chunks of
 * any size, take whole frames' SBE messages. A returned message is a view into the reader's
 * buffer, valid until the next `push`. After a bad header every call throws (a stream cannot
 * resynchronize).
 */
export class FrameReader {
  private readonly buf: Uint8Array;
  private start = 0;
  private end = 0;
  private broken: string | undefined;

  constructor(capacity = FRAME_LENGTH_MAX) {
    this.buf = new Uint8Array(Math.max(capacity, FRAME_LENGTH_MAX));
  }

  /** Bytes received and not yet returned as frames. */
  get buffered(): number {
    return this.end - this.start;
  }

  /** Copy as much of `chunk` as fits; returns how many bytes were taken. */
  push(chunk: Uint8Array): number {
    if (this.start > 0) {
      this.buf.copyWithin(0, this.start, this.end);
      this.end -= this.start;
      this.start = 0;
    }
    const n = Math.min(chunk.length, this.buf.length - this.end);
    this.buf.set(chunk.subarray(0, n), this.end);
    this.end += n;
    return n;
  }

  /** The next whole frame's message, or `undefined` if more bytes are needed. */
  next(): Uint8Array | undefined {
    if (this.broken !== undefined) throw new FrameError(`stream broken earlier: ${this.broken}`);
    let f;
    try {
      f = parseFrame(this.buf.subarray(this.start, this.end));
    } catch (e) {
      this.broken = (e as Error).message;
      throw e;
    }
    if (f === undefined) return undefined;
    this.start += f.length;
    return f.message;
  }
}
