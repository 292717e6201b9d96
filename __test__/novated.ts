// Start and stop a real novated for the tests (the binary from crates/engine).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = `${ROOT}target/debug/novated`;

/**
 * Build novated (a no-op after `cargo test --workspace` built it). Developers share a machine
 * and serialise builds with `flock /tmp/novate-cargo.lock`: take it if it is free; if it is held
 * (typically by the `flock ... npm test` that runs this very suite), build without it instead
 * of waiting for ourselves forever.
 */
export function buildNovated(): string {
  const cargo = ['cargo', 'build', '-q', '-p', 'novate-engine', '--bin', 'novated'];
  const opts = { cwd: ROOT, stdio: 'inherit' as const, timeout: 600_000 };
  const BUSY = 75;
  try {
    execFileSync('flock', ['-n', '-E', String(BUSY), '/tmp/novate-cargo.lock', ...cargo], opts);
  } catch (e) {
    const status = (e as { status?: number }).status;
    const noFlock = (e as { code?: string }).code === 'ENOENT';
    if (status !== BUSY && !noFlock) throw e;
    execFileSync(cargo[0], cargo.slice(1), opts);
  }
  if (!existsSync(BIN)) throw new Error(`no ${BIN}`);
  return BIN;
}

export interface Daemon {
  url: string;
  proc: ChildProcess;
  /** SIGTERM, then wait for the exit; returns the exit code and stderr. */
  stop(): Promise<{ code: number | null; stderr: string }>;
}

/** Start novated on a free loopback port; resolves once it listens. */
export function startNovated(args: string[] = []): Promise<Daemon> {
  const proc = spawn(BIN, ['--listen', '127.0.0.1:0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr += String(d)));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`novated did not start: ${stderr}`));
    }, 30_000);
    let out = '';
    proc.stdout!.on('data', (d) => {
      out += String(d);
      const m = /novated listening on (\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({
          url: `tcp://${m[1]}`,
          proc,
          stop: async () => {
            proc.kill('SIGTERM');
            const kill = setTimeout(() => proc.kill('SIGKILL'), 30_000);
            const code = await exited;
            clearTimeout(kill);
            return { code, stderr };
          },
        });
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`novated exited with ${code}: ${stderr}`));
    });
  });
}
