// Type-level tests of the SDK's public API (vitest typecheck).
import { describe, expectTypeOf, it } from 'vitest';
import {
  Engine,
  NovateError,
  connect,
  price,
  type AccountSummary,
  type Ack,
  type Clearing,
  type Event,
  type EventFilter,
  type EventType,
  type Position,
  type RejectName,
} from '../ts/src';

describe('SDK types', () => {
  it('Engine and the TCP client are both Clearing', () => {
    expectTypeOf<Engine>().toMatchTypeOf<Clearing>();
    expectTypeOf(connect).returns.resolves.toMatchTypeOf<Clearing>();
    // Both transports batch and subscribe through the shared interface.
    expectTypeOf<Clearing['submitBatch']>().returns.resolves.toHaveProperty('rejects');
    expectTypeOf<ReturnType<Clearing['events']>>().toMatchTypeOf<AsyncIterable<Event>>();
    expectTypeOf<Clearing['events']>().parameter(0).toEqualTypeOf<EventFilter | undefined>();
  });

  it('money, prices, quantities and ids are bigint', () => {
    expectTypeOf(price).returns.toEqualTypeOf<bigint>();
    expectTypeOf<Ack['seq']>().toEqualTypeOf<bigint>();
    expectTypeOf<Position['qty']>().toEqualTypeOf<bigint>();
    expectTypeOf<Position['avgPrice']>().toEqualTypeOf<bigint | undefined>();
    expectTypeOf<AccountSummary['equity']>().toEqualTypeOf<bigint>();
    expectTypeOf<Clearing['clearTrade']>().parameter(0).toHaveProperty('tradeId').toEqualTypeOf<bigint>();
    expectTypeOf<Clearing['markPrice']>().parameters.toEqualTypeOf<[bigint, bigint]>();
    // A number where a bigint belongs does not compile.
    // @ts-expect-error qty must be a bigint
    const bad: Parameters<Clearing['checkOrder']>[0] = { account: 1n, instrument: 1n, side: 'buy', qty: 1, price: 1n };
    void bad;
  });

  it('rejections carry a numbered code and its name', () => {
    expectTypeOf<NovateError['code']>().toEqualTypeOf<number>();
    expectTypeOf<NovateError['codeName']>().toEqualTypeOf<RejectName>();
    expectTypeOf<'Duplicate'>().toMatchTypeOf<RejectName>();
    // @ts-expect-error not a result code
    const nope: RejectName = 'NotACode';
    void nope;
  });

  it('events are an AsyncIterable of a union discriminated by type', () => {
    expectTypeOf<ReturnType<Engine['events']>>().toMatchTypeOf<AsyncIterable<Event>>();
    expectTypeOf<Event['type']>().toEqualTypeOf<EventType>();
    const e = {} as Event;
    if (e.type === 'PositionChanged') {
      expectTypeOf(e.qty).toEqualTypeOf<bigint>();
      expectTypeOf(e.seq).toEqualTypeOf<bigint>();
    }
    if (e.type === 'TradeCleared') {
      expectTypeOf(e.tradeId).toEqualTypeOf<bigint>();
      // @ts-expect-error TradeCleared has no qty
      void e.qty;
    }
  });
});
