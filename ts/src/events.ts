// Event subscriptions as `AsyncIterable<Event>`: the native side buffers events per subscription
// (bounded: `subscriber_buffer`), JS drains them in batches of up to POLL_EVENTS_MAX with one
// native call and decodes the SBE messages. While nothing is buffered it waits until its source
// says events arrived (the engine's notify for `Engine.open`, the socket for `connect`), with an
// unref'd guard timer: an idle subscription neither polls nor keeps the process alive. Breaking out of
// `for await` (or `return()`) unsubscribes; a consumer that falls too far behind gets an
// `EventsOverflowError` after the last delivered event instead of unbounded memory growth.
import { decodeTaggedInto, type Tagged } from './wire';
import { EventsOverflowError, InputError } from './errors';
import { EVENT_TYPES, type Event, type EventFilter } from './types';

/** Events fetched per native call. */
export const POLL_EVENTS_MAX = 8192;
/** Longest wait between polls of an idle subscription whose source cannot wake it (ms). */
export const POLL_IDLE_MAX_MS = 10;

/** What a native subscription offers (see bindings/src/lib.rs `NativeSubscription`). */
export interface EventSource {
  poll(max: number): { events: Uint8Array; count: number; status: number };
  close(): void;
  /**
   * Optional: resolve when events may have arrived, or after `ms` at the latest (with a timer
   * that does not keep the process alive). Without it the stream polls with a back-off.
   */
  waitForData?(ms: number): Promise<void>;
}

/** The filter as the native side takes it: a bit per event kind, 0 = all. */
export function kindsMask(filter: EventFilter | undefined): number {
  let mask = 0;
  for (const t of filter?.types ?? []) {
    const k = EVENT_TYPES.indexOf(t);
    if (k < 0) throw new TypeError(`unknown event type ${String(t)}`);
    mask |= 1 << k;
  }
  return mask;
}

/** The account of an event filter, checked: a positive unsigned 64-bit bigint, or undefined. */
export function filterAccount(filter: EventFilter | undefined): bigint | undefined {
  const a = filter?.account;
  if (a === undefined) return undefined;
  if (typeof a !== 'bigint' || a <= 0n || a >= 1n << 64n) {
    throw new InputError(`account ${String(a)} is not a positive unsigned 64-bit bigint`);
  }
  return a;
}

/** Decode SBE event messages back to back, each straight into its tagged event object. */
export function decodeEvents(bytes: Uint8Array, out: Event[]): void {
  let off = 0;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // An Event is the Tagged form of an event template; the engine sends only those.
  const tagged = out as unknown as Tagged[];
  while (off < bytes.length) off += decodeTaggedInto(view, off, tagged);
}

/**
 * The longest wait of an idle subscription whose source wakes it (`waitForData`): only a
 * guard, since the source resolves the wait as soon as an event or the end arrives.
 */
export const WAKE_IDLE_MAX_MS = 1000;

/**
 * The wait of an `EventSource` that knows when data arrives: `wait` resolves at the next
 * `notify`, or after `max(ms, WAKE_IDLE_MAX_MS)` on an unref'd timer (a subscription never keeps
 * the process alive).
 */
export class Wakeup {
  private wake?: () => void;

  /** Data (or the end) arrived: resolve the pending wait, if any. */
  notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        if (this.wake === done) this.wake = undefined;
        resolve();
      }, Math.max(ms, WAKE_IDLE_MAX_MS));
      t.unref?.();
      const done = () => {
        clearTimeout(t);
        resolve();
      };
      this.wake = done;
    });
  }
}

/** What the binding's subscription offers (bindings/src/lib.rs `NativeSubscription`). */
export interface NativeSource {
  poll(max: number): { events: Uint8Array; count: number; status: number };
  close(): void;
  /** False: nothing to read now, and the subscription's notify callback will be called once there is. */
  arm(): boolean;
}

/**
 * An in-process subscription as an `EventSource`: `waitForData` sleeps until the binding's
 * notify callback (given to `subscribe`) says events arrived ([`Wakeup`]), so an idle
 * `for await` neither polls nor keeps the process alive.
 */
export class NativeEventSource implements EventSource {
  private native?: NativeSource;
  private readonly wakeup = new Wakeup();

  /** `subscribe(notify)` makes the native subscription, given the callback to wire. */
  constructor(subscribe: (notify: () => void) => NativeSource) {
    this.native = subscribe(() => this.wakeup.notify());
  }

  poll(max: number): { events: Uint8Array; count: number; status: number } {
    if (!this.native) return { events: new Uint8Array(0), count: 0, status: 2 };
    return this.native.poll(max);
  }

  close(): void {
    this.native?.close();
    this.native = undefined;
    this.wakeup.notify();
  }

  waitForData(ms: number): Promise<void> {
    if (!this.native || this.native.arm()) return Promise.resolve();
    return this.wakeup.wait(ms);
  }
}

const sleep = (ms: number) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    // An idle subscription must not keep the process alive.
    t.unref?.();
  });

/** An `AsyncIterable` over a native subscription. */
export class EventStream implements AsyncIterableIterator<Event> {
  private queue: Event[] = [];
  private head = 0;
  private status = 0;
  private done = false;

  constructor(private readonly source: EventSource) {}

  [Symbol.asyncIterator](): this {
    return this;
  }

  private fill(): void {
    const p = this.source.poll(POLL_EVENTS_MAX);
    if (p.count > 0) {
      this.queue = [];
      this.head = 0;
      decodeEvents(p.events, this.queue);
    }
    this.status = p.status;
  }

  async next(): Promise<IteratorResult<Event>> {
    let idle = 0;
    for (;;) {
      if (this.done) return { done: true, value: undefined };
      if (this.head < this.queue.length) {
        const value = this.queue[this.head++];
        return { done: false, value };
      }
      this.fill();
      if (this.head < this.queue.length) continue;
      if (this.status === 1) {
        this.close();
        throw new EventsOverflowError();
      }
      if (this.status === 2) {
        this.close();
        return { done: true, value: undefined };
      }
      // Nothing buffered: back off 0, 1, 2, 4 .. POLL_IDLE_MAX_MS ms.
      await (this.source.waitForData ? this.source.waitForData(idle) : sleep(idle));
      idle = Math.min(POLL_IDLE_MAX_MS, idle === 0 ? 1 : idle * 2);
    }
  }

  /** Called by `break` in `for await`: unsubscribes. */
  async return(): Promise<IteratorResult<Event>> {
    this.close();
    return { done: true, value: undefined };
  }

  /** Unsubscribe now. */
  close(): void {
    if (this.done) return;
    this.done = true;
    this.queue = [];
    this.source.close();
  }
}
