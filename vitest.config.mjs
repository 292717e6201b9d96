// Vitest's defaults (5 s per test, 10 s per hook) are for unit tests; these tests start
// daemons and child processes, build engines with real journals and clear tens of thousands
// of trades, which on a loaded 2-CPU CI machine can take several times longer than here. The
// limits only bound a hang: every wait inside the tests has its own deadline.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
