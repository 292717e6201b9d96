// Handles that must not keep the process alive on their own.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const SDK = fileURLToPath(new URL('../ts/dist/index.js', import.meta.url));

function runScript(body: string) {
  return spawnSync(process.execPath, ['-e', `const sdk = require(${JSON.stringify(SDK)});\n${body}`], {
    encoding: 'utf8',
    timeout: 30_000,
  });
}

describe('process liveness', () => {
  it('a subscription waiting for events does not keep the process alive', () => {
    const r = runScript(`
      const e = sdk.Engine.open();
      (async () => {
        await e.upsertAccount({ id: 1n });
        console.log('waiting');
        for await (const ev of e.events()) console.log('event', ev.type);
        console.log('never');
      })();
    `);
    expect(r.signal).toBeNull(); // not killed by the timeout: it exited by itself
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('waiting');
    expect(r.stdout).not.toContain('never');
  });
});
