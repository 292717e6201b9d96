// The SDK's public types: one `Clearing` interface for the in-process engine (`Engine.open`) and
// the TCP client of a running novated (`connect`). Money, prices, quantities and ids are bigint.
import type { CommandInput } from './commands';
import type { EventStream } from './events';
import type { Message } from './wire';

/** Create or update an instrument. */
export interface InstrumentInput {
  id: bigint;
  /** Contract multiplier, >= 1. */
  multiplier: bigint;
  /** Initial margin rate in basis points of notional. */
  marginBps: bigint;
  /** Settlement cycle in business days (T+n). */
  settleDays: number;
}

/** Create or update an account; a limit of 0 (the default) means "no limit". */
export interface AccountInput {
  id: bigint;
  maxPosition?: bigint;
  maxNotional?: bigint;
  maxLoss?: bigint;
  suspended?: boolean;
}

export interface OrderInput {
  account: bigint;
  instrument: bigint;
  side: 'buy' | 'sell';
  qty: bigint;
  /** Limit price, fixed point (see `price()`). */
  price: bigint;
}

export interface TradeInput {
  tradeId: bigint;
  buy: bigint;
  sell: bigint;
  instrument: bigint;
  qty: bigint;
  price: bigint;
  /** YYYYMMDD. */
  tradeDate: number;
}

/** The answer to an accepted command: its place in the log. */
export interface Ack {
  seq: bigint;
}

export interface Position {
  account: bigint;
  instrument: bigint;
  qty: bigint;
  cost: bigint;
  realized: bigint;
  /** At the instrument's current mark. */
  unrealized: bigint;
  /** cost / (qty * multiplier), display only; undefined when flat. */
  avgPrice: bigint | undefined;
}

export interface AccountSummary {
  id: bigint;
  maxPosition: bigint;
  maxNotional: bigint;
  maxLoss: bigint;
  suspended: boolean;
  collateral: bigint;
  notional: bigint;
  unrealized: bigint;
  realized: bigint;
  /** collateral + realized + unrealized. */
  equity: bigint;
  /** Initial margin (rate model). */
  margin: bigint;
  /** equity - margin. */
  excess: bigint;
  positions: number;
}

export interface InstrumentSummary {
  id: bigint;
  multiplier: bigint;
  marginBps: bigint;
  settleDays: number;
  /** Last mark or settlement price, else last trade price; 0n when none. */
  mark: bigint;
  lastPrice: bigint;
  holders: number;
}

/** Operations common to the in-process engine and the TCP client. */
export interface Clearing {
  upsertInstrument(instrument: InstrumentInput): Promise<Ack>;
  upsertAccount(account: AccountInput): Promise<Ack>;
  /** Deposit (amount > 0) or withdraw (amount < 0) collateral. */
  adjustCollateral(account: bigint, amount: bigint): Promise<Ack>;
  /** Pre-trade risk check; changes nothing. Rejects with a `NovateError` naming the failed check. */
  checkOrder(order: OrderInput): Promise<Ack>;
  clearTrade(trade: TradeInput): Promise<Ack>;
  bustTrade(tradeId: bigint): Promise<Ack>;
  markPrice(instrument: bigint, price: bigint): Promise<Ack>;
  settlementPrice(instrument: bigint, price: bigint): Promise<Ack>;
  /** The position, or undefined if the account never traded the instrument. */
  position(account: bigint, instrument: bigint): Promise<Position | undefined>;
  /** Rejects with `NovateError` UnknownAccount (2) for an unknown account. */
  account(id: bigint): Promise<AccountSummary>;
  /** The instrument and its mark, or undefined if unknown. */
  instrument(id: bigint): Promise<InstrumentSummary | undefined>;
  /** `state_hash()` of the whole state after every command answered so far. */
  stateHash(): Promise<bigint>;
  /**
   * Many commands in one call: SBE-encoded back to back (`encodeBatch`) or as `CommandInput`s.
   * Resolves when every one is answered, with the rejections by index in the batch.
   */
  submitBatch(messages: Uint8Array | readonly CommandInput[]): Promise<BatchResult>;
  /**
   * Events from now on, as an `AsyncIterable` fed in batches: `break` in `for await` (or
   * `close()`) unsubscribes; a consumer that falls behind gets an `EventsOverflowError` after
   * the last delivered event; an idle subscription never keeps the process alive.
   */
  events(filter?: EventFilter): EventStream;
  close(): Promise<void>;
}

/** Names of the event messages (templates 101..=111). */
export type EventType =
  | 'InstrumentUpdated'
  | 'AccountUpdated'
  | 'CollateralChanged'
  | 'OrderAccepted'
  | 'TradeCleared'
  | 'TradeBusted'
  | 'PositionChanged'
  | 'MarkChanged'
  | 'VariationMargin'
  | 'LimitBreach'
  | 'MarginCall';

/** Event kinds in core's order (bit k of a subscription filter). */
export const EVENT_TYPES: readonly EventType[] = [
  'InstrumentUpdated',
  'AccountUpdated',
  'CollateralChanged',
  'OrderAccepted',
  'TradeCleared',
  'TradeBusted',
  'PositionChanged',
  'MarkChanged',
  'VariationMargin',
  'LimitBreach',
  'MarginCall',
];

/** One event: its type, the seq of the command that produced it, and its fields. */
export type Event = {
  [K in EventType]: { type: K } & Extract<Message, { template: K }>['value'];
}[EventType];

/** Which events a subscription wants. */
export interface EventFilter {
  types?: EventType[];
  account?: bigint;
}

/** The outcome of a batch submission. */
export interface BatchResult {
  accepted: number;
  rejected: number;
  /** Highest seq among the answers (over TCP among the acks: a Reject carries no seq). */
  lastSeq: bigint;
  /** Rejections in batch order: index of the command in the batch and its code. */
  rejects: { index: number; code: number }[];
}
