// Live mode: what the page asks the node to follow, and how an update
// changes the chart's rows and the samples.
//
// Counts, sums, minimums and maximums are followed as events are stored
// (`POST /v1/live`); the other aggregates (averages, percentiles, distinct
// counts) cannot be added up from parts, so the page asks for them again
// every few seconds and says so.

import type { QueryResult } from './api';
import { type Agg, type QueryState, RANGE_SECONDS, aggLabel } from './model';
import type { Column } from './model';
import { BuilderError, bucketSeconds, filterSql, isNumeric } from './sql';
import { MAX_SERIES } from './series';

/** Seconds between queries of the aggregates that are not followed. */
export const REQUERY_SECONDS = 5;

export type LiveFn = 'count' | 'sum' | 'min' | 'max';

/** Whether the node follows an aggregate: count, and sum/min/max of a number. */
export function isIncremental(a: Agg, columns: Column[]): boolean {
  if (a.fn === 'count') return true;
  const numeric = columns.some((c) => c.name === a.column && isNumeric(c.type));
  return numeric && (a.fn === 'sum' || a.fn === 'min' || a.fn === 'max');
}

export interface LiveSpec {
  table: string;
  filter?: string;
  group_by: string[];
  aggregates: { fn: LiveFn; column?: string }[];
  bucket_seconds: number;
}

/** The spec of a state's live view: its filters (not its time range), groups and followed aggregates. */
export function liveSpec(s: QueryState, columns: Column[], now: Date): LiveSpec {
  if (s.range.kind !== 'relative') throw new BuilderError('Live follows a relative time range (last 15 min … last 7 d)');
  const followed = s.aggs.filter((a) => isIncremental(a, columns));
  const filter = s.filters.map((f) => filterSql(f, columns)).join(' AND ');
  return {
    table: s.table,
    ...(filter ? { filter } : {}),
    group_by: s.groupBy,
    aggregates: (followed.length ? followed : [{ fn: 'count' as const }]).map((a) => (a.fn === 'count' ? { fn: 'count' } : { fn: a.fn as LiveFn, column: a.column })),
    bucket_seconds: bucketSeconds(s.range, now),
  };
}

export interface LiveBucket {
  t: number;
  group: (string | null)[];
  values: (number | null)[];
}

export interface LiveUpdate {
  buckets: LiveBucket[];
  samples: Record<string, unknown>[];
  coverage: number;
  missing_partitions: number;
  /** The page read slowly: several updates in one (counts exact). */
  lagging: boolean;
  /** Events were dropped on the way: counts may be low. */
  lost: boolean;
  overflow: boolean;
}

function same(a: unknown, b: string | null): boolean {
  return (a === null || a === undefined) ? b === null : String(a) === b;
}

/**
 * The chart's rows (`seriesSql`'s: bucket, groups, aggregates) with an
 * update added: counts and sums add, min and max combine; a bucket or
 * group the rows lack is added (a group only when it is one the chart
 * draws, or the view has no groups). Rows before the window, which slid
 * to end at `now`, are left out.
 */
export function applyUpdate(series: QueryResult, update: LiveUpdate, s: QueryState, columns: Column[], now: Date, drawn: unknown[][]): QueryResult {
  const groups = s.groupBy.length;
  const followed = s.aggs.map((a, i) => ({ a, i })).filter(({ a }) => isIncremental(a, columns));
  // A view whose run found nothing draws the first groups that come.
  const open = [...drawn];
  const rows = series.rows.map((r) => [...r]);
  const timeOf = (v: unknown) => Date.parse(String(v)) / 1000;
  for (const b of update.buckets) {
    let row = rows.find((r) => timeOf(r[0]) === b.t && b.group.every((g, k) => same(r[1 + k], g)));
    if (!row) {
      if (groups && !open.some((d) => b.group.every((g, k) => same(d[k], g)))) {
        if (drawn.length || open.length >= MAX_SERIES) continue;
        open.push(b.group);
      }
      row = [new Date(b.t * 1000).toISOString(), ...b.group, ...s.aggs.map(() => null)];
      rows.push(row);
    }
    followed.forEach(({ a, i }, k) => {
      const v = b.values[k];
      if (v === null || v === undefined) return;
      const col = 1 + groups + i;
      const old = row[col];
      const had = typeof old === 'number' ? old : null;
      row[col] = a.fn === 'min' ? Math.min(had ?? v, v) : a.fn === 'max' ? Math.max(had ?? v, v) : (had ?? 0) + v;
    });
  }
  const bucket = bucketSeconds(s.range, now);
  const span = s.range.kind === 'relative' ? RANGE_SECONDS[s.range.last] : 0;
  const from = Math.floor((now.getTime() / 1000 - span) / bucket) * bucket;
  const kept = rows.filter((r) => timeOf(r[0]) >= from).sort((x, y) => timeOf(x[0]) - timeOf(y[0]));
  return { ...series, rows: kept };
}

/** The samples with an update's rows, newest first by time (as the samples query orders them), at most `limit`. */
export function withSamples(samples: QueryResult, update: LiveUpdate, limit = 50): QueryResult {
  const fresh = [...update.samples].reverse().map((o) => samples.columns.map((c) => (c.name in o ? o[c.name] : null)));
  const t = samples.columns.findIndex((c) => c.name === 'time');
  const rows = [...fresh, ...samples.rows];
  const at = (r: unknown[]) => Date.parse(String(r[t])) || 0;
  if (t >= 0) rows.sort((a, b) => at(b) - at(a));
  return { ...samples, rows: rows.slice(0, limit) };
}

/** The aggregates refreshed by querying, as the page names them. */
export function requeried(s: QueryState, columns: Column[]): string[] {
  return s.aggs.filter((a) => !isIncremental(a, columns)).map(aggLabel);
}

/**
 * The chart's rows with the values of the aggregates that are not followed
 * taken from a fresh query (the followed ones stay as the updates made
 * them: a fresh query would count again what updates already added).
 */
export function withRequeried(series: QueryResult, fresh: QueryResult, s: QueryState, columns: Column[]): QueryResult {
  const groups = s.groupBy.length;
  const others = s.aggs.map((a, i) => ({ a, i })).filter(({ a }) => !isIncremental(a, columns));
  const key = (r: unknown[]) => [Date.parse(String(r[0])), ...r.slice(1, 1 + groups).map(String)].join('\u0000');
  const byKey = new Map(fresh.rows.map((r) => [key(r), r]));
  const rows = series.rows.map((r) => {
    const f = byKey.get(key(r));
    const out = [...r];
    for (const { i } of others) out[1 + groups + i] = f ? f[1 + groups + i] : null;
    return out;
  });
  const known = new Set(series.rows.map(key));
  for (const r of fresh.rows) if (!known.has(key(r))) rows.push(r);
  return { ...series, rows };
}
