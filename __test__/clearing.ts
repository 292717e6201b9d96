// One behaviour suite for every `Clearing` implementation (the in-process Engine and the TCP
// client of novated): each runs it against its own fresh engine.
import { expect, it } from 'vitest';
import { ClosedError, InputError, NovateError, encodeBatch, price, type Clearing, type CommandInput, type Event } from '../ts/src';

export const P = (s: string) => price(s);

export async function setup(c: Clearing): Promise<void> {
  await c.upsertInstrument({ id: 7n, multiplier: 10n, marginBps: 1000n, settleDays: 2 });
  await c.upsertAccount({ id: 1n });
  await c.upsertAccount({ id: 2n, maxPosition: 1000n });
  await c.adjustCollateral(1n, P('1000000'));
  await c.adjustCollateral(2n, P('1000000'));
}

async function rejection(p: Promise<unknown>): Promise<NovateError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(NovateError);
  return e as NovateError;
}

/** Register the shared tests; `open` gives a fresh, empty engine or connection. */
export function clearingSuite(open: () => Promise<Clearing>): void {
  it('every command answers with an ascending seq and the queries agree', async () => {
    const c = await open();
    try {
      const a = await c.upsertInstrument({ id: 7n, multiplier: 10n, marginBps: 1000n, settleDays: 2 });
      expect(a.seq).toBe(1n);
      expect((await c.upsertAccount({ id: 1n })).seq).toBe(2n);
      await c.upsertAccount({ id: 2n, maxPosition: 1000n });
      await c.adjustCollateral(1n, P('1000000'));
      await c.adjustCollateral(2n, P('1000000'));
      expect((await c.checkOrder({ account: 1n, instrument: 7n, side: 'buy', qty: 5n, price: P('101.25') })).seq).toBe(6n);
      const t = await c.clearTrade({ tradeId: 1n, buy: 1n, sell: 2n, instrument: 7n, qty: 5n, price: P('101.25'), tradeDate: 20261125 });
      expect(t.seq).toBe(7n);
      const pos = await c.position(1n, 7n);
      expect(pos).toEqual({
        account: 1n,
        instrument: 7n,
        qty: 5n,
        cost: 5n * P('101.25') * 10n,
        realized: 0n,
        unrealized: 0n,
        avgPrice: P('101.25'),
      });
      expect((await c.position(2n, 7n))?.qty).toBe(-5n);
      expect(await c.position(1n, 8n)).toBeUndefined();
      await c.markPrice(7n, P('102'));
      expect((await c.position(1n, 7n))?.unrealized).toBe(5n * P('0.75') * 10n);
      const acct = await c.account(1n);
      expect(acct.collateral).toBe(P('1000000'));
      expect(acct.unrealized).toBe(5n * P('0.75') * 10n);
      expect(acct.notional).toBe(5n * P('102') * 10n);
      expect(acct.margin).toBe((5n * P('102') * 10n * 1000n) / 10000n);
      expect(acct.equity).toBe(acct.collateral + acct.realized + acct.unrealized);
      expect(acct.excess).toBe(acct.equity - acct.margin);
      expect(acct.positions).toBe(1);
      expect((await c.account(2n)).maxPosition).toBe(1000n);
      const ins = await c.instrument(7n);
      expect(ins?.mark).toBe(P('102'));
      expect(ins?.lastPrice).toBe(P('101.25'));
      expect(ins?.holders).toBe(2);
      expect(await c.instrument(99n)).toBeUndefined();
      await c.settlementPrice(7n, P('103'));
      const settled = await c.position(1n, 7n);
      expect(settled?.realized).toBe(5n * (P('103') - P('101.25')) * 10n);
      expect(settled?.unrealized).toBe(0n);
      await c.bustTrade(1n);
      expect((await c.position(1n, 7n))?.qty).toBe(0n);
      const h1 = await c.stateHash();
      expect(typeof h1).toBe('bigint');
      expect(await c.stateHash()).toBe(h1);
      await c.adjustCollateral(1n, 1n);
      expect(await c.stateHash()).not.toBe(h1);
    } finally {
      await c.close();
    }
  });

  it('rejections are typed NovateErrors with the core code and name', async () => {
    const c = await open();
    try {
      await setup(c);
      const unknown = await rejection(c.clearTrade({ tradeId: 1n, buy: 1n, sell: 99n, instrument: 7n, qty: 1n, price: P('1'), tradeDate: 20261125 }));
      expect([unknown.code, unknown.codeName]).toEqual([2, 'UnknownAccount']);
      await c.clearTrade({ tradeId: 5n, buy: 1n, sell: 2n, instrument: 7n, qty: 1n, price: P('1'), tradeDate: 20261125 });
      const dup = await rejection(c.clearTrade({ tradeId: 5n, buy: 1n, sell: 2n, instrument: 7n, qty: 1n, price: P('1'), tradeDate: 20261125 }));
      expect([dup.code, dup.codeName]).toEqual([9, 'Duplicate']);
      expect(dup.message).toBe('Duplicate (9)');
      const limit = await rejection(c.checkOrder({ account: 2n, instrument: 7n, side: 'sell', qty: 2000n, price: P('1') }));
      expect(limit.codeName).toBe('MaxPosition');
      // Overflow: i128 collateral that would wrap.
      await c.adjustCollateral(1n, (1n << 126n));
      const ovf = await rejection(c.adjustCollateral(1n, (1n << 126n)));
      expect([ovf.code, ovf.codeName]).toEqual([10, 'Overflow']);
      const acct = await rejection(c.account(404n));
      expect(acct.codeName).toBe('UnknownAccount');
      expect((await rejection(c.bustTrade(77n))).codeName).toBe('UnknownTrade');
      expect((await rejection(c.upsertInstrument({ id: 0n, multiplier: 1n, marginBps: 0n, settleDays: 0 }))).codeName).toBe('InvalidId');
      // Values that do not fit their wire field never reach the engine.
      await expect(c.upsertAccount({ id: 1n << 64n })).rejects.toBeInstanceOf(InputError);
      await expect(c.markPrice(1n << 40n, 1n)).rejects.toBeInstanceOf(InputError);
    } finally {
      await c.close();
    }
  });

  it('submitBatch: many commands in one call, one answer each, rejections by index', async () => {
    const c = await open();
    try {
      const cmds: CommandInput[] = [
        { type: 'upsertInstrument', instrument: { id: 7n, multiplier: 1n, marginBps: 500n, settleDays: 2 } },
        { type: 'upsertAccount', account: { id: 1n } },
        { type: 'upsertAccount', account: { id: 2n } },
      ];
      for (let t = 1n; t <= 1000n; t++) {
        cmds.push({ type: 'clearTrade', trade: { tradeId: t, buy: 1n, sell: 2n, instrument: 7n, qty: 1n, price: P('10'), tradeDate: 20261125 } });
      }
      cmds.push({ type: 'clearTrade', trade: { tradeId: 5n, buy: 1n, sell: 2n, instrument: 7n, qty: 1n, price: P('10'), tradeDate: 20261125 } });
      cmds.push({ type: 'adjustCollateral', account: 99n, amount: 1n });
      cmds.push({ type: 'markPrice', instrument: 7n, price: P('11') });
      // A single call sent after the batch is answered after all of it.
      const [r, single] = await Promise.all([c.submitBatch(encodeBatch(cmds)), c.adjustCollateral(1n, P('5'))]);
      expect(r.accepted).toBe(1004);
      expect(r.rejected).toBe(2);
      expect(r.rejects).toEqual([
        { index: 1003, code: 9 },
        { index: 1004, code: 2 },
      ]);
      expect(r.lastSeq).toBe(1006n);
      expect(single.seq).toBe(1007n);
      expect((await c.position(1n, 7n))?.qty).toBe(1000n);
      expect((await c.position(1n, 7n))?.unrealized).toBe(1000n * P('1'));
      // CommandInputs directly, and an empty batch.
      const r2 = await c.submitBatch([{ type: 'markPrice', instrument: 7n, price: P('12') }, { type: 'bustTrade', tradeId: 1n }]);
      expect(r2).toEqual({ accepted: 2, rejected: 0, lastSeq: 1009n, rejects: [] });
      expect(await c.submitBatch([])).toEqual({ accepted: 0, rejected: 0, lastSeq: 0n, rejects: [] });
      // Malformed bytes: a typed error naming the offset, and nothing submitted.
      const good = encodeBatch([{ type: 'markPrice', instrument: 7n, price: P('13') }]);
      const bad = new Uint8Array(good.length + 3);
      bad.set(good);
      bad.set([1, 2, 3], good.length);
      await expect(c.submitBatch(bad)).rejects.toThrow(new RegExp(`byte ${good.length}`));
      await expect(c.submitBatch(bad)).rejects.toBeInstanceOf(InputError);
      expect((await c.instrument(7n))?.mark).toBe(P('12'));
      await expect(c.submitBatch([{ type: 'markPrice', instrument: 1n << 40n, price: 1n }])).rejects.toBeInstanceOf(InputError);
    } finally {
      await c.close();
    }
  });

  it('events: in order, filtered, fed in batches; break unsubscribes', async () => {
    const c = await open();
    try {
      const all = c.events();
      const mine = c.events({ types: ['PositionChanged'], account: 2n });
      const untouched = c.events({ types: ['MarginCall'] });
      await setup(c);
      const r = await c.submitBatch(
        Array.from({ length: 300 }, (_, i) => ({
          type: 'clearTrade' as const,
          trade: { tradeId: BigInt(i + 1), buy: 1n, sell: 2n, instrument: 7n, qty: 1n, price: P('100'), tradeDate: 20261125 },
        })),
      );
      expect(r.accepted).toBe(300);
      const seen: Event[] = [];
      for await (const ev of all) {
        seen.push(ev);
        if (seen.length === 5 + 900) break;
      }
      expect(seen.map((x) => x.type).slice(0, 8)).toEqual([
        'InstrumentUpdated',
        'AccountUpdated',
        'AccountUpdated',
        'CollateralChanged',
        'CollateralChanged',
        'TradeCleared',
        'PositionChanged',
        'PositionChanged',
      ]);
      for (let i = 1; i < seen.length; i++) expect(seen[i].seq >= seen[i - 1].seq).toBe(true);
      expect(seen[seen.length - 1].seq).toBe(305n);
      const qtys: bigint[] = [];
      for await (const ev of mine) {
        expect(ev).toMatchObject({ type: 'PositionChanged', accountId: 2n });
        if (ev.type === 'PositionChanged') qtys.push(ev.qty);
        if (qtys.length === 300) break;
      }
      expect(qtys.slice(0, 3)).toEqual([-1n, -2n, -3n]);
      expect(qtys[299]).toBe(-300n);
      // After break the iterator is finished; the connection or engine goes on.
      expect(await all.next()).toEqual({ done: true, value: undefined });
      expect(await mine.next()).toEqual({ done: true, value: undefined });
      await c.clearTrade({ tradeId: 1000n, buy: 1n, sell: 2n, instrument: 7n, qty: 1n, price: P('100'), tradeDate: 20261125 });
      const late = c.events({ types: ['TradeCleared'] });
      await c.clearTrade({ tradeId: 1001n, buy: 1n, sell: 2n, instrument: 7n, qty: 1n, price: P('100'), tradeDate: 20261125 });
      const first = await late.next();
      expect(first.value).toMatchObject({ type: 'TradeCleared', tradeId: 1001n });
      late.close();
      untouched.close();
      expect(() => c.events({ types: ['Nope' as never] })).toThrow(TypeError);
      // Account 0 is no account (on the wire, 0 means every account): refused, like a negative id.
      expect(() => c.events({ account: 0n })).toThrow(InputError);
      expect(() => c.events({ account: -1n })).toThrow(InputError);
      // Query ids that do not fit their wire field never reach the engine.
      await expect(c.position(1n, 1n << 32n)).rejects.toBeInstanceOf(InputError);
      expect(await c.position(404n, 7n)).toBeUndefined();
      expect(await c.instrument(404n)).toBeUndefined();
    } finally {
      await c.close();
    }
  });

  it('a closed handle refuses further calls', async () => {
    const c = await open();
    await c.close();
    await expect(c.upsertAccount({ id: 1n })).rejects.toBeInstanceOf(ClosedError);
    await expect(c.submitBatch([])).rejects.toBeInstanceOf(ClosedError);
  });
}
