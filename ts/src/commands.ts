// Encoding SDK arguments as SBE commands (the generated codecs in ./wire), for the native binding
// (one entry point for every command) and for the TCP client.
import {
  BooleanType,
  EncodeError,
  Side,
  encodeAdjustCollateral,
  encodeBustTrade,
  encodeCheckOrder,
  encodeClearTrade,
  encodeClearTradeBatch,
  encodeMarkPrice,
  encodeSettlementPrice,
  encodeUpsertAccount,
  encodeUpsertInstrument,
  GROUP_ENTRIES_MAX,
  type ClearTradeBatchTrades,
} from './wire';
import { InputError } from './errors';
import type { AccountInput, InstrumentInput, OrderInput, TradeInput } from './types';

/** A command as the SDK names it. */
export type CommandInput =
  | { type: 'upsertInstrument'; instrument: InstrumentInput }
  | { type: 'upsertAccount'; account: AccountInput }
  | { type: 'adjustCollateral'; account: bigint; amount: bigint }
  | { type: 'checkOrder'; order: OrderInput }
  | { type: 'clearTrade'; trade: TradeInput }
  | { type: 'bustTrade'; tradeId: bigint }
  | { type: 'markPrice'; instrument: bigint; price: bigint }
  | { type: 'settlementPrice'; instrument: bigint; price: bigint };

/** Longest single command message (a ClearTrade is 64 bytes). */
export const COMMAND_BYTES_MAX = 128;

/** An instrument id as the wire's u32, or an `InputError`. */
export function instrumentId(id: bigint): number {
  if (typeof id !== 'bigint') throw new InputError(`instrument id must be a bigint, got ${typeof id}`);
  if (id < 0n || id > 0xffffffffn) throw new InputError(`instrument id ${id} does not fit 32 bits`);
  return Number(id);
}

function wrap<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof EncodeError || e instanceof TypeError) throw new InputError(e.message);
    throw e;
  }
}

/** Encode one command at `offset` of `buf`; returns the bytes written. */
export function encodeCommand(buf: Uint8Array, offset: number, c: CommandInput, requestId = 0n): number {
  return wrap(() => {
    switch (c.type) {
      case 'upsertInstrument':
        return encodeUpsertInstrument(buf, offset, {
          requestId,
          instrumentId: instrumentId(c.instrument.id),
          multiplier: c.instrument.multiplier,
          marginBps: c.instrument.marginBps,
          settleDays: c.instrument.settleDays,
        });
      case 'upsertAccount':
        return encodeUpsertAccount(buf, offset, {
          requestId,
          accountId: c.account.id,
          maxPosition: c.account.maxPosition ?? 0n,
          maxNotional: c.account.maxNotional ?? 0n,
          maxLoss: c.account.maxLoss ?? 0n,
          suspended: c.account.suspended ? BooleanType.True : BooleanType.False,
        });
      case 'adjustCollateral':
        return encodeAdjustCollateral(buf, offset, { requestId, accountId: c.account, amount: c.amount });
      case 'checkOrder':
        return encodeCheckOrder(buf, offset, {
          requestId,
          accountId: c.order.account,
          instrumentId: instrumentId(c.order.instrument),
          side: c.order.side === 'buy' ? Side.Buy : c.order.side === 'sell' ? Side.Sell : (bad(`side ${String(c.order.side)}`) as Side),
          qty: c.order.qty,
          price: c.order.price,
        });
      case 'clearTrade':
        return encodeClearTrade(buf, offset, tradeFields(c.trade, requestId));
      case 'bustTrade':
        return encodeBustTrade(buf, offset, { requestId, tradeId: c.tradeId });
      case 'markPrice':
        return encodeMarkPrice(buf, offset, { requestId, instrumentId: instrumentId(c.instrument), price: c.price });
      case 'settlementPrice':
        return encodeSettlementPrice(buf, offset, { requestId, instrumentId: instrumentId(c.instrument), price: c.price });
    }
    return bad(`unknown command ${JSON.stringify((c as { type: unknown }).type)}`);
  });
}

function bad(msg: string): never {
  throw new InputError(msg);
}

function tradeFields(t: TradeInput, requestId: bigint): ClearTradeBatchTrades {
  return {
    requestId,
    tradeId: t.tradeId,
    buyAccountId: t.buy,
    sellAccountId: t.sell,
    instrumentId: instrumentId(t.instrument),
    qty: t.qty,
    price: t.price,
    tradeDate: t.tradeDate,
  };
}

/**
 * Encode many commands for `submitBatch`: runs of trades become ClearTradeBatch messages of up to
 * 256 entries, other commands single messages. Indexes in the batch result follow `commands`.
 */
export function encodeBatch(commands: readonly CommandInput[]): Uint8Array {
  let buf = new Uint8Array(Math.max(1024, commands.length * 60 + 64));
  let off = 0;
  const room = (n: number) => {
    if (off + n <= buf.length) return;
    const next = new Uint8Array(Math.max(buf.length * 2, off + n));
    next.set(buf.subarray(0, off));
    buf = next;
  };
  let i = 0;
  while (i < commands.length) {
    const c = commands[i];
    if (c.type === 'clearTrade') {
      const trades: ClearTradeBatchTrades[] = [];
      while (i < commands.length && commands[i].type === 'clearTrade' && trades.length < GROUP_ENTRIES_MAX) {
        trades.push(tradeFields((commands[i] as { trade: TradeInput }).trade, BigInt(i)));
        i++;
      }
      room(12 + trades.length * 56);
      off += wrap(() => encodeClearTradeBatch(buf, off, { trades }));
    } else {
      room(COMMAND_BYTES_MAX);
      off += encodeCommand(buf, off, c, BigInt(i));
      i++;
    }
  }
  return buf.subarray(0, off);
}
