// `connect(url)`: a TCP client of a running novated, in TypeScript with the generated codecs.
// Commands go out as SOFH-framed SBE and are pipelined: every call gets its own request id and
// resolves when its Ack or Reject arrives. Queries are SBE too (QueryPosition, QueryAccount, ...,
// see crates/engine/src/server.rs), answered by reports from the daemon's published views.
// `submitBatch` writes many SBE command frames in one write, each with its own request id, and
// sums their answers. `events()` subscribes on the same connection (so it sees the events of
// every command sent after it); the daemon streams matching events in batches.
import { ClearingCommands } from './clearing-commands';
import { connect as netConnect, type Socket } from 'node:net';
import { encodeBatch, encodeCommand, instrumentId, COMMAND_BYTES_MAX, type CommandInput } from './commands';
import { ClosedError, InputError, NovateError } from './errors';
import { EventStream, Wakeup, filterAccount, kindsMask, type EventSource } from './events';
import {
  decodeMessage,
  encodeMessage,
  BooleanType,
  DecodeError,
  SubscriptionState,
  type Message,
  GROUP_HEADER_LENGTH,
  HEADER_LENGTH,
  SBE_LE_ENCODING,
  SOFH_LENGTH,
  FRAME_LENGTH_MAX,
  writeSofh,
} from './wire';
import type {
  AccountSummary,
  Ack,
  BatchResult,
  Clearing,
  EventFilter,
  InstrumentSummary,
  Position,
} from './types';

/** Events a remote subscription buffers in this process before it counts as overflowed. */
export const REMOTE_EVENTS_BUFFER_MAX = 1 << 16;

/** A batch in flight: request ids `first .. first + count - 1`, in batch order. */
interface BatchPending {
  first: bigint;
  count: number;
  answered: number;
  result: BatchResult;
  resolve: (r: BatchResult) => void;
  reject: (e: Error) => void;
}

/** The reading end of a subscription on the daemon: events as SBE messages, in order. */
class RemoteEvents implements EventSource {
  private queue: Uint8Array[] = [];
  private head = 0;
  /** 0 open, 1 overflowed (after the queued events), 2 ended. */
  private end = 0;
  private failure: Error | undefined;
  private readonly wakeup = new Wakeup();

  constructor(private readonly onClose: () => void) {}

  private notify(): void {
    this.wakeup.notify();
  }

  push(message: Uint8Array): void {
    if (this.end !== 0) return;
    if (this.queue.length - this.head >= REMOTE_EVENTS_BUFFER_MAX) {
      // The consumer fell behind by more than we hold: a clear cut, not unbounded memory.
      this.end = 1;
      this.onClose();
      this.notify();
      return;
    }
    this.queue.push(message);
    this.notify();
  }

  /** The daemon ended the subscription: 1 overflow, 2 closed. */
  ended(status: number): void {
    if (this.end === 0) this.end = status;
    this.notify();
  }

  fail(e: Error): void {
    this.failure = e;
    this.end = 2;
    this.notify();
  }

  /** Resolves when an event or the end arrives (the socket's data wakes the consumer at once). */
  waitForData(ms: number): Promise<void> {
    return this.wakeup.wait(ms);
  }

  poll(max: number): { events: Uint8Array; count: number; status: number } {
    if (this.failure) {
      const e = this.failure;
      this.failure = undefined;
      throw e;
    }
    const n = Math.min(max, this.queue.length - this.head);
    let bytes = 0;
    for (let i = 0; i < n; i++) bytes += this.queue[this.head + i].length;
    const events = new Uint8Array(bytes);
    let off = 0;
    for (let i = 0; i < n; i++) {
      events.set(this.queue[this.head + i], off);
      off += this.queue[this.head + i].length;
    }
    this.head += n;
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    }
    const drained = this.queue.length === 0;
    return { events, count: n, status: drained ? this.end : 0 };
  }

  close(): void {
    if (this.end === 0) this.onClose();
    this.end = 2;
    this.queue = [];
    this.head = 0;
  }
}

interface Pending<T> {
  resolve: (v: T) => void;
  reject: (e: Error) => void;
}

/** A query or subscription request, without its request id (the client assigns it). */
type RequestInput =
  | { template: 'QueryPosition'; value: { accountId: bigint; instrumentId: number } }
  | { template: 'QueryAccount'; value: { accountId: bigint } }
  | { template: 'QueryInstrument'; value: { instrumentId: number } }
  | { template: 'QueryStateHash'; value: Record<string, never> }
  | { template: 'Subscribe'; value: { accountId: bigint; kinds: number } }
  | { template: 'Unsubscribe'; value: { subscription: bigint } };

/** Bytes of the longest framed request (Subscribe: 6 + 8 + 18). */
const REQUEST_FRAME_MAX = 64;

function parseUrl(url: string): { host: string; port: number } {
  const m = /^(?:tcp:\/\/)?\[?([^\]]*?)\]?:(\d+)\/?$/.exec(url.trim());
  if (!m) throw new InputError(`not a novated address (tcp://host:port): ${url}`);
  return { host: m[1] || '127.0.0.1', port: Number(m[2]) };
}

/** A connection to novated. */
export class Client extends ClearingCommands implements Clearing {
  private nextRequest = 1n;
  private readonly commands = new Map<bigint, Pending<Ack>>();
  /** Queries and Subscribes in flight, by request id: settled by their report or Reject. */
  private readonly queries = new Map<bigint, Pending<Message>>();
  private readonly batches: BatchPending[] = [];
  /** Live subscriptions, by the request id of their Subscribe. */
  private readonly subs = new Map<bigint, RemoteEvents>();
  /** The subscription the next `eventsLeft` SBE frames belong to (after a batch header). */
  private eventsFor: RemoteEvents | undefined;
  private eventsLeft = 0;
  private buf = new Uint8Array(0);
  private closed = false;
  private error: Error | undefined;
  private readonly ended: Promise<void>;

  constructor(private readonly socket: Socket) {
    super();
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.ended = new Promise((resolve) => {
      socket.on('close', () => {
        this.closed = true;
        this.failAll(this.error ?? new ClosedError('the connection to novated closed'));
        resolve();
      });
    });
    socket.on('error', (e) => {
      this.error = new ClosedError(`connection to novated failed: ${e.message}`);
    });
    // Idle, the connection does not keep the process alive; a request in flight does.
    socket.unref();
  }

  private failAll(e: Error): void {
    for (const p of this.commands.values()) p.reject(e);
    for (const p of this.queries.values()) p.reject(e);
    for (const b of this.batches) b.reject(e);
    this.commands.clear();
    this.queries.clear();
    this.batches.length = 0;
    // Subscriptions end (like the in-process engine's at shutdown): every event received was
    // delivered.
    for (const s of this.subs.values()) s.ended(2);
    this.subs.clear();
    this.socket.unref();
  }

  private pendingCount(): number {
    return this.commands.size + this.queries.size + this.batches.length;
  }

  // Subscriptions do not count: an idle subscription never keeps the process alive.
  private inflight(): void {
    if (this.pendingCount() === 1) this.socket.ref();
  }

  private settled(): void {
    if (this.pendingCount() === 0) this.socket.unref();
  }

  // A frame the SDK cannot read (a newer schema, a corrupt answer) ends the connection with a
  // typed error for every pending call; an exception must not escape the socket's 'data'
  // listener, where it would be uncaught and end the process.
  private onData(chunk: Buffer): void {
    try {
      this.readFrames(chunk);
    } catch (e) {
      this.buf = new Uint8Array(0);
      this.error = new ClosedError(`novated sent a frame the SDK cannot decode: ${(e as Error).message}`);
      this.socket.destroy();
    }
  }

  private readFrames(chunk: Buffer): void {
    const joined = new Uint8Array(this.buf.length + chunk.length);
    joined.set(this.buf);
    joined.set(chunk, this.buf.length);
    let off = 0;
    const view = new DataView(joined.buffer, joined.byteOffset, joined.byteLength);
    while (joined.length - off >= SOFH_LENGTH) {
      const len = view.getUint32(off, false);
      const enc = view.getUint16(off + 4, false);
      if (len < SOFH_LENGTH || len > FRAME_LENGTH_MAX || enc !== SBE_LE_ENCODING) {
        this.error = new ClosedError(`novated sent a bad frame header (length ${len}, encoding 0x${enc.toString(16)})`);
        this.socket.destroy();
        return;
      }
      if (joined.length - off < len) break;
      const body = joined.subarray(off + SOFH_LENGTH, off + len);
      if (this.eventsLeft > 0) {
        this.eventsLeft--;
        this.eventsFor?.push(body);
      } else this.onAnswer(body);
      off += len;
    }
    this.buf = joined.slice(off);
  }

  private onAnswer(body: Uint8Array): void {
    const { message } = decodeMessage(body);
    switch (message.template) {
      case 'Ack':
      case 'Reject':
        break;
      case 'SubscriptionStatus':
        this.onSubscriptionStatus(message.value.subscription, message.value.state, message.value.events);
        return;
      case 'PositionReport':
      case 'AccountReport':
      case 'InstrumentReport':
      case 'StateHashReport':
        this.settleQuery(message.value.requestId, message);
        return;
      default:
        return; // nothing else is sent to members
    }
    const rid = message.value.requestId;
    const p = this.commands.get(rid);
    if (!p) {
      if (this.queries.has(rid)) this.settleQuery(rid, message);
      else this.onBatchAnswer(rid, message);
      return; // else: a wire-level reject of something we did not send (request id 0)
    }
    this.commands.delete(rid);
    if (message.template === 'Ack') p.resolve({ seq: message.value.seq });
    else p.reject(new NovateError(message.value.code));
    this.settled();
  }

  /** A report (or a Reject) for the query or Subscribe with request id `rid`. */
  private settleQuery(rid: bigint, message: Message): void {
    const p = this.queries.get(rid);
    if (!p) return;
    this.queries.delete(rid);
    if (message.template === 'Reject') p.reject(new NovateError(message.value.code));
    else p.resolve(message);
    this.settled();
  }

  private onSubscriptionStatus(id: bigint, state: SubscriptionState, events: number): void {
    const s = this.subs.get(id);
    switch (state) {
      case SubscriptionState.Subscribed:
        this.settleQuery(id, { template: 'SubscriptionStatus', value: { subscription: id, events, state } });
        break;
      case SubscriptionState.Events:
        this.eventsFor = s; // undefined after an unsubscribe: its events are skipped
        this.eventsLeft = events;
        break;
      case SubscriptionState.Overflow:
      case SubscriptionState.Closed:
        this.subs.delete(id);
        s?.ended(state === SubscriptionState.Overflow ? 1 : 2);
        break;
      default:
        break; // Unsubscribed: this side forgot it already
    }
  }

  private onBatchAnswer(
    rid: bigint,
    message: { template: 'Ack'; value: { seq: bigint } } | { template: 'Reject'; value: { code: number } },
  ): void {
    // Answers come in order, so the batch is nearly always the first one.
    const k = this.batches.findIndex((b) => rid >= b.first && rid < b.first + BigInt(b.count));
    if (k < 0) return;
    const b = this.batches[k];
    const r = b.result;
    if (message.template === 'Ack') {
      r.accepted++;
      if (message.value.seq > r.lastSeq) r.lastSeq = message.value.seq;
    } else {
      r.rejected++;
      r.rejects.push({ index: Number(rid - b.first), code: message.value.code });
    }
    if (++b.answered === b.count) {
      this.batches.splice(k, 1);
      r.rejects.sort((x, y) => x.index - y.index);
      b.resolve(r);
      this.settled();
    }
  }

  protected submit(command: CommandInput): Promise<Ack> {
    if (this.closed) return Promise.reject(this.error ?? new ClosedError());
    const rid = this.nextRequest++;
    const frame = new Uint8Array(SOFH_LENGTH + COMMAND_BYTES_MAX);
    let n: number;
    try {
      n = encodeCommand(frame, SOFH_LENGTH, command, rid);
    } catch (e) {
      return Promise.reject(e);
    }
    writeSofh(frame, 0, n);
    return new Promise<Ack>((resolve, reject) => {
      this.commands.set(rid, { resolve, reject });
      this.inflight();
      this.socket.write(frame.subarray(0, SOFH_LENGTH + n));
    });
  }

  /**
   * Submit many commands in one write: SBE-encoded back to back (see `encodeBatch`), or as
   * `CommandInput`s. Each command (each entry of a ClearTradeBatch) gets its own request id and
   * answer; the promise resolves when all are answered, with the rejections by index in the
   * batch. `lastSeq` is the highest acknowledged seq (a Reject carries no seq on the wire).
   * Malformed bytes reject with an `InputError` naming the byte offset; nothing is sent.
   */
  submitBatch(messages: Uint8Array | readonly CommandInput[]): Promise<BatchResult> {
    if (this.closed) return Promise.reject(this.error ?? new ClosedError());
    let bytes: Uint8Array;
    let framed: { frames: Uint8Array; count: number };
    const first = this.nextRequest;
    try {
      bytes = messages instanceof Uint8Array ? messages : encodeBatch(messages);
      framed = frameBatch(bytes, first);
    } catch (e) {
      return Promise.reject(e);
    }
    const result: BatchResult = { accepted: 0, rejected: 0, lastSeq: 0n, rejects: [] };
    if (framed.count === 0) return Promise.resolve(result);
    this.nextRequest += BigInt(framed.count);
    return new Promise<BatchResult>((resolve, reject) => {
      this.batches.push({ first, count: framed.count, answered: 0, result, resolve, reject });
      this.inflight();
      this.socket.write(framed.frames);
    });
  }

  /**
   * Events from now on, as an `AsyncIterable` (`break` unsubscribes). The subscription rides on
   * this connection: it sees the events of every command sent after this call. It never keeps
   * the process alive on its own. A consumer that falls behind (the daemon's
   * `subscriber_buffer`, or REMOTE_EVENTS_BUFFER_MAX events held here) gets an
   * `EventsOverflowError` after the last delivered event.
   */
  events(filter?: EventFilter): EventStream {
    const kinds = kindsMask(filter);
    const accountId = filterAccount(filter) ?? 0n; // 0: every account, on the wire
    const id = this.nextRequest;
    const src = new RemoteEvents(() => {
      this.subs.delete(id);
      if (!this.closed) this.send({ template: 'Unsubscribe', value: { subscription: id } });
    });
    if (this.closed) src.fail(this.error ?? new ClosedError());
    else {
      this.subs.set(id, src);
      this.query({ template: 'Subscribe', value: { accountId, kinds } }).catch((e: Error) => {
        this.subs.delete(id);
        src.fail(e);
      });
    }
    return new EventStream(src);
  }

  /** Frame and write one request with the next request id; returns that id. */
  private send(r: RequestInput): bigint {
    const requestId = this.nextRequest++;
    const frame = new Uint8Array(REQUEST_FRAME_MAX);
    const n = encodeMessage(frame, SOFH_LENGTH, { template: r.template, value: { requestId, ...r.value } } as Message);
    writeSofh(frame, 0, n);
    this.socket.write(frame.subarray(0, SOFH_LENGTH + n));
    return requestId;
  }

  /** Send a query; resolves with its report (rejects with the daemon's Reject). */
  private query(r: RequestInput): Promise<Message> {
    if (this.closed) return Promise.reject(this.error ?? new ClosedError());
    return new Promise((resolve, reject) => {
      const rid = this.send(r);
      this.queries.set(rid, { resolve, reject });
      this.inflight();
    });
  }

  async position(account: bigint, instrument: bigint): Promise<Position | undefined> {
    const value = { accountId: u64(account, 'account'), instrumentId: instrumentId(instrument) };
    const m = await this.query({ template: 'QueryPosition', value });
    if (m.template !== 'PositionReport') throw new ClosedError(`novated answered ${m.template}`);
    const p = m.value;
    if (p.found !== BooleanType.True) return undefined;
    return {
      account: p.accountId,
      instrument: BigInt(p.instrumentId),
      qty: p.qty,
      cost: p.cost,
      realized: p.realized,
      unrealized: p.unrealized,
      avgPrice: p.hasAvgPrice === BooleanType.True ? p.avgPrice : undefined,
    };
  }

  async account(id: bigint): Promise<AccountSummary> {
    const m = await this.query({ template: 'QueryAccount', value: { accountId: u64(id, 'account') } });
    if (m.template !== 'AccountReport') throw new ClosedError(`novated answered ${m.template}`);
    const a = m.value;
    return {
      id: a.accountId,
      maxPosition: a.maxPosition,
      maxNotional: a.maxNotional,
      maxLoss: a.maxLoss,
      suspended: a.suspended === BooleanType.True,
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

  async instrument(id: bigint): Promise<InstrumentSummary | undefined> {
    const m = await this.query({ template: 'QueryInstrument', value: { instrumentId: instrumentId(id) } });
    if (m.template !== 'InstrumentReport') throw new ClosedError(`novated answered ${m.template}`);
    const i = m.value;
    if (i.found !== BooleanType.True) return undefined;
    return {
      id: BigInt(i.instrumentId),
      multiplier: i.multiplier,
      marginBps: i.marginBps,
      settleDays: i.settleDays,
      mark: i.mark,
      lastPrice: i.lastPrice,
      holders: i.holders,
    };
  }

  /**
   * The state hash after every command sent before this call was applied. It resolves after
   * every event of those commands has reached this connection's subscriptions.
   */
  async stateHash(): Promise<bigint> {
    const m = await this.query({ template: 'QueryStateHash', value: {} });
    if (m.template !== 'StateHashReport') throw new ClosedError(`novated answered ${m.template}`);
    return m.value.hash;
  }

  /** Wait for every answer in flight, then close the connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    const all = [...this.commands.values(), ...this.queries.values(), ...this.batches] as Pending<unknown>[];
    const pending = all.map(
      (p) =>
        new Promise<void>((r) => {
          const { resolve, reject } = p;
          p.resolve = (v: unknown) => {
            resolve(v);
            r();
          };
          p.reject = (e: Error) => {
            reject(e);
            r();
          };
        }),
    );
    await Promise.all(pending);
    this.closed = true;
    this.socket.end();
    await this.ended;
  }
}

/**
 * SOFH-frame every SBE command message in `bytes` into one buffer, giving the commands (each
 * ClearTradeBatch entry counts as one) the request ids `first`, `first + 1`, ... in order.
 */
function frameBatch(bytes: Uint8Array, first: bigint): { frames: Uint8Array; count: number } {
  const spans: [number, number][] = [];
  let off = 0;
  while (off < bytes.length) {
    let length: number;
    let template: string;
    try {
      const d = decodeMessage(bytes, off);
      length = d.length;
      template = d.message.template;
    } catch (e) {
      if (e instanceof DecodeError) throw new InputError(`${e.message} (message at byte ${off})`);
      throw e;
    }
    if (!COMMAND_TEMPLATES.has(template)) throw new InputError(`${template} is not a command (message at byte ${off})`);
    if (SOFH_LENGTH + length > FRAME_LENGTH_MAX) throw new InputError(`message at byte ${off} is too long for a frame`);
    spans.push([off, length]);
    off += length;
  }
  const frames = new Uint8Array(bytes.length + spans.length * SOFH_LENGTH);
  const view = new DataView(frames.buffer);
  let at = 0;
  let rid = first;
  for (const [from, length] of spans) {
    writeSofh(frames, at, length);
    const m = at + SOFH_LENGTH;
    frames.set(bytes.subarray(from, from + length), m);
    const blockLength = view.getUint16(m, true);
    const templateId = view.getUint16(m + 2, true);
    if (templateId === CLEAR_TRADE_BATCH) {
      const g = m + HEADER_LENGTH + blockLength;
      const entry = view.getUint16(g, true);
      const n = view.getUint16(g + 2, true);
      for (let i = 0; i < n; i++) view.setBigUint64(g + GROUP_HEADER_LENGTH + i * entry, rid++, true);
    } else {
      view.setBigUint64(m + HEADER_LENGTH, rid++, true); // requestId: first field of every command
    }
    at += SOFH_LENGTH + length;
  }
  return { frames, count: Number(rid - first) };
}

const CLEAR_TRADE_BATCH = 9;
const COMMAND_TEMPLATES = new Set([
  'UpsertInstrument',
  'UpsertAccount',
  'AdjustCollateral',
  'CheckOrder',
  'ClearTrade',
  'BustTrade',
  'MarkPrice',
  'SettlementPrice',
  'ClearTradeBatch',
]);

/** `x` as an unsigned 64-bit id, or an `InputError` naming `what`. */
function u64(x: bigint, what: string): bigint {
  if (typeof x !== 'bigint' || x < 0n || x >= 1n << 64n) throw new InputError(`${what} ${String(x)} is not an unsigned 64-bit bigint`);
  return x;
}

/** Connect to a running novated (`tcp://127.0.0.1:7301` or `host:port`). */
export function connect(url: string): Promise<Client> {
  let addr: { host: string; port: number };
  try {
    addr = parseUrl(url);
  } catch (e) {
    return Promise.reject(e);
  }
  return new Promise((resolve, reject) => {
    const s = netConnect(addr.port, addr.host);
    const onError = (e: Error) => reject(new ClosedError(`cannot connect to novated at ${url}: ${e.message}`));
    s.once('error', onError);
    s.once('connect', () => {
      s.off('error', onError);
      resolve(new Client(s));
    });
  });
}
