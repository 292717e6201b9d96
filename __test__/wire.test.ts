// The TypeScript codecs against the same golden bytes as the Rust codecs (crates/wire/tests/golden).
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  BooleanType,
  SubscriptionState,
  DecodeError,
  EncodeError,
  FrameError,
  FrameReader,
  RejectCode,
  SCHEMA_ID,
  SCHEMA_VERSION,
  Side,
  TEMPLATE_IDS,
  decodeAck,
  decodeClearTrade,
  decodeMessage,
  decodeTaggedInto,
  encodeAdjustCollateral,
  encodeClearTrade,
  encodeClearTradeBatch,
  encodeMessage,
  parseFrame,
  writeSofh,
  type ClearTrade,
  type Message,
  type Tagged,
} from '../ts/src/wire';

const GOLDEN = fileURLToPath(new URL('../crates/wire/tests/golden/', import.meta.url));
const names = readdirSync(GOLDEN)
  .filter((f) => f.endsWith('.txt'))
  .map((f) => f.slice(0, -4))
  .sort();

interface Listing {
  template: string;
  header: Record<string, number>;
  fields: [string, string][];
  decodeOnly: boolean;
}

function readListing(name: string): Listing {
  const lines = readFileSync(GOLDEN + name + '.txt', 'utf8').trimEnd().split('\n');
  const l: Listing = { template: '', header: {}, fields: [], decodeOnly: lines[0].includes('decode-only') };
  for (const line of lines) {
    const [kind, ...rest] = line.split(' ');
    if (kind === 'template') l.template = rest[0];
    if (kind === 'header') for (const kv of rest) l.header[kv.split('=')[0]] = Number(kv.split('=')[1]);
    if (kind === 'field') {
      const i = rest[0].indexOf('=');
      l.fields.push([rest[0].slice(0, i), rest[0].slice(i + 1)]);
    }
  }
  return l;
}

/** `trades[1].qty` -> the value at that path of a decoded message. */
function at(value: unknown, path: string): unknown {
  let v: any = value;
  for (const part of path.split('.')) {
    const m = /^(\w+)\[(\d+)\]$/.exec(part);
    v = m ? v[m[1]][Number(m[2])] : v[part];
  }
  return v;
}

const ENUMS: Record<string, number>[] = [Side as any, RejectCode as any, BooleanType as any, SubscriptionState as any];

function show(v: unknown, expected: string): string {
  if (v === undefined) return 'absent';
  if (typeof v === 'number' && !/^-?\d+$/.test(expected)) {
    // An enum value: the listing names it.
    return ENUMS.some((e) => e[expected] === v) ? expected : `not ${expected}: ${v}`;
  }
  return String(v);
}

describe('golden fixtures (shared with the Rust codecs)', () => {
  it('covers every template', () => {
    const seen = new Set(names.map((n) => readListing(n).template));
    expect([...seen].sort()).toEqual(Object.keys(TEMPLATE_IDS).sort());
  });

  for (const name of names) {
    it(`${name}: decodes to the listed fields and re-encodes byte for byte`, () => {
      const bytes = new Uint8Array(readFileSync(GOLDEN + name + '.bin'));
      const l = readListing(name);
      const { message, length } = decodeMessage(bytes);
      expect(length).toBe(bytes.length);
      expect(tagged(bytes)).toEqual({ length, value: { type: message.template, ...message.value } });
      expect(message.template).toBe(l.template);
      expect(TEMPLATE_IDS[message.template]).toBe(l.header.templateId);
      expect(l.header.schemaId).toBe(SCHEMA_ID);
      expect(l.fields.length).toBeGreaterThan(0);
      for (const [path, expected] of l.fields) {
        expect(show(at(message.value, path), expected), path).toBe(expected);
      }
      if (!l.decodeOnly) {
        const out = new Uint8Array(bytes.length + 16).fill(0xaa);
        const n = encodeMessage(out, 8, message);
        expect(n).toBe(bytes.length);
        expect(Buffer.from(out.subarray(8, 8 + n)).toString('hex')).toBe(Buffer.from(bytes).toString('hex'));
        expect(out[7]).toBe(0xaa);
        expect(out[8 + n]).toBe(0xaa);
      }
    });
  }

  it('reads a version-0 Ack without the field version 1 added', () => {
    const ack = decodeAck(new Uint8Array(readFileSync(GOLDEN + 'ack_v0.bin')));
    expect(ack).toEqual({ requestId: 5n, seq: 81n, timestampNs: undefined });
  });
});

const TRADE: ClearTrade = {
  requestId: 42n,
  tradeId: 900001n,
  buyAccountId: 1001n,
  sellAccountId: 1002n,
  qty: 100n,
  price: 10_125_000_000n,
  instrumentId: 7,
  tradeDate: 20260115,
};

function encoded(m: Message): Uint8Array {
  const b = new Uint8Array(20000);
  return b.slice(0, encodeMessage(b, 0, m));
}

function kindOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof DecodeError) return e.kind;
    if (e instanceof EncodeError) return 'EncodeError';
    if (e instanceof FrameError) return 'FrameError';
    throw e;
  }
  return 'ok';
}

/** `decodeTaggedInto` of the message at the start of `b`: the one object it pushed and the length. */
function tagged(b: Uint8Array): { length: number; value: Tagged } {
  const out: Tagged[] = [];
  const length = decodeTaggedInto(new DataView(b.buffer, b.byteOffset, b.byteLength), 0, out);
  expect(out.length).toBe(1);
  return { length, value: out[0] };
}

/** How `decodeMessage` fares on `b`, after checking that `decodeTaggedInto` fares the same:
 * the same error kind, or the same message as one tagged object. */
function kindBoth(b: Uint8Array): string {
  const kind = kindOf(() => decodeMessage(b));
  expect(kindOf(() => tagged(b)), 'decodeTaggedInto').toBe(kind);
  if (kind === 'ok') {
    const { message, length } = decodeMessage(b);
    expect(tagged(b)).toEqual({ length, value: { type: message.template, ...message.value } });
  }
  return kind;
}

describe('bad input gives typed errors', () => {
  const good = encoded({ template: 'ClearTrade', value: TRADE });

  it('short buffers at every cut', () => {
    for (let cut = 0; cut < good.length; cut++) {
      expect(kindBoth(good.subarray(0, cut))).toBe('ShortBuffer');
    }
    expect(decodeClearTrade(good)).toEqual(TRADE);
  });

  it('unknown template, wrong template, schema and version', () => {
    const b = good.slice();
    const v = new DataView(b.buffer);
    v.setUint16(2, 150, true);
    expect(kindBoth(b)).toBe('UnknownTemplate');
    expect(kindOf(() => decodeAck(good))).toBe('WrongTemplate');
    v.setUint16(2, 5, true);
    v.setUint16(4, SCHEMA_ID + 1, true);
    expect(kindBoth(b)).toBe('UnsupportedSchema');
    v.setUint16(4, SCHEMA_ID, true);
    v.setUint16(6, SCHEMA_VERSION + 1, true);
    expect(kindBoth(b)).toBe('UnsupportedVersion');
    v.setUint16(6, SCHEMA_VERSION, true);
    v.setUint16(0, 55, true);
    expect(kindBoth(b)).toBe('BadBlockLength');
  });

  it('bad enum values', () => {
    const b = encoded({ template: 'Reject', value: { requestId: 1n, code: RejectCode.Margin } });
    new DataView(b.buffer).setUint16(16, 27, true);
    expect(kindBoth(b)).toBe('BadEnumValue');
    const o = encoded({
      template: 'CheckOrder',
      value: { requestId: 1n, accountId: 1n, qty: 1n, price: 1n, instrumentId: 1, side: Side.Buy },
    });
    o[8 + 36] = 3;
    expect(kindBoth(o)).toBe('BadEnumValue');
  });

  it('group count over its limit and short groups', () => {
    const trades = Array.from({ length: 256 }, (_, i) => ({ ...TRADE, requestId: BigInt(i) }));
    const b = encoded({ template: 'ClearTradeBatch', value: { trades } });
    expect(b.length).toBe(8 + 4 + 256 * 56);
    const v = new DataView(b.buffer);
    v.setUint16(10, 257, true);
    expect(kindBoth(b)).toBe('GroupCountOverLimit');
    v.setUint16(10, 256, true);
    v.setUint16(8, 0, true);
    expect(kindBoth(b)).toBe('BadGroupBlockLength');
    v.setUint16(8, 56, true);
    expect(kindBoth(b.subarray(0, b.length - 1))).toBe('ShortBuffer');
    expect(kindOf(() => encodeClearTradeBatch(new Uint8Array(20000), 0, { trades: [...trades, TRADE] }))).toBe(
      'EncodeError',
    );
  });

  it('random bytes never throw anything but DecodeError', () => {
    let seed = 0x9e3779b9;
    const rnd = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) >>> 24);
    for (let i = 0; i < 20000; i++) {
      const b = new Uint8Array(rnd() % 96).map(rnd);
      if (b.length >= 8 && i % 2 === 0) {
        new DataView(b.buffer).setUint16(4, SCHEMA_ID, true);
        new DataView(b.buffer).setUint16(6, 1, true);
        new DataView(b.buffer).setUint16(2, Object.values(TEMPLATE_IDS)[i % 22], true);
      }
      expect(['ok', 'ShortBuffer', 'BadBlockLength', 'BadGroupBlockLength', 'GroupCountOverLimit', 'UnknownTemplate', 'UnsupportedSchema', 'UnsupportedVersion', 'BadEnumValue']).toContain(
        kindBoth(b),
      );
    }
  });
});

describe('encoding checks ranges instead of wrapping', () => {
  const buf = new Uint8Array(64);
  it('refuses values that do not fit', () => {
    expect(kindOf(() => encodeClearTrade(buf, 0, { ...TRADE, tradeId: -1n }))).toBe('EncodeError');
    expect(kindOf(() => encodeClearTrade(buf, 0, { ...TRADE, tradeId: 1n << 64n }))).toBe('EncodeError');
    expect(kindOf(() => encodeClearTrade(buf, 0, { ...TRADE, price: 1n << 63n }))).toBe('EncodeError');
    expect(kindOf(() => encodeClearTrade(buf, 0, { ...TRADE, instrumentId: 2 ** 32 }))).toBe('EncodeError');
    expect(kindOf(() => encodeClearTrade(buf, 0, { ...TRADE, tradeDate: 1.5 }))).toBe('EncodeError');
    expect(kindOf(() => encodeClearTrade(new Uint8Array(63), 0, TRADE))).toBe('EncodeError');
    // 64-bit fields take bigint, narrower ones number: a mix-up is an EncodeError, not a TypeError.
    expect(kindOf(() => encodeClearTrade(buf, 0, { ...TRADE, qty: 5 as unknown as bigint }))).toBe('EncodeError');
    expect(kindOf(() => encodeClearTrade(buf, 0, { ...TRADE, instrumentId: 5n as unknown as number }))).toBe(
      'EncodeError',
    );
    const big = (1n << 127n) - 1n;
    expect(kindOf(() => encodeAdjustCollateral(buf, 0, { requestId: 1n, accountId: 1n, amount: big + 1n }))).toBe(
      'EncodeError',
    );
  });

  it('round-trips the int128 extremes', () => {
    // Both decode paths: values that fit in 64 bits (one read) and those that do not, at the
    // edges between them (the high word is, or just is not, the low word's sign extension).
    const edges = [1n << 31n, -(1n << 31n), (1n << 32n) - 1n, 1n << 32n, (1n << 63n) - 1n, 1n << 63n];
    const more = [-(1n << 63n), -(1n << 63n) - 1n, 1n << 64n, -(1n << 64n), (1n << 95n) + 5n, -(1n << 96n) - 7n];
    for (const amount of [0n, -1n, 1n, (1n << 127n) - 1n, -(1n << 127n), -123456789012345678901234n, ...edges, ...more]) {
      const b = encoded({ template: 'AdjustCollateral', value: { requestId: 3n, accountId: 1001n, amount } });
      expect(decodeMessage(b).message.value).toEqual({ requestId: 3n, accountId: 1001n, amount });
    }
  });
});

describe('SOFH framing', () => {
  it('frames a message like the Rust side and finds it again across partial buffers', () => {
    const msg = encoded({ template: 'ClearTrade', value: TRADE });
    const frame = new Uint8Array(6 + msg.length);
    writeSofh(frame, 0, msg.length);
    frame.set(msg, 6);
    expect(Array.from(frame.subarray(0, 6))).toEqual([0, 0, 0, 70, 0x5b, 0xe0]);
    for (let cut = 0; cut < frame.length; cut++) expect(parseFrame(frame.subarray(0, cut))).toBeUndefined();
    const f = parseFrame(frame)!;
    expect(f.length).toBe(70);
    expect(decodeClearTrade(f.message)).toEqual(TRADE);
    const bad = frame.slice();
    bad[4] = 0;
    expect(kindOf(() => parseFrame(bad))).toBe('FrameError');
  });
});

describe('FrameReader', () => {
  const frames = Array.from({ length: 20 }, (_, i) => {
    const msg = encoded({ template: 'ClearTrade', value: { ...TRADE, requestId: BigInt(i + 1) } });
    const f = new Uint8Array(6 + msg.length);
    writeSofh(f, 0, msg.length);
    f.set(msg, 6);
    return f;
  });
  const stream = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  frames.reduce((at, f) => (stream.set(f, at), at + f.length), 0);

  for (const chunk of [1, 5, 6, 7, 69, 70, 71, 500, stream.length]) {
    it(`yields every frame in order from reads of ${chunk} bytes`, () => {
      const r = new FrameReader();
      const ids: bigint[] = [];
      for (let at = 0; at < stream.length; at += chunk) {
        expect(r.push(stream.subarray(at, at + chunk))).toBe(Math.min(chunk, stream.length - at));
        for (let m = r.next(); m !== undefined; m = r.next()) ids.push(decodeClearTrade(m).requestId);
      }
      expect(ids).toEqual(Array.from({ length: 20 }, (_, i) => BigInt(i + 1)));
      expect(r.buffered).toBe(0);
    });
  }

  it('a bad header breaks the stream for good', () => {
    const r = new FrameReader();
    r.push(new Uint8Array([0, 0, 0, 70, 0xe0, 0x5b]));
    expect(kindOf(() => r.next())).toBe('FrameError');
    expect(kindOf(() => r.next())).toBe('FrameError');
  });
});
