// Restart recovery of the in-process engine from a data dir (journal + LMDB snapshots).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Engine, price } from '../ts/src';
import { setup } from './clearing';

const small = { engine: { accounts_max: 1000, instruments_max: 64, positions_max: 4096, trades_max: 100_000 } };

describe('Engine.open', () => {
describe('with a data dir', () => {
  const dir = mkdtempSync(join(tmpdir(), 'novate-sdk-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('restart recovers the same positions and state hash', async () => {
    const cfg = { ...small, data_dir: dir };
    const a = Engine.open(cfg);
    await setup(a);
    await a.clearTrade({ tradeId: 1n, buy: 1n, sell: 2n, instrument: 7n, qty: 4n, price: price('99.5'), tradeDate: 20261125 });
    a.snapshot();
    await a.clearTrade({ tradeId: 2n, buy: 2n, sell: 1n, instrument: 7n, qty: 1n, price: price('100.5'), tradeDate: 20261125 });
    await a.settlementPrice(7n, price('101'));
    const hash = await a.stateHash();
    const pos = await a.position(1n, 7n);
    const acct = await a.account(2n);
    await a.close();
    const b = Engine.open(cfg);
    try {
      expect(await b.stateHash()).toBe(hash);
      expect(await b.position(1n, 7n)).toEqual(pos);
      expect(await b.account(2n)).toEqual(acct);
      expect((await b.clearTrade({ tradeId: 3n, buy: 1n, sell: 2n, instrument: 7n, qty: 1n, price: price('1'), tradeDate: 20261125 })).seq).toBe(9n);
    } finally {
      await b.close();
    }
  });
});
});
