// TS SDK benchmarks (issue 6): single-call overhead, batch submit rate, events delivered to JS.
// Run after `npm run build`: `node benches/sdk.mjs` (NOVATE_BENCH_QUICK=1 for a smoke run,
// NOVATE_BENCH_STAGES=fused for the one-thread pipeline, NOVATE_BENCH_COMBINE=false to turn
// off threads.combine, NOVATE_BENCH_PIN=0,1,0 to pin the pipeline's threads,
// NOVATE_BENCH_ONLY=single|batch|events for one part).
// Each figure is the median and p99 of several timed rounds. Single calls: the promise API
// (`await e.checkOrder(...)`, answered through the completion thread, the JS thread free while
// waiting) one at a time, against two peers in the same round: `callSync` (the JS thread waits
// for the answer itself) and the native binding's blocking `call` of a pre-encoded message (no
// JS encoding); then many calls in flight at once (`Promise.all`). Batch: `await
// e.submitBatch(bytes)` of pre-encoded bytes, and `encodeBatch` in JS on its own.
import { createRequire } from 'node:module';
import v8 from 'node:v8';
import vm from 'node:vm';

const require = createRequire(import.meta.url);
const { Engine, encodeBatch, price } = require('../ts/dist/index.js');

const QUICK = !!process.env.NOVATE_BENCH_QUICK;
const ROUNDS = QUICK ? 3 : 7;
const CALLS = QUICK ? 20_000 : 200_000;
const BATCH = QUICK ? 200_000 : 1_000_000;
const EVENTS_TRADES = QUICK ? 100_000 : 500_000;
const ACCOUNTS = 1000n;
// `NOVATE_BENCH_STAGES=fused` runs the engine with one pipeline thread (threads.stages).
const STAGES = process.env.NOVATE_BENCH_STAGES ?? 'split';
// `NOVATE_BENCH_COMBINE=false` turns off threads.combine (waiting threads stepping a fused pipeline).
const COMBINE = process.env.NOVATE_BENCH_COMBINE !== 'false';
// `NOVATE_BENCH_PIN=0,1,0` pins the pipeline's threads (threads.pin: sequencer, state machine,
// egress); unset, nothing is pinned (the default).
// `NOVATE_BENCH_ONLY=single|batch|events` runs that part only.
const runs = (part) => !process.env.NOVATE_BENCH_ONLY || process.env.NOVATE_BENCH_ONLY === part;
const PIN = process.env.NOVATE_BENCH_PIN ? process.env.NOVATE_BENCH_PIN.split(',').map(Number) : [];

// A full garbage collection, run before each timed batch round: the bench's own garbage (the
// million trade objects it encoded) is collected then, not by V8's threads during the round.
v8.setFlagsFromString('--expose-gc');
const collectGarbage = vm.runInNewContext('gc');

const pct = (xs, q) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))];
// Throughputs: the median round and the slowest round (the p99 of a handful of rounds is the max).
const fmtRate = (xs, unit) => `median ${pct(xs, 0.5).toFixed(2)} ${unit}, slowest round ${Math.min(...xs).toFixed(2)} ${unit}`;
const fmt = (xs, unit, scale = 1) => `median ${(pct(xs, 0.5) * scale).toFixed(2)} ${unit}, p99 ${(pct(xs, 0.99) * scale).toFixed(2)} ${unit}`;

function open(extra = {}) {
  const e = Engine.open({
    engine: { accounts_max: 1001, instruments_max: 8, positions_max: 4096, trades_max: 4_000_000, ...extra },
    // prefault: commit the state tables at open (threads.prefault), as in production.
    threads: { stages: STAGES, combine: COMBINE, prefault: true, pin: PIN },
  });
  const setup = [
    { type: 'upsertInstrument', instrument: { id: 1n, multiplier: 1n, marginBps: 500n, settleDays: 2 } },
    { type: 'markPrice', instrument: 1n, price: price('100') },
  ];
  for (let a = 1n; a <= ACCOUNTS; a++) {
    setup.push({ type: 'upsertAccount', account: { id: a } });
    setup.push({ type: 'adjustCollateral', account: a, amount: price('1000000000') });
  }
  return e.submitBatch(setup).then(() => e);
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
if (runs('single')) {
  const e = await open();
  const order = { account: 1n, instrument: 1n, side: 'buy', qty: 1n, price: price('100') };
  const calls = CALLS / 4; // the awaited path is slower per call; keep rounds comparable in time
  const asyncCall = [];
  const sync = [];
  const raw = [];
  const concurrent = [];
  const native = e.inner;
  const msg = encodeBatch([{ type: 'checkOrder', order }]);
  for (let r = 0; r < ROUNDS; r++) {
    let t = process.hrtime.bigint();
    for (let i = 0; i < calls; i++) await e.checkOrder(order);
    asyncCall.push(Number(process.hrtime.bigint() - t) / calls);
    t = process.hrtime.bigint();
    for (let i = 0; i < calls; i++) e.callSync({ type: 'checkOrder', order });
    sync.push(Number(process.hrtime.bigint() - t) / calls);
    t = process.hrtime.bigint();
    for (let i = 0; i < calls; i++) native.call(msg);
    raw.push(Number(process.hrtime.bigint() - t) / calls);
    t = process.hrtime.bigint();
    const ps = new Array(CALLS);
    for (let i = 0; i < CALLS; i++) ps[i] = e.checkOrder(order);
    await Promise.all(ps);
    concurrent.push(CALLS / (Number(process.hrtime.bigint() - t) / 1e9) / 1e6);
  }
  console.log(`single call (checkOrder, submit -> ack, in-process), one at a time: await e.checkOrder ${fmt(asyncCall, 'us', 1e-3)}; peers: callSync (blocks the JS thread) ${fmt(sync, 'us', 1e-3)}, native blocking call of a pre-encoded message ${fmt(raw, 'us', 1e-3)}`);
  console.log(`concurrent calls (${CALLS} checkOrder promises in flight, Promise.all): ${fmtRate(concurrent, 'M calls/s')}`);
  e.closeSync();
}

// 2. Batch submit: many SBE-encoded trades in one call, every one acknowledged. encodeBatch
// is timed on its own first; then the same bytes go to a fresh engine per round (trades_max
// bounds the trades remembered), each round after a full GC and a pause for V8's background
// sweeping, so that the JS garbage of encoding is not collected during a timed round.
if (runs('batch')) {
  const enc = [];
  let bytes;
  for (let r = 0; r < ROUNDS; r++) {
    const cmds = trades(BATCH, 1n);
    const t = process.hrtime.bigint();
    bytes = encodeBatch(cmds);
    enc.push(Number(process.hrtime.bigint() - t) / 1e9);
  }
  // Round 0 warms up and is reported on its own: the process's first batch decodes into fresh
  // memory (the binding keeps that vector for the next batches: completion::batch_vec).
  const sub = [];
  for (let r = 0; r <= ROUNDS; r++) {
    const e = await open();
    collectGarbage();
    await new Promise((resolve) => setTimeout(resolve, 100));
    const t = process.hrtime.bigint();
    const res = await e.submitBatch(bytes);
    sub.push(Number(process.hrtime.bigint() - t) / 1e9);
    if (res.accepted !== BATCH) throw new Error(`accepted ${res.accepted} of ${BATCH}`);
    e.closeSync();
  }
  const [first, ...rate] = sub.map((s) => BATCH / s / 1e6);
  const encRate = enc.map((s) => BATCH / s / 1e6);
  console.log(`batch submit (${BATCH} trades per call, pre-encoded): ${fmtRate(rate, 'M trades/s')} (goal >= 5: ${pct(rate, 0.5) >= 5 ? 'met' : 'missed'}; rounds ${rate.map((x) => x.toFixed(2)).join(' ')}; the process's first batch, untimed warm-up: ${first.toFixed(2)}); encodeBatch in JS: ${fmtRate(encRate, 'M trades/s')}`);
}

// 3. Events delivered to JS: buffered events drained through `for await`, decoded.
if (runs('events')) {
  const rates = [];
  for (let r = 0; r < ROUNDS; r++) {
    const e = await open({ subscriber_buffer: 1 << 22 });
    const stream = e.events();
    const res = await e.submitBatch(trades(EVENTS_TRADES, 1n));
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
