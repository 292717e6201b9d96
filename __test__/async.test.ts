// The in-process engine's promise-returning calls do not block the JS thread: the wait for an
// answer (an fsync included) happens on the binding's completion thread.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { ClosedError, Engine, InputError, NovateError, price, type Ack, type TradeInput } from '../ts/src';
import { setup } from './clearing';

const small = { engine: { accounts_max: 1000, instruments_max: 64, positions_max: 4096, trades_max: 100_000 } };
const trade = (id: bigint, qty = 1n): TradeInput => ({
  tradeId: id,
  buy: 1n,
  sell: 2n,
  instrument: 7n,
  qty,
  price: price('100'),
  tradeDate: 20261125,
});

/** Count event-loop turns (setImmediate callbacks) until `p` settles. */
async function turnsWhile<T>(p: Promise<T>): Promise<{ value: T; turns: number }> {
  let turns = 0;
  let done = false;
  const spin = () => {
    if (done) return;
    turns++;
    setImmediate(spin);
  };
  setImmediate(spin);
  try {
    return { value: await p, turns };
  } finally {
    done = true;
  }
}

describe('Engine.open: calls do not block the event loop', () => {
  const dir = mkdtempSync(join(tmpdir(), 'novate-async-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('with durability fsync, the event loop turns while a clearTrade waits for its fsync', async () => {
    const e = Engine.open({ ...small, data_dir: dir, durability: { policy: 'fsync' } });
    try {
      await setup(e);
      const p = e.clearTrade(trade(1n));
      // The call returned a pending promise: nothing was answered in this thread.
      expect(e.inFlight).toBe(1);
      expect((await p).seq).toBe(6n);
      expect(e.inFlight).toBe(0);
      // The same for a batch and the state hash.
      const b = e.submitBatch([{ type: 'clearTrade', trade: trade(2n) }, { type: 'clearTrade', trade: trade(3n) }]);
      expect(e.inFlight).toBe(1);
      expect(await b).toMatchObject({ accepted: 2, rejected: 0, lastSeq: 8n });
      // While the engine waits for many fsyncs (a batch of 20,000 trades, one group commit per
      // window), the event loop turns: timers and setImmediate callbacks run. (A single fsync
      // may finish before the loop's next turn on a busy machine, so the proof uses many.)
      let timer = false;
      const t = setTimeout(() => (timer = true), 0);
      const big = Array.from({ length: 20_000 }, (_, i) => ({ type: 'clearTrade' as const, trade: trade(100n + BigInt(i)) }));
      const { value, turns } = await turnsWhile(e.submitBatch(big));
      expect(value).toMatchObject({ accepted: 20_000, rejected: 0, lastSeq: 20_008n });
      expect(turns).toBeGreaterThan(0);
      expect(timer).toBe(true);
      clearTimeout(t);
      const h = await turnsWhile(e.stateHash());
      expect(typeof h.value).toBe('bigint');
      // The 64-bit hash crosses as two 32-bit halves: it equals the blocking path's bigint.
      expect(h.value).toBe(e.stateHashAt().hash);
      expect(h.value > 0xffffffffn).toBe(true);
      expect((await e.position(1n, 7n))?.qty).toBe(20_003n);
    } finally {
      e.closeSync();
    }
  });

  it('1,000 concurrent clearTrade promises all settle with the right answer, in seq order', async () => {
    // A window of 16 and an ingress ring of 16: most of the 1,000 wait in the client's queue.
    const e = Engine.open({ engine: { ...small.engine, client_inflight_max: 16, ingress_ring: 16 } });
    try {
      await setup(e);
      const order: bigint[] = [];
      const ps: Promise<Ack>[] = [];
      for (let i = 1n; i <= 1000n; i++) {
        // Every 100th trade repeats an earlier trade id: rejected as Duplicate (9).
        const p = e.clearTrade(trade(i % 100n === 0n ? i - 50n : i));
        p.then(
          (a) => order.push(a.seq),
          (x: NovateError) => order.push(-BigInt(x.code)),
        );
        ps.push(p);
      }
      expect(e.inFlight).toBe(1000);
      const results = await Promise.allSettled(ps);
      for (let i = 0; i < 1000; i++) {
        const r = results[i];
        const seq = BigInt(i) + 6n; // five setup commands before
        if ((i + 1) % 100 === 0) {
          expect(r.status).toBe('rejected');
          const err = (r as PromiseRejectedResult).reason;
          expect(err).toBeInstanceOf(NovateError);
          expect((err as NovateError).codeName).toBe('Duplicate');
        } else {
          expect(r).toEqual({ status: 'fulfilled', value: { seq } });
        }
      }
      // Settled in call order = seq order.
      expect(order.length).toBe(1000);
      const acked = order.filter((s) => s > 0n);
      expect(acked).toEqual([...acked].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
      expect(order.filter((s) => s < 0n)).toEqual(Array(10).fill(-9n));
      expect((await e.position(1n, 7n))?.qty).toBe(990n);
      expect(e.inFlight).toBe(0);
    } finally {
      e.closeSync();
    }
  });

  it('rejections, bad input and a closed engine arrive as typed errors', async () => {
    const e = Engine.open(small);
    await setup(e);
    const unknown = await e.clearTrade({ ...trade(1n), buy: 99n }).catch((x: unknown) => x);
    expect(unknown).toBeInstanceOf(NovateError);
    expect((unknown as NovateError).codeName).toBe('UnknownAccount');
    await expect(e.clearTrade({ ...trade(2n), tradeId: -1n })).rejects.toBeInstanceOf(InputError);
    await expect(e.clearTrade({ ...trade(2n), qty: 1n << 70n })).rejects.toBeInstanceOf(InputError);
    // In flight at close: every promise settles (answered, or ClosedError), none hangs.
    const inflight = [];
    for (let i = 10n; i < 2010n; i++) inflight.push(e.clearTrade(trade(i)));
    const batch = e.submitBatch(Array.from({ length: 5000 }, (_, i) => ({ type: 'clearTrade' as const, trade: trade(10_000n + BigInt(i)) })));
    e.closeSync();
    const settled = await Promise.allSettled([...inflight, batch]);
    for (const s of settled) {
      if (s.status === 'rejected') expect(s.reason).toBeInstanceOf(ClosedError);
    }
    // Answered ones came first: no ack after a ClosedError.
    const firstClosed = settled.findIndex((s) => s.status === 'rejected');
    if (firstClosed >= 0) expect(settled.slice(firstClosed, -1).every((s) => s.status === 'rejected')).toBe(true);
    await expect(e.clearTrade(trade(3n))).rejects.toBeInstanceOf(ClosedError);
    await expect(e.submitBatch([])).rejects.toBeInstanceOf(ClosedError);
    await expect(e.stateHash()).rejects.toBeInstanceOf(ClosedError);
  });

  it('close() does not block the event loop; what was called before it is answered', async () => {
    const d = mkdtempSync(join(tmpdir(), 'novate-close-'));
    try {
      const e = Engine.open({ ...small, data_dir: d, durability: { policy: 'fsync' } });
      await setup(e);
      const before = Array.from({ length: 50 }, (_, i) => e.clearTrade(trade(BigInt(i + 1))));
      const { turns } = await turnsWhile(e.close()); // drains, commits, snapshots to LMDB
      expect(turns).toBeGreaterThan(0);
      const acks = await Promise.all(before);
      expect(acks.map((a) => a.seq)).toEqual(Array.from({ length: 50 }, (_, i) => BigInt(i + 6)));
      await expect(e.clearTrade(trade(99n))).rejects.toBeInstanceOf(ClosedError);
      await e.close(); // idempotent
      const again = Engine.open({ ...small, data_dir: d });
      try {
        expect((await again.position(1n, 7n))?.qty).toBe(50n);
      } finally {
        await again.close();
      }
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  it('an empty batch resolves with nothing counted', async () => {
    const e = Engine.open(small);
    try {
      expect(await e.submitBatch([])).toEqual({ accepted: 0, rejected: 0, lastSeq: 0n, rejects: [] });
      expect(await e.submitBatch(new Uint8Array(0))).toEqual({ accepted: 0, rejected: 0, lastSeq: 0n, rejects: [] });
    } finally {
      e.closeSync();
    }
  });
});

const SDK = fileURLToPath(new URL('../ts/dist/index.js', import.meta.url));

describe('Engine.open: process liveness with calls in flight', () => {
  it('a pending call keeps Node alive until it settles; an idle engine does not', () => {
    const dir = mkdtempSync(join(tmpdir(), 'novate-live-'));
    try {
      const body = `
        const sdk = require(${JSON.stringify(SDK)});
        const e = sdk.Engine.open({ data_dir: ${JSON.stringify(dir)}, durability: { policy: 'fsync' } });
        e.upsertInstrument({ id: 7n, multiplier: 1n, marginBps: 0n, settleDays: 2 })
          .then((a) => e.upsertAccount({ id: 1n }))
          .then((a) => console.log('acked', a.seq));
      `;
      // No close(), nothing awaited at the top level: the process must print the ack (kept alive
      // while the call is pending) and then exit by itself (not kept alive once idle).
      const r = spawnSync(process.execPath, ['-e', body], { encoding: 'utf8', timeout: 30_000 });
      expect(r.signal).toBeNull();
      expect(r.stderr).toBe('');
      expect(r.stdout).toContain('acked 2');
      expect(r.status).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
