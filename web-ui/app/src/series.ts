// Turns a query answer into chart series: the first timestamp column is
// the x axis, the other non-numeric columns name a series (one per
// distinct combination), each numeric column gives its values.

import { type Unit, unitOf } from './format';

export interface ResultColumn {
  name: string;
  /** Arrow type name, as query answers report it: Int64, Timestamp(ns, "UTC"), Utf8... */
  type: string;
}

export interface Series {
  label: string;
  /** The numeric column it draws (for units). */
  column: string;
  values: (number | null)[];
  /** Drawn dashed: an earlier window laid over the current one. */
  dashed?: boolean;
}

export interface Chart {
  /** Unix seconds, ascending. */
  x: number[];
  series: Series[];
}

export const MAX_SERIES = 20;

export function isNumericType(type: string): boolean {
  return /^(U?Int|Float|Decimal)/.test(type);
}

function timeOf(v: unknown): number | null {
  if (typeof v !== 'string' && typeof v !== 'number') return null;
  const t = typeof v === 'number' ? v : Date.parse(v);
  return Number.isFinite(t) ? t / 1000 : null;
}

/** Series of a result, or null when it has no timestamp column or nothing numeric to draw. */
export function toChart(columns: ResultColumn[], rows: unknown[][]): Chart | null {
  const xi = columns.findIndex((c) => c.type.startsWith('Timestamp'));
  if (xi < 0) return null;
  const valueCols = columns.map((c, i) => ({ c, i })).filter(({ c, i }) => i !== xi && isNumericType(c.type));
  const keyCols = columns.map((c, i) => ({ c, i })).filter(({ c, i }) => i !== xi && !isNumericType(c.type));
  if (valueCols.length === 0) return null;

  const xs = [...new Set(rows.map((r) => timeOf(r[xi])).filter((t): t is number => t !== null))].sort((a, b) => a - b);
  const at = new Map(xs.map((x, i) => [x, i]));
  const byLabel = new Map<string, Series>();
  for (const row of rows) {
    const t = timeOf(row[xi]);
    if (t === null) continue;
    const key = keyCols.map(({ i }) => (row[i] === null ? '(null)' : String(row[i]))).join(' / ');
    for (const { c, i } of valueCols) {
      const label = [key, valueCols.length > 1 || !key ? c.name : ''].filter(Boolean).join(' · ');
      let s = byLabel.get(label);
      if (!s) {
        if (byLabel.size >= MAX_SERIES) continue;
        s = { label, column: c.name, values: new Array(xs.length).fill(null) };
        byLabel.set(label, s);
      }
      const v = row[i];
      s.values[at.get(t)!] = typeof v === 'number' ? v : null;
    }
  }
  return { x: xs, series: [...byLabel.values()] };
}

/** The units the series are in, first seen first: each gets its own y axis, so that counts and milliseconds do not share one. */
export function unitsOf(series: Series[]): Unit[] {
  return [...new Set(series.map((s) => unitOf(s.column)))];
}

/**
 * Series stacked: each drawn at the sum of itself and those before it
 * (of the first series' unit; the others are left as they are), so that
 * the top of the stack is the total. Gaps count as 0.
 */
export function stacked(series: Series[]): Series[] {
  if (series.length === 0) return series;
  const unit = unitOf(series[0].column);
  let below: number[] = new Array(series[0].values.length).fill(0);
  return series.map((s) => {
    if (unitOf(s.column) !== unit) return s;
    const values = s.values.map((v, i) => below[i] + (v ?? 0));
    below = values;
    return { ...s, values };
  });
}

/** The sum of the series of the first series' unit, per time. */
export function totalOf(series: Series[]): Series | null {
  const current = series.filter((s) => !s.dashed);
  if (current.length === 0) return null;
  const unit = unitOf(current[0].column);
  const same = current.filter((s) => unitOf(s.column) === unit);
  const values = same[0].values.map((_, i) => same.reduce<number>((a, s) => a + (s.values[i] ?? 0), 0));
  return { label: 'total', column: same[0].column, values };
}
