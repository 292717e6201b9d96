import type { CommandInput } from './commands';
import type { AccountInput, Ack, InstrumentInput, OrderInput, TradeInput } from './types';

/**
 * The command half of `Clearing`, written once for every transport: each method builds a
 * `CommandInput` and hands it to the transport's `submit` (in-process `Engine`, TCP `Client`).
 */
export abstract class ClearingCommands {
  protected abstract submit(command: CommandInput): Promise<Ack>;

  upsertInstrument(instrument: InstrumentInput): Promise<Ack> {
    return this.submit({ type: 'upsertInstrument', instrument });
  }
  upsertAccount(account: AccountInput): Promise<Ack> {
    return this.submit({ type: 'upsertAccount', account });
  }
  /** Deposit (amount > 0) or withdraw (amount < 0) collateral. */
  adjustCollateral(account: bigint, amount: bigint): Promise<Ack> {
    return this.submit({ type: 'adjustCollateral', account, amount });
  }
  /** Pre-trade risk check; changes nothing. Rejects with a `NovateError` naming the failed check. */
  checkOrder(order: OrderInput): Promise<Ack> {
    return this.submit({ type: 'checkOrder', order });
  }
  clearTrade(trade: TradeInput): Promise<Ack> {
    return this.submit({ type: 'clearTrade', trade });
  }
  bustTrade(tradeId: bigint): Promise<Ack> {
    return this.submit({ type: 'bustTrade', tradeId });
  }
  markPrice(instrument: bigint, price: bigint): Promise<Ack> {
    return this.submit({ type: 'markPrice', instrument, price });
  }
  settlementPrice(instrument: bigint, price: bigint): Promise<Ack> {
    return this.submit({ type: 'settlementPrice', instrument, price });
  }
}
