// `connect(url)` against a novated started by the test on a free loopback port.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type AddressInfo, connect as netConnect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { ClosedError, EventsOverflowError, InputError, NovateError, REMOTE_EVENTS_BUFFER_MAX, connect, price } from '../ts/src';
import { SBE_LE_ENCODING, SOFH_LENGTH } from '../ts/src/wire';
import { clearingSuite, setup } from './clearing';
import { buildNovated, startNovated, type Daemon } from './novated';

describe('connect(url)', () => {
  beforeAll(() => {
    buildNovated();
  }, 600_000);

  const daemons: Daemon[] = [];
  afterAll(async () => {
    await Promise.all(daemons.map((d) => d.stop()));
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

  it('a subscriber the daemon cannot keep up with gets an overflow after its last event', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'novated-cfg-'));
    try {
      writeFileSync(join(dir, 'novated.toml'), '[engine]\nsubscriber_buffer = 16\n');
      const d = await startNovated(['--config', join(dir, 'novated.toml')]);
      daemons.push(d);
      const c = await connect(d.url);
      try {
        const stream = c.events();
        await setup(c);
        const trades = Array.from({ length: 2000 }, (_, i) => ({
          type: 'clearTrade' as const,
          trade: { tradeId: BigInt(i + 1), buy: 1n, sell: 2n, instrument: 7n, qty: 1n, price: price('100'), tradeDate: 20261125 },
        }));
        expect((await c.submitBatch(trades)).accepted).toBe(2000);
        let n = 0;
        let last = 0n;
        await expect(
          (async () => {
            for await (const ev of stream) {
              expect(ev.seq >= last).toBe(true);
              last = ev.seq;
              n++;
            }
          })(),
        ).rejects.toBeInstanceOf(EventsOverflowError);
        expect(n).toBeGreaterThanOrEqual(5); // every event before the cut was delivered
        expect(n).toBeLessThan(5 + 3 * 2000);
        // The connection is fine afterwards.
        expect((await c.markPrice(7n, price('101'))).seq).toBe(2006n);
      } finally {
        await c.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a Subscribe past the connection limit fails its stream with SubscriptionCapacity', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'novated-cfg-'));
    try {
      writeFileSync(join(dir, 'novated.toml'), '[net]\nsubscriptions_per_connection = 1\n');
      const d = await startNovated(['--config', join(dir, 'novated.toml')]);
      daemons.push(d);
      const c = await connect(d.url);
      try {
        const first = c.events();
        const second = c.events();
        const err = await (async () => {
          for await (const _ of second) return undefined;
        })().then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(NovateError);
        expect((err as NovateError).codeName).toBe('SubscriptionCapacity');
        // The first stream works.
        await setup(c);
        for await (const ev of first) {
          expect(ev.type).toBe('InstrumentUpdated');
          break;
        }
      } finally {
        await c.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a consumer that does not read its events is cut off at a bounded buffer, with the signal', async () => {
    const d = await startNovated();
    daemons.push(d);
    const c = await connect(d.url);
    try {
      const stream = c.events({ types: ['TradeCleared', 'PositionChanged'] });
      await setup(c);
      // 3 events per trade: more than the client holds for a consumer that is not reading.
      const n = Math.ceil(REMOTE_EVENTS_BUFFER_MAX / 3) + 1000;
      const trades = Array.from({ length: n }, (_, i) => ({
        type: 'clearTrade' as const,
        trade: { tradeId: BigInt(i + 1), buy: 1n, sell: 2n, instrument: 7n, qty: 1n, price: price('100'), tradeDate: 20261125 },
      }));
      expect((await c.submitBatch(trades)).accepted).toBe(n);
      await c.stateHash(); // every event the daemon sent has arrived
      let got = 0;
      await expect(
        (async () => {
          for await (const _ of stream) got++;
        })(),
      ).rejects.toBeInstanceOf(EventsOverflowError);
      expect(got).toBeGreaterThan(0);
      expect(got).toBeLessThanOrEqual(REMOTE_EVENTS_BUFFER_MAX);
      // The connection goes on; a new subscription works.
      const again = c.events({ types: ['MarkChanged'] });
      await c.markPrice(7n, price('101'));
      expect((await again.next()).value).toMatchObject({ type: 'MarkChanged', instrumentId: 7 });
      again.close();
    } finally {
      await c.close();
    }
  });

  it('an idle subscription does not keep the process alive; a pending batch does', async () => {
    const d = await startNovated();
    daemons.push(d);
    const SDK = fileURLToPath(new URL('../ts/dist/index.js', import.meta.url));
    const r = spawnSync(
      process.execPath,
      [
        '-e',
        `const sdk = require(${JSON.stringify(SDK)});
        (async () => {
          const c = await sdk.connect(${JSON.stringify(d.url)});
          const events = c.events({ types: ['InstrumentUpdated'] });
          c.submitBatch([{ type: 'upsertInstrument', instrument: { id: 3n, multiplier: 1n, marginBps: 0n, settleDays: 1 } }])
            .then((b) => console.log('batch', b.accepted, b.lastSeq))
            // The hash answer follows the event on the connection: the event has been taken.
            .then(() => c.stateHash());
          for await (const ev of events) console.log('event', ev.type, ev.instrumentId);
          console.log('never');
        })();`,
      ],
      { encoding: 'utf8', timeout: 30_000 },
    );
    expect(r.signal).toBeNull(); // exited by itself, not killed by the timeout
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('batch 1 1n');
    expect(r.stdout).toContain('event InstrumentUpdated 3');
    expect(r.stdout).not.toContain('never');
    expect(r.status).toBe(0);
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

  it('a frame the SDK cannot decode fails the pending calls and closes, without an uncaught exception', async () => {
    // A stand-in for a daemon that answers with a message this SDK does not know (a newer
    // schema): a well-formed SOFH frame whose SBE header names template 999.
    const server = createServer((sock) => {
      sock.once('data', () => {
        const frame = new Uint8Array(SOFH_LENGTH + 16);
        const v = new DataView(frame.buffer);
        v.setUint32(0, frame.length, false);
        v.setUint16(4, SBE_LE_ENCODING, false);
        v.setUint16(SOFH_LENGTH, 8, true); // block length
        v.setUint16(SOFH_LENGTH + 2, 999, true); // template id
        v.setUint16(SOFH_LENGTH + 4, 1, true); // schema id
        v.setUint16(SOFH_LENGTH + 6, 1, true); // version
        sock.write(frame);
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    try {
      const c = await connect(`tcp://127.0.0.1:${port}`);
      const err = await c.upsertAccount({ id: 3n }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ClosedError);
      expect((err as Error).message).toMatch(/cannot decode/);
      await expect(c.upsertAccount({ id: 4n })).rejects.toBeInstanceOf(ClosedError);
    } finally {
      server.close();
    }
  });

  it('SIGTERM drains and snapshots; a restart serves the same positions and state hash', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'novated-'));
    try {
      const d1 = await startNovated(['--data-dir', dir]);
      const c1 = await connect(d1.url);
      await setup(c1);
      const trades = Array.from({ length: 300 }, (_, i) =>
        c1.clearTrade({ tradeId: BigInt(i + 1), buy: 1n + BigInt(i % 2), sell: 2n - BigInt(i % 2), instrument: 7n, qty: BigInt(1 + (i % 5)), price: price('100') + BigInt(i), tradeDate: 20261125 }),
      );
      await Promise.all(trades);
      await c1.settlementPrice(7n, price('101.5'));
      const hash = await c1.stateHash();
      const pos = await c1.position(1n, 7n);
      const acct = await c1.account(2n);
      const stopped = await d1.stop();
      expect(stopped.code).toBe(0);
      expect(stopped.stderr).toMatch(/snapshot saved/);
      const d2 = await startNovated(['--data-dir', dir]);
      daemons.push(d2);
      const c2 = await connect(d2.url);
      expect(await c2.stateHash()).toBe(hash);
      expect(await c2.position(1n, 7n)).toEqual(pos);
      expect(await c2.account(2n)).toEqual(acct);
      expect((await c2.markPrice(7n, price('99'))).seq).toBe(307n);
      await c2.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
