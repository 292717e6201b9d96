// `Engine.open(config)`: the engine in this process, through the napi binding.
import { ClearingCommands } from './clearing-commands';
import { encodeBatch, encodeCommand, instrumentId, COMMAND_BYTES_MAX, type CommandInput } from './commands';
import { toToml, type EngineConfig } from './config';
import { BusyError, ClosedError, NovateError, fromNative } from './errors';
import { EventStream, NativeEventSource, filterAccount, kindsMask } from './events';
import { native } from './native';
import type {
  AccountSummary,
  Ack,
  BatchResult,
  Clearing,
  EventFilter,
  InstrumentSummary,
  Position,
} from './types';
import type { NativeEngine } from '../native/index';

/**
 * A completion as read from the binding's numbers (see `encode_completion` in
 * bindings/src/lib.rs): `seq` for an ack, snapshot or hash (with `hash`), or a batch result.
 */
interface Completion {
  seq: number;
  hash?: bigint;
  batch?: BatchResult;
}

/** A promise waiting for its completion (see `Engine.complete`). */
interface Waiting {
  resolve: (value: never) => void;
  reject: (e: Error) => void;
  map: (c: Completion) => unknown;
}

const ackOf = (c: Completion): Ack => ({ seq: BigInt(c.seq) });

const FAILED = [
  () => new ClosedError(),
  () => new BusyError(),
  () => new Error('novate: no answer within the timeout'),
  () => new Error('novate: the journal failed; the engine accepts no more commands'),
];

/**
 * An engine running inside this process.
 *
 * The promise-returning calls never block the JS thread: a command is encoded under a ticket
 * and the call returns; the commands of one synchronous run of JS go to the binding together
 * (one native call, at the next microtask), which hands them to the engine's ingress (or queues
 * them behind a full window). The binding's completion thread waits for the answers (including
 * an fsync wait) and delivers them in batches, in log order, to `complete`, which settles the
 * promises. While any promise is pending the engine keeps Node alive; idle, it does not. The
 * `*Sync` methods block.
 */
export class Engine extends ClearingCommands implements Clearing {
  private readonly scratch = new Uint8Array(COMMAND_BYTES_MAX);
  /** Commands encoded since the last flush: `outCount` messages in `out[0, outLen)`. */
  private out = new Uint8Array(64 * COMMAND_BYTES_MAX);
  private outLen = 0;
  private outFirst = 0;
  private outCount = 0;
  private flushQueued = false;
  private streams = new Set<EventStream>();
  private closed = false;
  private readonly waiting = new Map<number, Waiting>();
  private nextTicket = 1;
  private alive = false;
  private inner!: NativeEngine;

  private constructor() {
    super();
  }

  /**
   * Start an engine: `config` is the TOML text of docs/CONFIG.md or the same structure as an
   * object. Throws `ConfigError` naming the bad key. With a `data_dir`, recovers what is there.
   */
  static open(config?: EngineConfig | string): Engine {
    const e = new Engine();
    try {
      e.inner = native().NativeEngine.open(toToml(config), (done) => e.complete(done));
    } catch (x) {
      throw fromNative(x);
    }
    return e;
  }

  /**
   * Settle the promises of completed work (called by the binding on the JS thread, in log
   * order): `done` holds `ticket, kind, ...` records, see `encode_completion` in the binding.
   */
  private complete(done: Float64Array): void {
    let i = 0;
    while (i < done.length) {
      const ticket = done[i];
      const kind = done[i + 1];
      const seq = done[i + 2];
      let c: Completion | undefined;
      let err: Error | undefined;
      switch (kind) {
        case 0: // ack
        case 3: // snapshot
          c = { seq };
          i += 3;
          break;
        case 1: // reject
          err = new NovateError(done[i + 3]);
          i += 4;
          break;
        case 2: // hash
          c = { seq, hash: (BigInt(done[i + 3]) << 32n) | BigInt(done[i + 4]) };
          i += 5;
          break;
        case 4: {
          const n = done[i + 6];
          const rejects: BatchResult['rejects'] = [];
          for (let k = 0; k < n; k++) rejects.push({ index: done[i + 7 + 2 * k], code: done[i + 8 + 2 * k] });
          c = { seq: done[i + 4], batch: { accepted: done[i + 2], rejected: done[i + 3], lastSeq: BigInt(done[i + 4]), rejects } };
          i += 7 + 2 * n;
          break;
        }
        default: // 5: failed
          err = (FAILED[done[i + 2]] ?? FAILED[0])();
          i += 3;
      }
      const w = this.waiting.get(ticket);
      if (!w) continue;
      this.waiting.delete(ticket);
      if (err) w.reject(err);
      else {
        let v: unknown;
        try {
          v = w.map(c as Completion);
        } catch (e) {
          w.reject(e as Error);
          continue;
        }
        w.resolve(v as never);
      }
    }
    this.releaseIfIdle();
  }

  /**
   * Nothing pending: stop keeping Node alive. Once closing, the native side is busy with (and
   * borrowed by) the shutdown, which releases the callback itself.
   */
  private releaseIfIdle(): void {
    if (this.waiting.size === 0 && this.alive && !this.closed) {
      this.alive = false;
      this.inner.keepAlive(false);
    }
  }

  /**
   * A promise for `ticket`, settled by `complete`. The caller submits it (in this turn of the
   * event loop) and then calls `holdIfBusy`.
   */
  private wait<T>(ticket: number, map: (c: Completion) => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(ticket, { resolve: resolve as (v: never) => void, reject, map });
    });
  }

  /** Work is pending after a submit: keep Node alive until it completes. */
  private holdIfBusy(): void {
    if (this.waiting.size > 0 && !this.alive && !this.closed) {
      this.alive = true;
      this.inner.keepAlive(true);
    }
  }

  /** Hand work to the binding under a fresh ticket (after the commands encoded before it). */
  private enqueue<T>(send: (ticket: number) => void, map: (c: Completion) => T): Promise<T> {
    if (this.closed) return Promise.reject(new ClosedError());
    this.flushOut();
    const ticket = this.nextTicket++;
    try {
      send(ticket);
    } catch (e) {
      return Promise.reject(fromNative(e));
    }
    const p = this.wait(ticket, map);
    this.holdIfBusy();
    return p;
  }

  /** Submit the commands encoded since the last flush, in one native call. */
  private readonly flushOut = (): void => {
    this.flushQueued = false;
    if (this.outCount === 0) return;
    const first = this.outFirst;
    const count = this.outCount;
    const bytes = this.out.subarray(0, this.outLen);
    this.outCount = 0;
    this.outLen = 0;
    // No earlier work pending (every completion before was received): the binding may step a
    // combining pipeline here and hand back what completed at once (threads.combine).
    const now = this.waiting.size === count;
    try {
      const done = this.inner.submit(first, bytes, now); // decodes the bytes before it returns
      if (done) this.complete(done);
      this.holdIfBusy();
    } catch (e) {
      // Only our own encoder wrote these bytes, so this is not expected; fail them, typed.
      const err = fromNative(e);
      for (let t = first; t < first + count; t++) {
        const w = this.waiting.get(t);
        if (w) {
          this.waiting.delete(t);
          w.reject(err);
        }
      }
      this.releaseIfIdle();
    }
  };

  /** Commands submitted and not yet answered (promises pending). */
  get inFlight(): number {
    return this.waiting.size;
  }

  /** What start-up obtained (pinning, memory) and recovered, one line each. */
  startReport(): string[] {
    return this.native((n) => n.startReport());
  }

  private native<T>(f: (n: NativeEngine) => T): T {
    if (this.closed) throw new ClosedError();
    try {
      return f(this.inner);
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** Submit one command and wait for its answer (synchronously, in this thread). */
  callSync(command: CommandInput): Ack {
    const n = encodeCommand(this.scratch, 0, command);
    const r = this.native((x) => x.call(this.scratch.subarray(0, n)));
    if (r < 0) throw new NovateError(-r);
    return { seq: BigInt(r) };
  }

  protected submit(command: CommandInput): Promise<Ack> {
    if (this.closed) return Promise.reject(new ClosedError());
    if (this.out.length - this.outLen < COMMAND_BYTES_MAX) {
      const grown = new Uint8Array(this.out.length * 2);
      grown.set(this.out.subarray(0, this.outLen));
      this.out = grown;
    }
    let n: number;
    try {
      n = encodeCommand(this.out, this.outLen, command);
    } catch (e) {
      return Promise.reject(e);
    }
    const ticket = this.nextTicket++;
    if (this.outCount === 0) this.outFirst = ticket;
    this.outCount++;
    this.outLen += n;
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.flushOut);
    }
    return this.wait(ticket, ackOf);
  }

  /**
   * Submit many commands in one call: SBE-encoded back to back (see `encodeBatch`), or as
   * `CommandInput`s (encoded here). The engine keeps its window full; the promise resolves when
   * every one is answered, with the rejections by index. Malformed bytes reject with an
   * `InputError` naming the byte offset, and nothing is submitted.
   */
  submitBatch(messages: Uint8Array | readonly CommandInput[]): Promise<BatchResult> {
    let bytes: Uint8Array;
    try {
      bytes = messages instanceof Uint8Array ? messages : encodeBatch(messages);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.enqueue((t) => this.inner.submitBatch(t, bytes), batchOf);
  }

  positionSync(account: bigint, instrument: bigint): Position | undefined {
    const p = this.native((n) => n.position(account, instrumentId(instrument)));
    if (!p) return undefined;
    return {
      account: p.account,
      instrument: BigInt(p.instrument),
      qty: p.qty,
      cost: p.cost,
      realized: p.realized,
      unrealized: p.unrealized,
      avgPrice: p.avgPrice ?? undefined,
    };
  }

  accountSync(id: bigint): AccountSummary {
    // The binding's object has the summary's fields as they are, and the view's seq.
    const { seq: _seq, ...summary } = this.native((n) => n.account(id));
    return summary;
  }

  instrumentSync(id: bigint): InstrumentSummary | undefined {
    if (id < 0n || id > 0xffffffffn) return undefined;
    const i = this.native((n) => n.instrument(instrumentId(id)));
    if (!i) return undefined;
    return {
      id: BigInt(i.id),
      multiplier: i.multiplier,
      marginBps: i.marginBps,
      settleDays: i.settleDays,
      mark: i.mark,
      lastPrice: i.lastPrice,
      holders: i.holders,
    };
  }

  position(account: bigint, instrument: bigint): Promise<Position | undefined> {
    return settle(() => this.positionSync(account, instrument));
  }
  account(id: bigint): Promise<AccountSummary> {
    return settle(() => this.accountSync(id));
  }
  instrument(id: bigint): Promise<InstrumentSummary | undefined> {
    return settle(() => this.instrumentSync(id));
  }

  /** The state hash after every command answered so far, and the seq it covers. */
  stateHashAt(): { seq: bigint; hash: bigint } {
    const h = this.native((n) => n.stateHash());
    return { seq: BigInt(h.seq), hash: h.hash };
  }
  stateHash(): Promise<bigint> {
    return this.enqueue(
      (t) => this.inner.requestHash(t),
      (c) => c.hash as bigint,
    );
  }

  /** Take a snapshot now (with a data_dir: LMDB); returns the seq it covers. */
  snapshot(): bigint {
    return BigInt(this.native((n) => n.snapshot()));
  }

  /** Events from now on, as an `AsyncIterable`; `break` unsubscribes. */
  events(filter?: EventFilter): EventStream {
    const account = filterAccount(filter);
    const kinds = kindsMask(filter);
    const source = new NativeEventSource((notify) => this.native((n) => n.subscribe(kinds, account, notify)));
    const s = new EventStream(source);
    this.streams.add(s);
    return s;
  }

  /** Graceful shutdown: every accepted command answered, journal committed, snapshot taken. */
  closeSync(): { seq: bigint; hash: bigint } | undefined {
    if (this.closed) return undefined;
    this.flushOut(); // commands called before close are submitted (and answered) first
    for (const s of this.streams) s.close();
    this.streams.clear();
    const r = this.native((n) => n.close());
    this.closed = true;
    return r ? { seq: BigInt(r.seq), hash: r.hash } : undefined;
  }
  /**
   * Graceful shutdown without blocking the JS thread (the drain, commit and snapshot run on a
   * worker thread). Commands called before it are answered; calls after it reject with
   * `ClosedError`.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.flushOut();
    for (const s of this.streams) s.close();
    this.streams.clear();
    this.closed = true;
    try {
      await this.inner.closeAsync();
    } catch (e) {
      throw fromNative(e);
    }
  }
}

function batchOf(c: Completion): BatchResult {
  if (!c.batch) throw new Error('novate: a batch completed without its result');
  return c.batch;
}

function settle<T>(f: () => T): Promise<T> {
  try {
    return Promise.resolve(f());
  } catch (e) {
    return Promise.reject(e);
  }
}
