// The in-process engine (`Engine.open`) through the napi binding.
import { describe, expect, it } from 'vitest';
import {
  ConfigError,
  Engine,
  EventsOverflowError,
  InputError,
  encodeBatch,
  price,
  type CommandInput,
  type Event,
} from '../ts/src';
import { clearingSuite, setup } from './clearing';
import type { NativeEngine } from '../ts/native/index';

const small = { engine: { accounts_max: 1000, instruments_max: 64, positions_max: 4096, trades_max: 100_000 } };

describe('Engine.open with threads.stages = "fused" (one pipeline thread)', () => {
  const fused = { ...small, threads: { stages: 'fused' as const } };
  clearingSuite(async () => Engine.open(fused));

  it('reports the fused thread', async () => {
    const e = Engine.open(fused);
    try {
      expect(e.startReport().some((l) => l.startsWith('stages: fused'))).toBe(true);
    } finally {
      await e.close();
    }
  });

  // threads.combine: an idle engine's submit steps the pipeline on the JS thread and returns
  // the completions at once; with combine off, or with work pending, they come later.
  it('an idle client gets its completions back from submit itself (threads.combine)', async () => {
    const fill = (id: bigint) => ({ tradeId: id, buy: 1n, sell: 2n, instrument: 7n, qty: 1n, price: price('100'), tradeDate: 20261125 });
    const trade = (id: bigint): CommandInput => ({ type: 'clearTrade', trade: fill(id) });
    for (const combine of [true, false]) {
      const e = Engine.open({ ...small, threads: { stages: 'fused', combine } });
      try {
        await setup(e);
        // The binding's own answer: ticket, kind 0 (ack), seq (after five setup commands). At
        // once unless the pipeline thread held the pipeline at that instant: count, over 20.
        const native = (e as unknown as { inner: { submit(t: number, b: Uint8Array, now: boolean): Float64Array | null } }).inner;
        let atOnce = 0;
        for (let i = 0; i < 20; i++) {
          const done = native.submit(1_000_000 + i, encodeBatch([trade(1n + BigInt(i))]), true);
          if (done) {
            expect(Array.from(done)).toEqual([1_000_000 + i, 0, 6 + i]);
            atOnce++;
          } else {
            await e.stateHash(); // its completion comes (and is dropped: no promise) first
          }
        }
        // (At least once, not most times: under load the pipeline thread may hold the lock.)
        if (combine) expect(atOnce).toBeGreaterThan(0);
        else expect(atOnce).toBe(0);
        await e.stateHash();
        // Mixed: a batch in flight, then single calls; every promise settles in log order.
        const order: string[] = [];
        const batch = e.submitBatch(Array.from({ length: 3000 }, (_, i) => trade(100n + BigInt(i))));
        const ps = [batch.then(() => order.push('batch'))];
        for (let i = 0; i < 5; i++) ps.push(e.clearTrade(fill(10_000n + BigInt(i))).then((a) => order.push(`t${a.seq}`)));
        await Promise.all(ps);
        expect(order).toEqual(['batch', 't3026', 't3027', 't3028', 't3029', 't3030']);
        // One call at a time on an idle engine: each answered in order.
        for (let i = 0; i < 50; i++) expect((await e.clearTrade(fill(5000n + BigInt(i)))).seq).toBe(3031n + BigInt(i));
      } finally {
        await e.close();
      }
    }
  });
});

describe('Engine.open', () => {
  clearingSuite(async () => Engine.open(small));

  it('threads.prefault commits the state tables at open and says so', async () => {
    const e = Engine.open({ ...small, threads: { prefault: true } });
    try {
      const line = e.startReport().find((l) => l.includes('committed at start-up'));
      // "memory: D of A MiB ...": a 100k-trade index and records are several MiB, all committed.
      const [done, asked] = (line ?? '').split(' ').map(Number).filter((n) => !Number.isNaN(n));
      expect(done).toBeGreaterThanOrEqual(4);
      expect(done).toBe(asked);
      await setup(e);
      await e.clearTrade({ tradeId: 1n, buy: 1n, sell: 2n, instrument: 7n, qty: 3n, price: price('100'), tradeDate: 20261125 });
      expect((await e.position(1n, 7n))?.qty).toBe(3n);
    } finally {
      await e.close();
    }
    const lazy = Engine.open(small);
    try {
      expect(lazy.startReport().some((l) => l.includes('committed at start-up'))).toBe(false);
    } finally {
      await lazy.close();
    }
  });

  it('threads.lookup_stage gives the same answers and state hash as without it', async () => {
    // 3,000 trades among 20 accounts in one batch: positions open all through it while the
    // stage looks up the trades after them; some name an unknown account (rejected).
    const run = async (lookup_stage: boolean) => {
      const e = Engine.open({ ...small, threads: { lookup_stage } });
      try {
        await setup(e);
        for (let a = 3n; a <= 20n; a++) {
          await e.upsertAccount({ id: a });
          await e.adjustCollateral(a, price('1000000'));
        }
        const trades: CommandInput[] = Array.from({ length: 3000 }, (_, i) => ({
          type: 'clearTrade',
          trade: {
            tradeId: 1n + BigInt(i),
            buy: 1n + BigInt((i * 7) % 21),
            sell: 1n + BigInt((i * 13 + 5) % 20),
            instrument: 7n,
            qty: 1n + BigInt(i % 3),
            price: price(String(95 + (i % 11))),
            tradeDate: 20261125,
          },
        }));
        const result = await e.submitBatch(trades);
        return { result, hash: await e.stateHash(), lines: e.startReport() };
      } finally {
        await e.close();
      }
    };
    const on = await run(true);
    const off = await run(false);
    expect(on.lines.some((l) => l.startsWith('lookup stage:'))).toBe(true);
    expect(off.lines.some((l) => l.startsWith('lookup stage:'))).toBe(false);
    expect(on.result.accepted).toBeGreaterThan(2000);
    expect(on.result.rejected).toBeGreaterThan(0);
    expect(on.result).toEqual(off.result);
    expect(on.hash).toBe(off.hash);
  });

  it('a malformed configuration is a ConfigError naming the key and the reason', () => {
    const e1 = (() => {
      try {
        Engine.open({ engine: { ingress_ring: 1000 } });
      } catch (e) {
        return e;
      }
    })();
    expect(e1).toBeInstanceOf(ConfigError);
    expect((e1 as ConfigError).key).toBe('engine.ingress_ring');
    expect((e1 as ConfigError).reason).toMatch(/power of two/);
    expect(() => Engine.open('[engine]\nbogus = 1\n')).toThrow(/engine\.bogus/);
    expect(() => Engine.open({ threads: { wait: 'spin' as never } })).toThrow(ConfigError);
    expect(() => Engine.open('not toml at all = = =')).toThrow(ConfigError);
  });

  it('submits a batch of SBE-encoded commands in one call, rejections by index', async () => {
    const e = Engine.open(small);
    try {
      const cmds: CommandInput[] = [
        { type: 'upsertInstrument', instrument: { id: 1n, multiplier: 1n, marginBps: 500n, settleDays: 2 } },
        { type: 'upsertAccount', account: { id: 1n } },
        { type: 'upsertAccount', account: { id: 2n } },
      ];
      for (let t = 1n; t <= 1000n; t++) {
        cmds.push({ type: 'clearTrade', trade: { tradeId: t, buy: 1n, sell: 2n, instrument: 1n, qty: 1n, price: price('10'), tradeDate: 20261125 } });
      }
      cmds.push({ type: 'clearTrade', trade: { tradeId: 5n, buy: 1n, sell: 2n, instrument: 1n, qty: 1n, price: price('10'), tradeDate: 20261125 } });
      cmds.push({ type: 'markPrice', instrument: 1n, price: price('11') });
      const r = await e.submitBatch(encodeBatch(cmds));
      expect(r.accepted).toBe(1004);
      expect(r.rejected).toBe(1);
      expect(r.rejects).toEqual([{ index: 1003, code: 9 }]);
      expect(r.lastSeq).toBe(1005n);
      expect(e.positionSync(1n, 1n)?.qty).toBe(1000n);
      expect(e.positionSync(1n, 1n)?.unrealized).toBe(1000n * price('1'));
      await expect(e.submitBatch(new Uint8Array([1, 2, 3]))).rejects.toThrow(/byte 0/);
      await expect(e.submitBatch(new Uint8Array([1, 2, 3]))).rejects.toBeInstanceOf(InputError);
    } finally {
      e.closeSync();
    }
  });

  it('events arrive in order, filtered, and break unsubscribes', async () => {
    const e = Engine.open(small);
    try {
      const all = e.events();
      const mine = e.events({ types: ['PositionChanged'], account: 2n });
      await setup(e);
      for (let t = 1n; t <= 3n; t++) {
        await e.clearTrade({ tradeId: t, buy: 1n, sell: 2n, instrument: 7n, qty: t, price: price('100'), tradeDate: 20261125 });
      }
      const seen: Event[] = [];
      for await (const ev of all) {
        seen.push(ev);
        if (seen.length === 14) break;
      }
      expect(seen.map((x) => x.type).slice(0, 6)).toEqual([
        'InstrumentUpdated',
        'AccountUpdated',
        'AccountUpdated',
        'CollateralChanged',
        'CollateralChanged',
        'TradeCleared',
      ]);
      for (let i = 1; i < seen.length; i++) expect(seen[i].seq >= seen[i - 1].seq).toBe(true);
      const pc = seen[6];
      expect(pc).toMatchObject({ type: 'PositionChanged', accountId: 1n, instrumentId: 7, qty: 1n });
      const qtys: bigint[] = [];
      for await (const ev of mine) {
        expect(ev.type).toBe('PositionChanged');
        if (ev.type === 'PositionChanged') {
          expect(ev.accountId).toBe(2n);
          qtys.push(ev.qty);
        }
        if (qtys.length === 3) break;
      }
      expect(qtys).toEqual([-1n, -3n, -6n]);
      // After break the iterator is finished and unsubscribed.
      expect(await all.next()).toEqual({ done: true, value: undefined });
      await e.clearTrade({ tradeId: 9n, buy: 1n, sell: 2n, instrument: 7n, qty: 1n, price: price('100'), tradeDate: 20261125 });
    } finally {
      e.closeSync();
    }
  });

  it('the binding refuses a kinds mask with bits past the last event kind', () => {
    const e = Engine.open(small);
    try {
      const inner = (e as unknown as { inner: NativeEngine }).inner;
      expect(() => inner.subscribe(1 << 16, null)).toThrow(/NOVATE_RANGE:kinds 65536/);
      expect(() => inner.subscribe(1 << 11, null)).toThrow(/NOVATE_RANGE/);
      expect(inner.subscribe((1 << 11) - 1, null)).toBeDefined();
    } finally {
      e.closeSync();
    }
  });

  it('an idle subscription is woken by the engine, not by a timer', async () => {
    const e = Engine.open(small);
    try {
      await setup(e);
      const inner = (e as unknown as { inner: NativeEngine }).inner;
      let notified = 0;
      let onNotify = () => {};
      const sub = inner.subscribe(0, null, () => {
        notified++;
        onNotify();
      });
      expect(sub.arm()).toBe(false); // nothing to read: armed, the engine will call back
      let woken = new Promise<void>((r) => (onNotify = r));
      await e.clearTrade({ tradeId: 1n, buy: 1n, sell: 2n, instrument: 7n, qty: 1n, price: price('100'), tradeDate: 20261125 });
      await woken; // no timer here: only the engine's call resolves it
      expect(notified).toBe(1);
      expect(sub.arm()).toBe(true); // the events are there: read instead of waiting
      expect(sub.poll(100).count).toBe(3); // TradeCleared and two PositionChanged
      // Drained and armed again: the engine's end wakes it too, and polling then says so.
      expect(sub.arm()).toBe(false);
      woken = new Promise<void>((r) => (onNotify = r));
      e.closeSync();
      await woken;
      expect(notified).toBe(2);
      expect(sub.poll(100)).toMatchObject({ count: 0, status: 2 });
      sub.close();
    } finally {
      e.closeSync();
    }
  });

  it('a slow consumer gets an overflow signal after the events it was given', async () => {
    const e = Engine.open({ ...small, engine: { ...small.engine, subscriber_buffer: 16 } });
    try {
      const stream = e.events();
      await setup(e);
      for (let t = 1n; t <= 20n; t++) {
        await e.clearTrade({ tradeId: t, buy: 1n, sell: 2n, instrument: 7n, qty: 1n, price: price('100'), tradeDate: 20261125 });
      }
      let n = 0;
      await expect(
        (async () => {
          for await (const _ of stream) n++;
        })(),
      ).rejects.toBeInstanceOf(EventsOverflowError);
      expect(n).toBe(16);
    } finally {
      e.closeSync();
    }
  });
});
