// The napi-rs binding (bindings/, built into ../native by `npm run build:native`). Loaded lazily
// so that the TCP client works where the native package is missing.
import type * as Native from '../native/index';

export type NativeModule = typeof Native;

let loaded: NativeModule | undefined;

/** The native module; throws a clear error if the prebuilt binary is not installed. */
export function native(): NativeModule {
  if (!loaded) {
    // The loader is CommonJS; `require` exists in the compiled SDK and under vitest.
    loaded = require('../native/index.js') as NativeModule;
  }
  return loaded;
}
