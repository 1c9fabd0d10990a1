// "Compare to": the same question over an earlier window, drawn as dashed
// series shifted onto the current window, and as columns beside the
// results (value then, change in %).

import type { QueryResult } from './api';
import type { Chart } from './series';

/** `count` → `count (1d before)`. */
export function thenLabel(label: string, shift: string): string {
  return `${label} (${shift} before)`;
}

/**
 * The current chart with the earlier one laid over it: its x values moved
 * forward by `shiftSeconds` so that both windows share the time axis, its
 * series dashed and labelled with the shift.
 */
export function overlay(now: Chart, then: Chart, shiftSeconds: number, shift: string): Chart {
  const thenX = then.x.map((x) => x + shiftSeconds);
  const xs = [...new Set([...now.x, ...thenX])].sort((a, b) => a - b);
  const at = new Map(xs.map((x, i) => [x, i]));
  const place = (x: number[], values: (number | null)[]) => {
    const out: (number | null)[] = new Array(xs.length).fill(null);
    x.forEach((t, i) => (out[at.get(t)!] = values[i]));
    return out;
  };
  return {
    x: xs,
    series: [
      ...now.series.map((s) => ({ ...s, values: place(now.x, s.values) })),
      ...then.series.map((s) => ({ ...s, label: thenLabel(s.label, shift), dashed: true, values: place(thenX, s.values) })),
    ],
  };
}

/** A change from `then` to `now` in percent; null when there is no base. */
export function changePercent(now: unknown, then: unknown): number | null {
  if (typeof now !== 'number' || typeof then !== 'number' || then === 0) return null;
  return Math.round(((now - then) / Math.abs(then)) * 1000) / 10;
}

/**
 * The results table with, for each aggregate, its value in the earlier
 * window and the change in %, matched by the group columns (the first
 * `groups` of each row).
 */
export function withThen(now: QueryResult, then: QueryResult, groups: number, shift: string): QueryResult {
  const key = (r: unknown[]) => JSON.stringify(r.slice(0, groups));
  const earlier = new Map(then.rows.map((r) => [key(r), r]));
  const aggs = now.columns.slice(groups);
  const columns = [
    ...now.columns,
    ...aggs.flatMap((c) => [
      { name: thenLabel(c.name, shift), type: c.type },
      { name: `${c.name} change %`, type: 'Float64' },
    ]),
  ];
  const rows = now.rows.map((r) => {
    const before = earlier.get(key(r));
    return [
      ...r,
      ...aggs.flatMap((_, i) => {
        const v = before ? before[groups + i] : null;
        return [v ?? null, changePercent(r[groups + i], v)];
      }),
    ];
  });
  return { ...now, columns, rows };
}
