// What an idle in-process engine with an idle event subscription costs: wake-ups per second of
// each thread of this process (from /proc/self/task) and its CPU share while nothing happens.
//
//   npm run build && node benches/idle_sdk.mjs [SECONDS]
//
// The peer: the same engine without the subscription (NOVATE_IDLE_NO_SUB=1). Then, with the
// subscription, how long the first event after 200 ms of idleness takes to reach the waiting
// `for await`: from the `clearTrade` call to the event, 20 times (median and max).
import { createRequire } from 'node:module';
import fs from 'node:fs';

const require = createRequire(import.meta.url);
const { Engine, price } = require('../ts/dist/index.js');
const SECONDS = Number(process.argv[2] ?? 3);

const e = Engine.open({ engine: { accounts_max: 100, instruments_max: 8, positions_max: 100, trades_max: 1000 } });
await e.upsertAccount({ id: 1n });
const stream = process.env.NOVATE_IDLE_NO_SUB ? undefined : e.events();
const pending = stream?.next(); // a `for await` waiting for its next event
void pending;

function threads() {
  const out = new Map();
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try {
      const name = fs.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim();
      const status = fs.readFileSync(`/proc/self/task/${tid}/status`, 'utf8');
      out.set(tid, [name, Number(status.match(/^voluntary_ctxt_switches:\s+(\d+)/m)[1])]);
    } catch {
      // the thread ended
    }
  }
  return out;
}

await new Promise((r) => setTimeout(r, 1000));
const before = threads();
const cpu0 = process.cpuUsage();
await new Promise((r) => setTimeout(r, SECONDS * 1000));
const after = threads();
const cpu = process.cpuUsage(cpu0);
const kinds = new Map();
for (const [tid, [name, v]] of after) {
  if (before.has(tid)) kinds.set(name, (kinds.get(name) ?? 0) + v - before.get(tid)[1]);
}
for (const [name, v] of [...kinds].sort()) console.log(`  ${name.padEnd(16)} ${(v / SECONDS).toFixed(0).padStart(6)} wake-ups/s`);
console.log(`engine${stream ? ' with an idle subscription' : ''}: ${(((cpu.user + cpu.system) / 1e6 / SECONDS) * 100).toFixed(2)} % CPU over ${SECONDS} s`);

if (stream) {
  await e.upsertInstrument({ id: 7n, multiplier: 1n, marginBps: 1000n, settleDays: 2 });
  await e.upsertAccount({ id: 2n });
  const mine = e.events({ types: ['TradeCleared'] })[Symbol.asyncIterator]();
  const keepAlive = setInterval(() => {}, 1000); // the subscription alone would not
  const us = [];
  for (let id = 1n; id <= 20n; id++) {
    await new Promise((r) => setTimeout(r, 200));
    const next = mine.next();
    const t0 = process.hrtime.bigint();
    await e.clearTrade({ tradeId: id, buy: 1n, sell: 2n, instrument: 7n, qty: 1n, price: price('100'), tradeDate: 20261125 });
    await next;
    us.push(Number(process.hrtime.bigint() - t0) / 1e3);
  }
  clearInterval(keepAlive);
  us.sort((a, b) => a - b);
  console.log(`first event after 200 ms idle (clearTrade call to event): median ${us[10].toFixed(0)} us, max ${us[19].toFixed(0)} us`);
  await mine.return();
}
await stream?.return();
e.closeSync();
