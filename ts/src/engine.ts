// `Engine.open(config)`: the engine in this process, through the napi binding.
import { ClearingCommands } from './clearing-commands';
import { encodeBatch, encodeCommand, COMMAND_BYTES_MAX, type CommandInput } from './commands';
import { toToml, type EngineConfig } from './config';
import { ClosedError, NovateError, fromNative } from './errors';
import { EventStream, kindsMask } from './events';
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

/** An engine running inside this process. */
export class Engine extends ClearingCommands implements Clearing {
  private readonly scratch = new Uint8Array(COMMAND_BYTES_MAX);
  private streams = new Set<EventStream>();
  private closed = false;

  private constructor(private readonly inner: NativeEngine) {
    super();
  }

  /**
   * Start an engine: `config` is the TOML text of docs/CONFIG.md or the same structure as an
   * object. Throws `ConfigError` naming the bad key. With a `data_dir`, recovers what is there.
   */
  static open(config?: EngineConfig | string): Engine {
    try {
      return new Engine(native().NativeEngine.open(toToml(config)));
    } catch (e) {
      throw fromNative(e);
    }
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
    try {
      return Promise.resolve(this.callSync(command));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * Submit many SBE-encoded commands in one call (see `encodeBatch`), with the whole window in
   * flight; returns when every one is answered.
   */
  submitBatch(messages: Uint8Array | readonly CommandInput[]): BatchResult {
    const bytes = messages instanceof Uint8Array ? messages : encodeBatch(messages);
    const r = this.native((n) => n.submitBatch(bytes));
    const rejects: BatchResult['rejects'] = [];
    for (let i = 0; i < r.rejects.length; i += 2) rejects.push({ index: r.rejects[i], code: r.rejects[i + 1] });
    return { accepted: r.accepted, rejected: r.rejected, lastSeq: BigInt(r.lastSeq), rejects };
  }

  positionSync(account: bigint, instrument: bigint): Position | undefined {
    const p = this.native((n) => n.position(account, Number(instrument)));
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
    const a = this.native((n) => n.account(id));
    return {
      id: a.id,
      maxPosition: a.maxPosition,
      maxNotional: a.maxNotional,
      maxLoss: a.maxLoss,
      suspended: a.suspended,
      collateral: a.collateral,
      notional: a.notional,
      unrealized: a.unrealized,
      realized: a.realized,
      equity: a.equity,
      margin: a.margin,
      excess: a.excess,
      positions: a.positions,
    };
  }

  instrumentSync(id: bigint): InstrumentSummary | undefined {
    if (id < 0n || id > 0xffffffffn) return undefined;
    const i = this.native((n) => n.instrument(Number(id)));
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
    return settle(() => this.stateHashAt().hash);
  }

  /** Take a snapshot now (with a data_dir: LMDB); returns the seq it covers. */
  snapshot(): bigint {
    return BigInt(this.native((n) => n.snapshot()));
  }

  /** Events from now on, as an `AsyncIterable`; `break` unsubscribes. */
  events(filter?: EventFilter): EventStream {
    const sub = this.native((n) => n.subscribe(kindsMask(filter), filter?.account));
    const s = new EventStream(sub);
    this.streams.add(s);
    return s;
  }

  /** Graceful shutdown: every accepted command answered, journal committed, snapshot taken. */
  closeSync(): { seq: bigint; hash: bigint } | undefined {
    if (this.closed) return undefined;
    for (const s of this.streams) s.close();
    this.streams.clear();
    const r = this.native((n) => n.close());
    this.closed = true;
    return r ? { seq: BigInt(r.seq), hash: r.hash } : undefined;
  }
  close(): Promise<void> {
    return settle(() => {
      this.closeSync();
    });
  }
}

function settle<T>(f: () => T): Promise<T> {
  try {
    return Promise.resolve(f());
  } catch (e) {
    return Promise.reject(e);
  }
}
