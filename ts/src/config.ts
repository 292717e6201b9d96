// Engine configuration: the TOML file of docs/CONFIG.md, or the same structure as an object.

export interface EngineConfig {
  /** Journal and snapshots live here; empty or absent: memory only. */
  data_dir?: string;
  engine?: Partial<{
    accounts_max: number;
    instruments_max: number;
    positions_max: number;
    trades_max: number;
    ingress_ring: number;
    apply_ring: number;
    egress_ring: number;
    batch_max: number;
    client_inflight_max: number;
    subscriber_buffer: number;
  }>;
  durability?: Partial<{ policy: 'none' | 'fsync'; snapshot_every: number }>;
  threads?: Partial<{
    wait: 'park' | 'spin-yield' | 'busy-spin';
    stages: 'split' | 'fused';
    /** With fused stages: waiting callers step the pipeline themselves (default true). */
    combine: boolean;
    pin: number[];
    fifo_priority: number;
    /** A lookup stage: a thread that makes each batch's index lookups ahead of the state machine's (default false: it wants a core of its own; docs/CONFIG.md). */
    lookup_stage: boolean;
    /** With `lookup_stage`: the CPU to pin the stage's thread to. */
    lookup_cpu: number;
    huge_pages: 'normal' | 'thp' | 'locked';
    /** Commit the state tables at start-up so no command takes a page fault (default false; for production and benchmarks). */
    prefault: boolean;
  }>;
  net?: Partial<{
    listen: string;
    connections_max: number;
    /** Live subscriptions one connection may hold (default 16); more are refused with SubscriptionCapacity. */
    subscriptions_per_connection: number;
    /** Live subscriptions of the whole engine (default 256). */
    subscriptions_max: number;
    write_timeout_ms: number;
    busy_poll_us: number;
  }>;
}

function value(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `[${v.map(value).join(', ')}]`;
  throw new TypeError(`configuration value ${JSON.stringify(v)} is not a string, number, boolean or array`);
}

/** Render a configuration object as TOML (the engine validates it and names bad keys). */
export function toToml(config: EngineConfig | string | undefined): string {
  if (config === undefined) return '';
  if (typeof config === 'string') return config;
  const top: string[] = [];
  const sections: string[] = [];
  for (const [k, v] of Object.entries(config)) {
    if (v === undefined) continue;
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      sections.push(`[${k}]`);
      for (const [k2, v2] of Object.entries(v)) if (v2 !== undefined) sections.push(`${k2} = ${value(v2)}`);
    } else {
      top.push(`${k} = ${value(v)}`);
    }
  }
  return [...top, ...sections].join('\n') + '\n';
}
