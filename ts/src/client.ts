// `connect(url)`: a TCP client of a running novated, in TypeScript with the generated codecs.
// Commands go out as SOFH-framed SBE and are pipelined: every call gets its own request id and
// resolves when its Ack or Reject arrives. Queries go out as JSON frames (SOFH encoding 0xF500,
// see crates/engine/src/server.rs) and are answered from the daemon's published views.
import { ClearingCommands } from './clearing-commands';
import { connect as netConnect, type Socket } from 'node:net';
import { encodeCommand, COMMAND_BYTES_MAX, type CommandInput } from './commands';
import { ClosedError, InputError, NovateError } from './errors';
import { decodeMessage, SBE_LE_ENCODING, SOFH_LENGTH, FRAME_LENGTH_MAX, writeSofh } from './wire';
import type {
  AccountSummary,
  Ack,
  Clearing,
  InstrumentSummary,
  Position,
} from './types';

/** SOFH encoding type of the JSON query frames. */
export const JSON_ENCODING = 0xf500;

interface Pending<T> {
  resolve: (v: T) => void;
  reject: (e: Error) => void;
}

type Json = Record<string, unknown>;

function parseUrl(url: string): { host: string; port: number } {
  const m = /^(?:tcp:\/\/)?\[?([^\]]*?)\]?:(\d+)\/?$/.exec(url.trim());
  if (!m) throw new InputError(`not a novated address (tcp://host:port): ${url}`);
  return { host: m[1] || '127.0.0.1', port: Number(m[2]) };
}

/** A connection to novated. */
export class Client extends ClearingCommands implements Clearing {
  private nextRequest = 1n;
  private nextQuery = 1;
  private readonly commands = new Map<bigint, Pending<Ack>>();
  private readonly queries = new Map<string, Pending<Json | null>>();
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
    this.commands.clear();
    this.queries.clear();
    this.socket.unref();
  }

  private inflight(): void {
    if (this.commands.size + this.queries.size === 1) this.socket.ref();
  }

  private settled(): void {
    if (this.commands.size + this.queries.size === 0) this.socket.unref();
  }

  private onData(chunk: Buffer): void {
    const joined = new Uint8Array(this.buf.length + chunk.length);
    joined.set(this.buf);
    joined.set(chunk, this.buf.length);
    let off = 0;
    const view = new DataView(joined.buffer, joined.byteOffset, joined.byteLength);
    while (joined.length - off >= SOFH_LENGTH) {
      const len = view.getUint32(off, false);
      const enc = view.getUint16(off + 4, false);
      if (len < SOFH_LENGTH || len > FRAME_LENGTH_MAX || (enc !== SBE_LE_ENCODING && enc !== JSON_ENCODING)) {
        this.error = new ClosedError(`novated sent a bad frame header (length ${len}, encoding 0x${enc.toString(16)})`);
        this.socket.destroy();
        return;
      }
      if (joined.length - off < len) break;
      const body = joined.subarray(off + SOFH_LENGTH, off + len);
      if (enc === JSON_ENCODING) this.onQueryAnswer(body);
      else this.onAnswer(body);
      off += len;
    }
    this.buf = joined.slice(off);
  }

  private onAnswer(body: Uint8Array): void {
    const { message } = decodeMessage(body);
    const rid = message.template === 'Ack' || message.template === 'Reject' ? message.value.requestId : -1n;
    const p = this.commands.get(rid);
    if (!p) return; // a wire-level reject of something we did not send (request id 0)
    this.commands.delete(rid);
    if (message.template === 'Ack') p.resolve({ seq: message.value.seq });
    else if (message.template === 'Reject') p.reject(new NovateError(message.value.code));
    this.settled();
  }

  private onQueryAnswer(body: Uint8Array): void {
    const a = JSON.parse(new TextDecoder().decode(body)) as { id: string; ok?: Json | null; error?: { code: number } };
    const p = this.queries.get(a.id);
    if (!p) return;
    this.queries.delete(a.id);
    if (a.error) p.reject(new NovateError(a.error.code));
    else p.resolve(a.ok ?? null);
    this.settled();
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

  private query(q: Json): Promise<Json | null> {
    if (this.closed) return Promise.reject(this.error ?? new ClosedError());
    const id = String(this.nextQuery++);
    const text = new TextEncoder().encode(JSON.stringify({ id, ...q }));
    const frame = new Uint8Array(SOFH_LENGTH + text.length);
    const view = new DataView(frame.buffer);
    view.setUint32(0, frame.length, false);
    view.setUint16(4, JSON_ENCODING, false);
    frame.set(text, SOFH_LENGTH);
    return new Promise((resolve, reject) => {
      this.queries.set(id, { resolve, reject });
      this.inflight();
      this.socket.write(frame);
    });
  }

  async position(account: bigint, instrument: bigint): Promise<Position | undefined> {
    const p = await this.query({ q: 'position', account: String(account), instrument: String(instrument) });
    if (!p) return undefined;
    const b = (k: string) => BigInt(p[k] as string);
    return {
      account: b('account'),
      instrument: b('instrument'),
      qty: b('qty'),
      cost: b('cost'),
      realized: b('realized'),
      unrealized: b('unrealized'),
      avgPrice: p.avgPrice == null ? undefined : b('avgPrice'),
    };
  }

  async account(id: bigint): Promise<AccountSummary> {
    const a = (await this.query({ q: 'account', account: String(id) })) as Json;
    const b = (k: string) => BigInt(a[k] as string);
    return {
      id: b('id'),
      maxPosition: b('maxPosition'),
      maxNotional: b('maxNotional'),
      maxLoss: b('maxLoss'),
      suspended: a.suspended as boolean,
      collateral: b('collateral'),
      notional: b('notional'),
      unrealized: b('unrealized'),
      realized: b('realized'),
      equity: b('equity'),
      margin: b('margin'),
      excess: b('excess'),
      positions: a.positions as number,
    };
  }

  async instrument(id: bigint): Promise<InstrumentSummary | undefined> {
    const i = await this.query({ q: 'instrument', instrument: String(id) });
    if (!i) return undefined;
    const b = (k: string) => BigInt(i[k] as string);
    return {
      id: b('id'),
      multiplier: b('multiplier'),
      marginBps: b('marginBps'),
      settleDays: i.settleDays as number,
      mark: b('mark'),
      lastPrice: b('lastPrice'),
      holders: i.holders as number,
    };
  }

  /** The state hash after every command sent before this call was applied. */
  async stateHash(): Promise<bigint> {
    const h = (await this.query({ q: 'hash' })) as Json;
    return BigInt(h.hash as string);
  }

  /** Wait for every answer in flight, then close the connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    const all = [...this.commands.values(), ...this.queries.values()] as Pending<unknown>[];
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
