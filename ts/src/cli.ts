#!/usr/bin/env node
// The `novate` command line: demo, serve, replay, query, doctor.
import { readFileSync } from 'node:fs';
import { connect } from './client';
import { formatFixed } from './price';
import { native } from './native';

const USAGE = `usage: novate <command> [options]

  demo   [--trades N] [--accounts N] [--instruments N] [--data-dir DIR] [--fsync] [--fused]
         the embedded engine on a synthetic feed: throughput, latency, top accounts by margin
         (--fused: sequencer, state machine and egress on one thread)
  serve  [--config FILE] [--listen HOST:PORT] [--data-dir DIR]
         run novated in this process (SIGTERM/SIGINT: drain, snapshot, exit)
  replay <data-dir> [--config FILE]
         rebuild the state of a data dir read-only and print its state hash
  query  <tcp://host:port> position <account> <instrument> | account <id> | instrument <id> | hash
         ask a running novated
  doctor the host's latency-relevant settings and what is missing`;

function flags(args: string[]): Map<string, string | true> {
  const m = new Map<string, string | true>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (!a.startsWith('--')) continue;
    const next = args[i + 1];
    if (next === undefined || next.startsWith('--')) m.set(a.slice(2), true);
    else m.set(a.slice(2), args[++i]);
  }
  return m;
}

function configText(f: Map<string, string | true>): string {
  const path = f.get('config');
  let text = typeof path === 'string' ? readFileSync(path, 'utf8') : '';
  const extra: string[] = [];
  const dir = f.get('data-dir');
  if (typeof dir === 'string') extra.push(`data_dir = ${JSON.stringify(dir)}`);
  // Top-level keys must precede the first [section].
  if (extra.length) text = extra.join('\n') + '\n' + text;
  const listen = f.get('listen');
  if (typeof listen === 'string') text += `\n[net]\nlisten = ${JSON.stringify(listen)}\n`;
  return text;
}

function num(f: Map<string, string | true>, k: string): number | undefined {
  const v = f.get(k);
  if (v === undefined) return undefined;
  const n = Number(String(v).replace(/_/g, ''));
  if (!Number.isFinite(n)) throw new Error(`--${k} needs a number`);
  return n;
}

function show(v: unknown): string {
  return JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? x.toString() : x), 2);
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const f = flags(rest);
  switch (cmd) {
    case 'demo': {
      native().runDemo({
        trades: num(f, 'trades'),
        accounts: num(f, 'accounts'),
        instruments: num(f, 'instruments'),
        latencySamples: num(f, 'latency-samples'),
        dataDir: typeof f.get('data-dir') === 'string' ? (f.get('data-dir') as string) : undefined,
        fsync: f.get('fsync') === true,
        fused: f.get('fused') === true,
        progress: process.stderr.isTTY === true || f.get('progress') === true,
      });
      return 0;
    }
    case 'serve': {
      const server = native().NativeServer.start(configText(f));
      for (const line of server.startReport()) console.error(`novated: ${line}`);
      console.log(`novated listening on ${server.address()}`);
      const keepAlive = setInterval(() => {}, 1 << 30);
      await new Promise<void>((resolve) => {
        const stop = (sig: string) => {
          console.error(`novated: ${sig}: draining`);
          const r = server.stop();
          if (r) console.error(`novated: stopped at seq ${r.seq} state hash ${r.hash.toString(16).padStart(16, '0')}`);
          clearInterval(keepAlive);
          resolve();
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
      return 0;
    }
    case 'replay': {
      const dir = rest.find((a) => !a.startsWith('--') && a !== f.get('config'));
      if (!dir) throw new Error('replay needs a data dir');
      const r = native().replay(dir, configText(new Map([...f].filter(([k]) => k === 'config'))));
      console.log(`state hash ${r.hash.toString(16).padStart(16, '0')} at seq ${r.seq}`);
      if (r.capacityRejects > 0) {
        console.error(
          `novate replay: ${r.capacityRejects} command(s) refused for capacity in this replay; if the engine ran with ` +
            'larger limits it accepted them, and its state hash differs: pass its --config',
        );
      }
      return 0;
    }
    case 'query': {
      const [url, what, a, b] = rest;
      if (!url || !what) throw new Error('query needs a url and what to ask');
      const c = await connect(url);
      try {
        if (what === 'position') console.log(show(await c.position(BigInt(a), BigInt(b))));
        else if (what === 'account') {
          const acct = await c.account(BigInt(a));
          console.log(show({ ...acct, equityText: formatFixed(acct.equity), marginText: formatFixed(acct.margin), excessText: formatFixed(acct.excess) }));
        } else if (what === 'instrument') console.log(show(await c.instrument(BigInt(a))));
        else if (what === 'hash') console.log((await c.stateHash()).toString(16).padStart(16, '0'));
        else throw new Error(`unknown query ${what}`);
      } finally {
        await c.close();
      }
      return 0;
    }
    case 'doctor':
      console.log(native().doctor());
      return 0;
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      console.log(USAGE);
      return cmd === undefined ? 2 : 0;
    default:
      console.error(`novate: unknown command ${cmd}\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    console.error(`novate: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    process.exitCode = 1;
  },
);
