// Traces: the spans of one trace gathered from every table that has the
// OpenTelemetry/Honeycomb trace columns (`trace.trace_id`, `trace.span_id`,
// `trace.parent_id`; OTLP ingest puts each service's spans in a table of
// its own), and nested by parent for the waterfall.

import type { QueryResult } from './api';
import type { Column } from './model';
import { isNumeric, quoteIdent, quoteString } from './sql';

export const TRACE_ID = 'trace.trace_id';
export const SPAN_ID = 'trace.span_id';
export const PARENT_ID = 'trace.parent_id';
/** Spans drawn at most; a larger trace says it was cut. */
export const MAX_SPANS = 1000;

export interface TraceTable {
  name: string;
  columns: Column[];
}

/** Tables whose rows can be spans: they have a trace id and a span id. */
export function traceTables(tables: TraceTable[]): TraceTable[] {
  return tables.filter((t) => t.columns.some((c) => c.name === TRACE_ID) && t.columns.some((c) => c.name === SPAN_ID));
}

function first(columns: Column[], names: string[]): string | null {
  return names.find((n) => columns.some((c) => c.name === n)) ?? null;
}

function text(columns: Column[], names: string[], otherwise = 'CAST(NULL AS VARCHAR)'): string {
  const c = first(columns, names);
  return c ? `CAST(${quoteIdent(c)} AS VARCHAR)` : otherwise;
}

/** An id column equal to an id, compared as text (a table may have typed its ids as numbers). */
function idIs(column: string, id: string): string {
  return `CAST(${quoteIdent(column)} AS VARCHAR) = ${quoteString(id)}`;
}

/**
 * One query for the whole trace: a UNION ALL of each span table's rows
 * with that trace id, in common columns (service: `service.name`,
 * `service_name` or `service`, else the table's name). Rows without a span
 * id (OTLP's span events and links) are not spans.
 */
export function traceSql(tables: TraceTable[], traceId: string): string {
  const spans = traceTables(tables);
  if (spans.length === 0) throw new Error(`no table has the columns ${TRACE_ID} and ${SPAN_ID}`);
  const branches = spans.map((t) => {
    const duration = t.columns.find((c) => c.name === 'duration_ms' && isNumeric(c.type)) ? `CAST("duration_ms" AS DOUBLE)` : 'CAST(NULL AS DOUBLE)';
    return [
      `SELECT ${quoteString(t.name)} AS "table"`,
      `extract(epoch FROM "time") AS "start"`,
      `${text(t.columns, [SPAN_ID])} AS "span_id"`,
      `${text(t.columns, [PARENT_ID])} AS "parent_id"`,
      `${text(t.columns, ['name', 'span.name'])} AS "name"`,
      `${text(t.columns, ['service.name', 'service_name', 'service'], `CAST(${quoteString(t.name)} AS VARCHAR)`)} AS "service"`,
      `${duration} AS "duration_ms"`,
      `${text(t.columns, ['error'])} AS "error"`,
    ].join(', ') + ` FROM ${quoteIdent(t.name)} WHERE ${idIs(TRACE_ID, traceId)} AND ${quoteIdent(SPAN_ID)} IS NOT NULL`;
  });
  return `${branches.join('\nUNION ALL\n')}\nORDER BY "start", "span_id"\nLIMIT ${MAX_SPANS + 1}`;
}

/** `?view=trace&trace=ID`: where a trace id cell links to. */
export function traceHref(id: string): string {
  return `?${new URLSearchParams({ view: 'trace', trace: id })}`;
}

/** Every column of one span's row, for its attributes. */
export function spanSql(table: string, traceId: string, spanId: string): string {
  return `SELECT * FROM ${quoteIdent(table)} WHERE ${idIs(TRACE_ID, traceId)} AND ${idIs(SPAN_ID, spanId)} LIMIT 1`;
}

export interface Span {
  table: string;
  /** Unix seconds, with the microseconds the store keeps. */
  start: number;
  spanId: string;
  parentId: string | null;
  name: string;
  service: string;
  durationMs: number | null;
  error: boolean;
  depth: number;
  /** The parent id names no span of the trace (it is drawn as a root). */
  orphan: boolean;
}

export interface Trace {
  id: string;
  /** Depth first, children by start time. */
  spans: Span[];
  start: number;
  /** Milliseconds from the first start to the last end. */
  durationMs: number;
  truncated: boolean;
}

/** An `error` value that means the span failed: true, or any text but false/0/empty. */
export function isError(v: unknown): boolean {
  if (v === null || v === undefined) return false;
  const s = String(v).trim().toLowerCase();
  return s !== '' && s !== 'false' && s !== '0';
}

/** The waterfall of `traceSql`'s answer: spans nested under their parents. */
export function toTrace(id: string, result: QueryResult): Trace {
  const rows = result.rows.slice(0, MAX_SPANS);
  const spans: Span[] = rows.map((r) => ({
    table: String(r[0]),
    start: Number(r[1]),
    spanId: String(r[2]),
    parentId: r[3] === null || r[3] === undefined || r[3] === '' ? null : String(r[3]),
    name: r[4] === null || r[4] === undefined ? '(unnamed)' : String(r[4]),
    service: String(r[5] ?? r[0]),
    durationMs: r[6] === null || r[6] === undefined ? null : Number(r[6]),
    error: isError(r[7]),
    depth: 0,
    orphan: false,
  }));
  const ids = new Set(spans.map((s) => s.spanId));
  const children = new Map<string, Span[]>();
  const roots: Span[] = [];
  for (const s of spans) {
    if (s.parentId !== null && ids.has(s.parentId) && s.parentId !== s.spanId) {
      const list = children.get(s.parentId) ?? [];
      list.push(s);
      children.set(s.parentId, list);
    } else {
      s.orphan = s.parentId !== null && !ids.has(s.parentId);
      roots.push(s);
    }
  }
  const ordered: Span[] = [];
  const seen = new Set<Span>();
  const visit = (s: Span, depth: number) => {
    if (seen.has(s)) return;
    seen.add(s);
    s.depth = depth;
    ordered.push(s);
    for (const c of children.get(s.spanId) ?? []) visit(c, depth + 1);
  };
  for (const r of roots) visit(r, 0);
  // A cycle of parents has no root: draw what is left at the top level.
  for (const s of spans) visit(s, 0);
  const start = spans.length ? Math.min(...spans.map((s) => s.start)) : 0;
  const end = spans.length ? Math.max(...spans.map((s) => s.start + (s.durationMs ?? 0) / 1000)) : 0;
  return { id, spans: ordered, start, durationMs: (end - start) * 1000, truncated: result.rows.length > MAX_SPANS };
}
