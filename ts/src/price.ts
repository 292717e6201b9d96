// Fixed-point helpers (SPEC.md units): prices have 8 decimals, money is in units of 10^-8.

/** `PRICE_SCALE` units of price are one currency unit per unit of quantity. */
export const PRICE_SCALE = 100_000_000n;

const DECIMAL = /^([+-]?)(\d*)(?:\.(\d{0,8}))?$/;

/**
 * A decimal string with at most 8 fractional digits as fixed point: `price('101.25')` is
 * `10_125_000_000n`. Throws `RangeError` for anything else (same rules as core's `parse_price`,
 * except that the i64 range is checked when the value is encoded).
 */
export function price(text: string): bigint {
  const m = DECIMAL.exec(text.trim());
  if (!m || (m[2] === '' && (m[3] ?? '') === '')) throw new RangeError(`not a decimal with at most 8 decimals: ${JSON.stringify(text)}`);
  const frac = (m[3] ?? '').padEnd(8, '0');
  const v = BigInt(m[2] || '0') * PRICE_SCALE + BigInt(frac);
  return m[1] === '-' ? -v : v;
}

/** Money is on the same scale as prices: `money('2500.5')` is 250_050_000_000n. */
export const money = price;

/** Format a fixed-point value (price or money) as a decimal string without trailing zeros. */
export function formatFixed(v: bigint): string {
  const neg = v < 0n;
  const a = neg ? -v : v;
  const whole = a / PRICE_SCALE;
  const frac = (a % PRICE_SCALE).toString().padStart(8, '0').replace(/0+$/, '');
  return `${neg ? '-' : ''}${whole}${frac ? '.' + frac : ''}`;
}
