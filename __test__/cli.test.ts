// The `novate` CLI (ts/dist/cli.js, built by `npm run build:ts`).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { Engine, connect, price } from '../ts/src';
import { setup } from './clearing';

const CLI = fileURLToPath(new URL('../ts/dist/cli.js', import.meta.url));
const run = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120_000 });

describe('novate CLI', () => {
  it('doctor prints the host checks', () => {
    const r = run(['doctor']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/cpus online\s+\d+/);
  });

  it('demo runs a small feed and prints the summary', () => {
    const r = run(['demo', '--trades', '20000', '--accounts', '200', '--instruments', '20', '--latency-samples', '200']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/throughput\s+\d+ commands/);
    expect(r.stdout).toMatch(/latency .* p50 [\d.]+ us/);
    expect(r.stdout).toMatch(/top accounts by initial margin/);
    expect(r.stdout).toMatch(/state hash\s+[0-9a-f]{16}/);
  });

  it('demo --fused (one pipeline thread) ends in the same state as the split pipeline', () => {
    const args = ['demo', '--trades', '5000', '--accounts', '100', '--instruments', '10', '--latency-samples', '10'];
    const hash = (out: string) => /state hash\s+([0-9a-f]{16}) at seq (\d+)/.exec(out)?.slice(1);
    const split = run(args);
    const fused = run([...args, '--fused']);
    expect([split.status, fused.status]).toEqual([0, 0]);
    expect(hash(split.stdout)).toBeDefined();
    expect(hash(fused.stdout)).toEqual(hash(split.stdout));
  });

  it('replay rebuilds a data dir read-only to the engine state hash', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'novate-cli-'));
    try {
      const e = Engine.open({ data_dir: dir });
      await setup(e);
      await e.clearTrade({ tradeId: 1n, buy: 1n, sell: 2n, instrument: 7n, qty: 3n, price: price('10'), tradeDate: 20261125 });
      const hash = await e.stateHash();
      await e.close();
      const r = run(['replay', dir]);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toContain(`state hash ${hash.toString(16).padStart(16, '0')} at seq 6`);
      expect(r.stderr).not.toContain('refused for capacity');
      // Into smaller tables than the engine's: the hash differs, and the replay says why.
      const small = join(dir, 'small.toml');
      writeFileSync(small, '[engine]\naccounts_max = 1\n');
      const s = run(['replay', dir, '--config', small]);
      expect(s.status, s.stderr).toBe(0);
      expect(s.stdout).not.toContain(hash.toString(16).padStart(16, '0'));
      expect(s.stderr).toMatch(/[1-9]\d* command\(s\) refused for capacity/);
      expect(run(['replay', join(dir, 'nope')]).status).toBe(1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('serve runs novated in-process; query asks it; SIGTERM stops it cleanly', async () => {
    const proc = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((r) => proc.on('exit', (c) => r(c)));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        const t = setTimeout(() => reject(new Error('serve did not start')), 30_000);
        proc.stdout!.on('data', (d) => {
          out += String(d);
          const m = /listening on (\S+)/.exec(out);
          if (m) {
            clearTimeout(t);
            resolve(`tcp://${m[1]}`);
          }
        });
      });
      const c = await connect(url);
      await setup(c);
      const hash = await c.stateHash();
      await c.close();
      const q = spawnSync(process.execPath, [CLI, 'query', url, 'hash'], { encoding: 'utf8', timeout: 30_000 });
      expect(q.stdout.trim()).toBe(hash.toString(16).padStart(16, '0'));
      const a = spawnSync(process.execPath, [CLI, 'query', url, 'account', '1'], { encoding: 'utf8', timeout: 30_000 });
      expect(JSON.parse(a.stdout).collateral).toBe(price('1000000').toString());
    } finally {
      proc.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  });

  it('unknown commands and no command are usage errors', () => {
    expect(run(['frobnicate']).status).toBe(2);
    expect(run([]).stdout).toMatch(/usage: novate/);
  });
});
