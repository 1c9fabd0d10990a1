// "What is different" (Honeycomb's BubbleUp): the events a selection picks
// (a box on the heatmap, or conditions such as `status >= 500`) against the
// rest of the window, column by column.
//
// Two queries, whatever the number of columns, both ordinary distributed
// queries: the first counts the selection and the rest and estimates each
// column's distinct values (so that id-like columns, which would ship a
// group per event to the coordinator, are left out and said so); the second
// is one UNION ALL of a grouped count per compared column, keeping each
// column's values whose share inside or outside is largest. A column's score
// is the total variation distance between the two distributions over those
// values and "everything else": half the sum of |share inside − share
// outside|, 0 when the selection looks like the rest, 1 when they share no
// value.

import type { QueryResult } from './api';
import type { Column, Filter, QueryState } from './model';
import { BuilderError, SAMPLE_RATE, filterSql, isNumeric, quoteIdent, quoteString, sampleWeight, stepRange, stepSql, whereSql } from './sql';

/** Values shown per column. */
export const TOP_VALUES = 6;
/** Columns with more distinct values than this (ids, free text) are not compared. */
export const MAX_DISTINCT = 200;
/** Numeric columns with more distinct values than this are compared by log-scaled steps, as the heatmap draws them. */
export const BINNED_ABOVE = 30;
/** Columns compared at most (the first ones of the table). */
export const MAX_COLUMNS = 40;

/**
 * A box dragged on the heatmap as selection conditions: its time buckets,
 * and its value steps' bounds on the column (steps from "≤ 0" up have no
 * lower bound; the "≤ 0" step alone is `<= 0`).
 */
export function boxFilters(box: { from: number; to: number; lowStep: number; highStep: number }, column: string): Filter[] {
  const at = (t: number) => new Date(t * 1000).toISOString();
  const out: Filter[] = [
    { column: 'time', op: '>=', value: at(box.from) },
    { column: 'time', op: '<', value: at(box.to) },
  ];
  const low = stepRange(box.lowStep);
  const high = stepRange(box.highStep);
  if (low) out.push({ column, op: '>=', value: String(low.low) });
  out.push(high ? { column, op: '<', value: String(high.high) } : { column, op: '<=', value: '0' });
  return out;
}

/** The box `boxFilters` made, if the selection is one (to draw it on the heatmap of `column`). */
export function boxOf(selection: Filter[], column: string): { from: number; to: number; low: number | null; high: number } | null {
  const [from, to, ...bounds] = selection;
  if (!from || !to || from.column !== 'time' || from.op !== '>=' || to.column !== 'time' || to.op !== '<') return null;
  if (bounds.some((b) => b.column !== column)) return null;
  const t = (f: Filter) => Date.parse(f.value) / 1000;
  const low = bounds.find((b) => b.op === '>=');
  const high = bounds.find((b) => b.op === '<' || b.op === '<=');
  if (!high || bounds.length !== (low ? 2 : 1)) return null;
  return { from: t(from), to: t(to), low: low ? Number(low.value) : null, high: Number(high.value) };
}

/** The selection's conditions, ANDed; a BuilderError when there are none. */
export function selectionSql(s: QueryState, columns: Column[]): string {
  if (s.selection.length === 0) throw new BuilderError('what is different: add a condition that picks the selection, or drag a box on the heatmap');
  return s.selection.map((f) => filterSql(f, columns)).join(' AND ');
}

/**
 * The columns worth comparing: not the time, not the sample rate, not
 * another timestamp, and not the columns the selection is made of (they
 * differ by construction).
 */
export function candidates(s: QueryState, columns: Column[]): Column[] {
  return comparable(s, columns).slice(0, MAX_COLUMNS);
}

function comparable(s: QueryState, columns: Column[]): Column[] {
  const chosen = new Set(s.selection.map((f) => f.column));
  return columns.filter((c) => c.name !== 'time' && c.name !== SAMPLE_RATE && c.type !== 'Timestamp' && !chosen.has(c.name));
}

/** A column's values as text, one per event (a string set as its members joined). */
function categorical(c: Column): string {
  const id = quoteIdent(c.name);
  return c.type.startsWith('List') ? `array_to_string(${id}, ', ')` : `CAST(${id} AS VARCHAR)`;
}

function inSelection(s: QueryState, columns: Column[]): string {
  return `coalesce(${selectionSql(s, columns)}, false)`;
}

function insideOutside(s: QueryState, columns: Column[]): string {
  const sel = inSelection(s, columns);
  const w = sampleWeight(columns) ?? '1';
  return `sum(CASE WHEN ${sel} THEN ${w} ELSE 0 END) AS "inside", sum(CASE WHEN ${sel} THEN 0 ELSE ${w} END) AS "outside"`;
}

/** Query 1: the selection's and the rest's sizes, and each candidate's distinct values. */
export function shapeSql(s: QueryState, columns: Column[], now: Date): string {
  if (!s.table) throw new BuilderError('pick a table');
  const distinct = candidates(s, columns).map((c, i) => `approx_distinct(${categorical(c)}) AS "d${i}"`);
  return [`SELECT ${[insideOutside(s, columns), ...distinct].join(', ')}`, `FROM ${quoteIdent(s.table)}`, `WHERE ${whereSql(s, columns, now)}`].join('\n');
}

export interface Compared {
  column: Column;
  /** Compared by value steps rather than by value. */
  binned: boolean;
}

export interface Plan {
  inside: number;
  outside: number;
  compared: Compared[];
  /** Columns left out: too many distinct values (`distinct`), or beyond the first `MAX_COLUMNS` (no `distinct`). */
  skipped: { column: string; distinct?: number }[];
}

/** What query 2 compares, from query 1's answer. */
export function planOf(shape: QueryResult, s: QueryState, columns: Column[]): Plan {
  const row = shape.rows[0] ?? [];
  const plan: Plan = { inside: Number(row[0] ?? 0), outside: Number(row[1] ?? 0), compared: [], skipped: [] };
  candidates(s, columns).forEach((column, i) => {
    const distinct = Number(row[2 + i] ?? 0);
    if (distinct === 0) return;
    if (isNumeric(column.type) && distinct > BINNED_ABOVE) plan.compared.push({ column, binned: true });
    else if (distinct <= MAX_DISTINCT) plan.compared.push({ column, binned: false });
    else plan.skipped.push({ column: column.name, distinct });
  });
  for (const c of comparable(s, columns).slice(MAX_COLUMNS)) plan.skipped.push({ column: c.name });
  return plan;
}

/**
 * Query 2: per compared column, the values (or value steps) with their
 * weight inside and outside the selection, the `TOP_VALUES` with the
 * largest share on either side.
 */
export function valuesSql(s: QueryState, columns: Column[], now: Date, plan: Plan): string {
  if (plan.compared.length === 0) throw new BuilderError('what is different: no column to compare');
  const where = whereSql(s, columns, now);
  const counts = insideOutside(s, columns);
  const branches = plan.compared.map(({ column, binned }) => {
    const value = binned ? `CAST(${stepSql(quoteIdent(column.name))} AS VARCHAR)` : categorical(column);
    return `SELECT ${quoteString(column.name)} AS "column", ${value} AS "value", ${counts} FROM ${quoteIdent(s.table)} WHERE ${where} GROUP BY 2`;
  });
  const share = (side: string, n: number) => `CAST("${side}" AS DOUBLE) / ${Math.max(1, n)}`;
  return [
    `SELECT "column", "value", "inside", "outside" FROM (`,
    `SELECT *, row_number() OVER (PARTITION BY "column" ORDER BY greatest(${share('inside', plan.inside)}, ${share('outside', plan.outside)}) DESC, "value") AS "rank" FROM (`,
    branches.join('\nUNION ALL\n'),
    `)) WHERE "rank" <= ${TOP_VALUES}`,
    `ORDER BY "column", "rank"`,
  ].join('\n');
}

export interface BubbleValue {
  /** The value as text (a step's number when binned); null: the column is absent. */
  value: string | null;
  /** Shares of the selection and of the rest, 0..1. */
  inside: number;
  outside: number;
}

export interface BubbleColumn {
  column: string;
  binned: boolean;
  score: number;
  values: BubbleValue[];
}

/** The compared columns, most different first. */
export function ranked(result: QueryResult, plan: Plan): BubbleColumn[] {
  const byName = new Map<string, BubbleColumn>(plan.compared.map((c) => [c.column.name, { column: c.column.name, binned: c.binned, score: 0, values: [] }]));
  for (const [column, value, inside, outside] of result.rows) {
    byName.get(String(column))?.values.push({
      value: value === null || value === undefined ? null : String(value),
      inside: Number(inside) / Math.max(1, plan.inside),
      outside: Number(outside) / Math.max(1, plan.outside),
    });
  }
  const out = [...byName.values()];
  for (const c of out) c.score = score(c.values);
  return out.sort((a, b) => b.score - a.score || a.column.localeCompare(b.column));
}

/** Total variation distance over the values shown and the rest of each side. */
export function score(values: BubbleValue[]): number {
  const restIn = Math.max(0, 1 - values.reduce((s, v) => s + v.inside, 0));
  const restOut = Math.max(0, 1 - values.reduce((s, v) => s + v.outside, 0));
  const d = values.reduce((s, v) => s + Math.abs(v.inside - v.outside), Math.abs(restIn - restOut));
  return Math.min(1, d / 2);
}
