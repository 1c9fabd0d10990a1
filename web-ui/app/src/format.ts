// Numbers for people: 1.2k events, 34 ms, 1.5 MiB.

const SI = [
  { n: 1e12, s: 'T' },
  { n: 1e9, s: 'B' },
  { n: 1e6, s: 'M' },
  { n: 1e3, s: 'k' },
];

function trim(x: number, digits: number): string {
  const s = x.toFixed(digits);
  return s.includes('.') ? s.replace(/\.?0+$/, '') : s;
}

/** 999, 1.2k, 3.4M; small fractions keep three significant digits. */
export function formatNumber(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  for (const { n, s } of SI) {
    if (a >= n) return `${trim(x / n, a / n >= 100 ? 0 : 1)}${s}`;
  }
  if (a === 0 || Number.isInteger(x)) return String(x);
  if (a >= 100) return trim(x, 0);
  if (a >= 1) return trim(x, 2);
  return String(Number(x.toPrecision(3)));
}

/** Milliseconds: 0.42 ms, 34 ms, 1.2 s, 3.5 min, 2.1 h. */
export function formatMs(ms: number): string {
  const a = Math.abs(ms);
  if (a < 1) return `${trim(ms, 2)} ms`;
  if (a < 10) return `${trim(ms, 1)} ms`;
  if (a < 1000) return `${trim(ms, 0)} ms`;
  if (a < 60_000) return `${trim(ms / 1000, 1)} s`;
  if (a < 3_600_000) return `${trim(ms / 60_000, 1)} min`;
  return `${trim(ms / 3_600_000, 1)} h`;
}

/** Bytes: 512 B, 1.5 KiB, 230 MiB. */
export function formatBytes(b: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let x = b;
  let i = 0;
  while (Math.abs(x) >= 1024 && i < units.length - 1) {
    x /= 1024;
    i += 1;
  }
  return `${trim(x, i === 0 || Math.abs(x) >= 100 ? 0 : 1)} ${units[i]}`;
}

export type Unit = 'ms' | 'bytes' | 'count';

/**
 * The unit a result column is in, read from its name: a column (or an
 * aggregate over one, `p99(duration_ms)`) named `*_ms` is milliseconds,
 * `bytes` or `*_bytes` is bytes. Counts stay counts.
 */
export function unitOf(name: string): Unit {
  const m = /^(?:sum|avg|min|max|p50|p90|p99)\((.*)\)$/.exec(name);
  const base = (m ? m[1] : name).toLowerCase();
  if (base.endsWith('_ms')) return 'ms';
  if (base === 'bytes' || base.endsWith('_bytes')) return 'bytes';
  return 'count';
}

export function formatIn(unit: Unit, x: number): string {
  if (unit === 'ms') return formatMs(x);
  if (unit === 'bytes') return formatBytes(x);
  return formatNumber(x);
}

/** A cell of a results table, as text. */
export function formatCell(v: unknown, column: string): string {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'number') return formatIn(unitOf(column), v);
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** `1 row`, `2 rows`, `1.2k rows`. */
export function plural(n: number, noun: string): string {
  return `${formatNumber(n)} ${n === 1 ? noun : `${noun}s`}`;
}
