#!/usr/bin/env bash
# Pack the SDK (`novate`) and the prebuilt binary package (`novate-linux-x64-gnu`) with `npm pack`,
# install both with `npm install --offline` into an empty directory with an empty npm cache and no
# Rust on PATH, then open an engine, clear a trade, read the position and run the CLI there.
# Expects `npm run build` to have run (ts/native/*.node and ts/dist exist).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
work=$(mktemp -d /tmp/novate-pack.XXXXXX)
trap 'rm -rf "$work"' EXIT

test -f ts/native/novate.linux-x64-gnu.node || { echo "pack-test: run npm run build first" >&2; exit 1; }
test -f ts/dist/index.js || { echo "pack-test: run npm run build first" >&2; exit 1; }

mkdir -p "$work/tarballs" "$work/platform"
cp bindings/npm/linux-x64-gnu/package.json ts/native/novate.linux-x64-gnu.node "$work/platform/"
(cd "$work/platform" && npm pack --silent --pack-destination "$work/tarballs" >/dev/null)
(cd ts && npm pack --silent --pack-destination "$work/tarballs" >/dev/null)
ls -l "$work/tarballs"
# The SDK tarball must not carry the binary (that is the platform package's job) nor tests.
if tar -tzf "$work/tarballs/novate-0.1.0.tgz" | grep -E '\.node$|test' ; then
  echo "pack-test: unexpected files in the SDK tarball" >&2; exit 1
fi

app="$work/app"
mkdir -p "$app"
cd "$app"
node_dir=$(dirname "$(command -v node)")
clean_env=(env -i HOME="$work/home" PATH="$node_dir:/usr/bin:/bin" npm_config_cache="$work/npm-cache")
mkdir -p "$work/home"
"${clean_env[@]}" npm init -y >/dev/null
"${clean_env[@]}" npm install --offline --no-audit --no-fund \
  "$work/tarballs/novate-0.1.0.tgz" "$work/tarballs/novate-linux-x64-gnu-0.1.0.tgz"
if "${clean_env[@]}" sh -c 'command -v cargo || command -v rustc'; then
  echo "pack-test: Rust is on the clean PATH" >&2; exit 1
fi

cat > smoke.cjs <<'JS'
const assert = require('node:assert');
const { Engine, NovateError, price } = require('novate');
(async () => {
  const e = Engine.open({ engine: { accounts_max: 100, instruments_max: 10, positions_max: 100, trades_max: 1000 } });
  await e.upsertInstrument({ id: 1n, multiplier: 1n, marginBps: 500n, settleDays: 2 });
  await e.upsertAccount({ id: 1n });
  await e.upsertAccount({ id: 2n });
  const ack = await e.clearTrade({ tradeId: 42n, buy: 1n, sell: 2n, instrument: 1n, qty: 10n, price: price('101.25'), tradeDate: 20261125 });
  const pos = await e.position(1n, 1n);
  assert.strictEqual(pos.qty, 10n);
  assert.strictEqual(pos.cost, 10n * price('101.25'));
  await assert.rejects(e.clearTrade({ tradeId: 42n, buy: 1n, sell: 2n, instrument: 1n, qty: 1n, price: 1n, tradeDate: 20261125 }),
    (err) => err instanceof NovateError && err.code === 9 && err.codeName === 'Duplicate');
  console.log(`smoke: trade at seq ${ack.seq}, position ${pos.qty} @ ${pos.avgPrice}, state hash ${(await e.stateHash()).toString(16)}`);
  await e.close();
})().catch((err) => { console.error(err); process.exit(1); });
JS
"${clean_env[@]}" node smoke.cjs
"${clean_env[@]}" ./node_modules/.bin/novate doctor | head -3
"${clean_env[@]}" ./node_modules/.bin/novate demo --trades 20000 --accounts 100 --instruments 10 --latency-samples 100 | grep -E 'throughput|state hash'
echo "pack-test: ok ($root)"
