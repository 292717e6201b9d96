// `connect(url)` against a novated started by the test on a free loopback port.
import { connect as netConnect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClosedError, InputError, connect, price } from '../ts/src';
import { clearingSuite, setup } from './clearing';
import { buildNovated, startNovated, type Daemon } from './novated';

describe('connect(url)', () => {
  beforeAll(() => {
    buildNovated();
  }, 600_000);

  const daemons: Daemon[] = [];
  afterAll(async () => {
    for (const d of daemons) await d.stop();
  });

  // Each test gets its own daemon: a fresh, empty engine.
  clearingSuite(async () => {
    const d = await startNovated();
    daemons.push(d);
    return connect(d.url);
  });

  it('pipelines many requests on one connection, each answered once', async () => {
    const d = await startNovated();
    daemons.push(d);
    const c = await connect(d.url);
    try {
      await setup(c);
      const acks = await Promise.all(
        Array.from({ length: 2000 }, (_, i) =>
          c.clearTrade({ tradeId: BigInt(i + 1), buy: 1n, sell: 2n, instrument: 7n, qty: 1n, price: price('100'), tradeDate: 20261125 }),
        ),
      );
      const seqs = acks.map((a) => a.seq);
      expect(new Set(seqs).size).toBe(2000);
      expect(seqs[0]).toBe(6n);
      expect(seqs[1999]).toBe(2005n);
      expect((await c.position(1n, 7n))?.qty).toBe(2000n);
      // Another connection sees the same state.
      const c2 = await connect(d.url);
      expect(await c2.stateHash()).toBe(await c.stateHash());
      await c2.close();
    } finally {
      await c.close();
    }
  });

  it('bad addresses and a daemon that goes away are typed errors', async () => {
    await expect(connect('nonsense')).rejects.toBeInstanceOf(InputError);
    // A port nobody listens on.
    const free = await new Promise<number>((r) => {
      const s = netConnect(1, '127.0.0.1');
      s.on('error', () => r(1));
    });
    await expect(connect(`tcp://127.0.0.1:${free}`)).rejects.toBeInstanceOf(ClosedError);
    const d = await startNovated();
    const c = await connect(d.url);
    await setup(c);
    const { code } = await d.stop();
    expect(code).toBe(0);
    await expect(c.upsertAccount({ id: 3n })).rejects.toBeInstanceOf(ClosedError);
  });
});
