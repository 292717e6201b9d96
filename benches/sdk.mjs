// TS SDK benchmarks (issue 6): single-call overhead, batch submit rate, events delivered to JS.
// Run after `npm run build`: `node benches/sdk.mjs` (NOVATE_BENCH_QUICK=1 for a smoke run).
// Each figure is the median and p99 of several timed rounds; the peer for the call overhead is
// the same command through the native binding's `call` with a pre-encoded message (no JS
// encoding), and for the batch the bare `submitBatch` of pre-encoded bytes vs encode + submit.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { Engine, encodeBatch, price } = require('../ts/dist/index.js');

const QUICK = !!process.env.NOVATE_BENCH_QUICK;
const ROUNDS = QUICK ? 3 : 7;
const CALLS = QUICK ? 20_000 : 200_000;
const BATCH = QUICK ? 200_000 : 1_000_000;
const EVENTS_TRADES = QUICK ? 100_000 : 500_000;
const ACCOUNTS = 1000n;

const pct = (xs, q) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))];
// Throughputs: the median round and the slowest round (the p99 of a handful of rounds is the max).
const fmtRate = (xs, unit) => `median ${pct(xs, 0.5).toFixed(2)} ${unit}, slowest round ${Math.min(...xs).toFixed(2)} ${unit}`;
const fmt = (xs, unit, scale = 1) => `median ${(pct(xs, 0.5) * scale).toFixed(2)} ${unit}, p99 ${(pct(xs, 0.99) * scale).toFixed(2)} ${unit}`;

function open(extra = {}) {
  const e = Engine.open({
    engine: { accounts_max: 1001, instruments_max: 8, positions_max: 4096, trades_max: 4_000_000, ...extra },
  });
  const setup = [
    { type: 'upsertInstrument', instrument: { id: 1n, multiplier: 1n, marginBps: 500n, settleDays: 2 } },
    { type: 'markPrice', instrument: 1n, price: price('100') },
  ];
  for (let a = 1n; a <= ACCOUNTS; a++) {
    setup.push({ type: 'upsertAccount', account: { id: a } });
    setup.push({ type: 'adjustCollateral', account: a, amount: price('1000000000') });
  }
  e.submitBatch(setup);
  return e;
}

function trades(n, firstId) {
  const out = new Array(n);
  for (let i = 0; i < n; i++) {
    const buy = BigInt(i % 1000) + 1n;
    out[i] = {
      type: 'clearTrade',
      trade: { tradeId: firstId + BigInt(i), buy, sell: (buy % ACCOUNTS) + 1n, instrument: 1n, qty: 1n + BigInt(i % 7), price: price('100'), tradeDate: 20261125 },
    };
  }
  return out;
}

// 1. Single-call overhead: checkOrder (changes nothing) through the SDK, one at a time.
{
  const e = open();
  const order = { account: 1n, instrument: 1n, side: 'buy', qty: 1n, price: price('100') };
  const sdk = [];
  const raw = [];
  const native = e.inner;
  const msg = encodeBatch([{ type: 'checkOrder', order }]);
  for (let r = 0; r < ROUNDS; r++) {
    let t = process.hrtime.bigint();
    for (let i = 0; i < CALLS; i++) e.callSync({ type: 'checkOrder', order });
    sdk.push(Number(process.hrtime.bigint() - t) / CALLS);
    t = process.hrtime.bigint();
    for (let i = 0; i < CALLS; i++) native.call(msg);
    raw.push(Number(process.hrtime.bigint() - t) / CALLS);
  }
  console.log(`single call (checkOrder, submit -> ack, in-process): SDK ${fmt(sdk, 'us', 1e-3)}; native call of a pre-encoded message (peer) ${fmt(raw, 'us', 1e-3)}; JS encoding adds ${((pct(sdk, 0.5) - pct(raw, 0.5)) / 1e3).toFixed(2)} us`);
  e.closeSync();
}

// 2. Batch submit: many SBE-encoded trades in one call, every one acknowledged.
{
  const sub = [];
  const enc = [];
  for (let r = 0; r < ROUNDS; r++) {
    const e = open(); // a fresh engine per round: trades_max bounds the trades remembered
    const cmds = trades(BATCH, 1n);
    let t = process.hrtime.bigint();
    const bytes = encodeBatch(cmds);
    enc.push(Number(process.hrtime.bigint() - t) / 1e9);
    t = process.hrtime.bigint();
    const res = e.submitBatch(bytes);
    sub.push(Number(process.hrtime.bigint() - t) / 1e9);
    if (res.accepted !== BATCH) throw new Error(`accepted ${res.accepted} of ${BATCH}`);
    e.closeSync();
  }
  const rate = sub.map((s) => BATCH / s / 1e6);
  const encRate = enc.map((s) => BATCH / s / 1e6);
  console.log(`batch submit (${BATCH} trades per call, pre-encoded): ${fmtRate(rate, 'M trades/s')} (goal >= 5: ${pct(rate, 0.5) >= 5 ? 'met' : 'missed'}); encodeBatch in JS: ${fmtRate(encRate, 'M trades/s')}`);
}

// 3. Events delivered to JS: buffered events drained through `for await`, decoded.
{
  const rates = [];
  for (let r = 0; r < ROUNDS; r++) {
    const e = open({ subscriber_buffer: 1 << 22 });
    const stream = e.events();
    const res = e.submitBatch(trades(EVENTS_TRADES, 1n));
    if (res.accepted !== EVENTS_TRADES) throw new Error('not all accepted');
    const expected = EVENTS_TRADES * 3; // TradeCleared + 2 x PositionChanged
    let n = 0;
    const t = process.hrtime.bigint();
    for await (const ev of stream) {
      if (ev.seq === 0n) throw new Error('bad event');
      if (++n === expected) break;
    }
    rates.push(n / (Number(process.hrtime.bigint() - t) / 1e9) / 1e6);
    e.closeSync();
  }
  console.log(`events delivered to JS (decoded, for await): ${fmtRate(rates, 'M events/s')} (goal >= 1: ${pct(rates, 0.5) >= 1 ? 'met' : 'missed'})`);
}
