// Typed errors of the SDK. A rejection carries core's numbered code (Reject::code(), the wire's
// RejectCode): numbers never change once released (docs/SEMANTICS.md "Result codes").
import { RejectCode } from './wire';

/** The name of a result code (`'Duplicate'` for 9). */
export type RejectName = keyof typeof RejectCode;

/** A command or query the engine rejected; it changed nothing. */
export class NovateError extends Error {
  /** The numbered code: 1..=999 are core's `Reject::code()`, 1000.. are wire-level. */
  readonly code: number;
  /** The code's name, e.g. `'Duplicate'`. */
  readonly codeName: RejectName;
  constructor(code: number) {
    const codeName = (RejectCode[code] ?? 'MalformedMessage') as RejectName;
    super(`${codeName} (${code})`);
    this.name = 'NovateError';
    this.code = code;
    this.codeName = codeName;
  }
}

/** The configuration is invalid: `key` names it (`engine.ingress_ring`), `reason` says why. */
export class ConfigError extends Error {
  readonly key: string;
  readonly reason: string;
  constructor(key: string, reason: string) {
    super(key ? `invalid configuration: ${key}: ${reason}` : `invalid configuration: ${reason}`);
    this.name = 'ConfigError';
    this.key = key;
    this.reason = reason;
  }
}

/** Back-pressure: the engine's ingress ring or this client's window is full; retry later. */
export class BusyError extends Error {
  constructor(message = 'the engine is busy') {
    super(message);
    this.name = 'BusyError';
  }
}

/** The engine or connection is closed. */
export class ClosedError extends Error {
  constructor(message = 'the engine is closed') {
    super(message);
    this.name = 'ClosedError';
  }
}

/** A value does not fit its field (e.g. an id above 2^64 - 1) or an argument is malformed. */
export class InputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InputError';
  }
}

/** An event subscription fell `subscriber_buffer` events behind: every event before the cut was delivered, none after. */
export class EventsOverflowError extends Error {
  constructor() {
    super('event subscription overflowed: the consumer fell behind; events after this point were not delivered');
    this.name = 'EventsOverflowError';
  }
}

/** Turn an error thrown by the native binding into a typed SDK error. */
export function fromNative(e: unknown): Error {
  const msg = e instanceof Error ? e.message : String(e);
  const m = /^NOVATE_([A-Z]+):(.*)$/s.exec(msg);
  if (!m) return e instanceof Error ? e : new Error(msg);
  const [, kind, rest] = m;
  switch (kind) {
    case 'REJECT':
      return new NovateError(Number(rest.split(':')[0]));
    case 'CONFIG': {
      const i = rest.indexOf(':');
      return new ConfigError(rest.slice(0, i), rest.slice(i + 1));
    }
    case 'BUSY':
      return new BusyError(rest);
    case 'CLOSED':
      return new ClosedError(rest);
    case 'RANGE':
    case 'DECODE':
      return new InputError(rest);
    default:
      return new Error(rest);
  }
}
