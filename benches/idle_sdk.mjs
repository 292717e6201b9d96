// What an idle in-process engine with an idle event subscription costs: wake-ups per second of
// each thread of this process (from /proc/self/task) and its CPU share while nothing happens.
//
//   npm run build && node benches/idle_sdk.mjs [SECONDS]
//
// The peer: the same engine without the subscription (NOVATE_IDLE_NO_SUB=1).
import { createRequire } from 'node:module';
import fs from 'node:fs';

const require = createRequire(import.meta.url);
const { Engine } = require('../ts/dist/index.js');
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
await stream?.return();
e.closeSync();
