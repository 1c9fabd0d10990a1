// The whole view lives in the URL's query string, so that reloading or
// pasting a URL reproduces it. Unknown or malformed parameters fall back to
// defaults rather than failing: a hand-edited URL still opens.

import { AGG_FNS, type Agg, type AggFn, CHART_STYLES, type ChartStyle, COMPARE_SHIFTS, type CompareShift, type Filter, HAVING_OPS, type Having, OPS, type Op, type QueryState, RELATIVE_RANGES, type Relative, defaultState } from './model';

export const VIEWS = ['explore', 'sql', 'tables', 'cluster', 'trace', 'saved', 'board'] as const;
export type View = (typeof VIEWS)[number];

export interface AppState {
  view: View;
  query: QueryState;
  /** SQL typed in the editor; empty: the builder's. */
  sql: string;
  /** The trace the trace view shows; empty: none. */
  trace: string;
  /** The board the board view shows; empty: none. */
  board: string;
  /** Client-side sort of the results table: column and direction. */
  sort: { column: string; desc: boolean } | null;
}

export function encode(s: AppState): string {
  const p = new URLSearchParams();
  p.set('view', s.view);
  const q = s.query;
  if (q.table) p.set('table', q.table);
  if (q.range.kind === 'relative') p.set('range', q.range.last);
  else {
    p.set('from', q.range.from);
    p.set('to', q.range.to);
  }
  for (const f of q.filters) p.append('filter', JSON.stringify([f.column, f.op, f.value]));
  for (const g of q.groupBy) p.append('group', g);
  for (const a of q.aggs) p.append('agg', a.fn === 'count' ? 'count' : `${a.fn}:${a.column ?? ''}`);
  for (const c of q.having) p.append('having', JSON.stringify([c.agg, c.op, c.value]));
  if (q.compare) p.set('compare', q.compare);
  for (const f of q.selection) p.append('sel', JSON.stringify([f.column, f.op, f.value]));
  if (q.heatmap) p.set('heatmap', q.heatmap);
  if (q.style !== 'lines') p.set('chart', q.style);
  if (q.total) p.set('total', '1');
  if (q.live) p.set('live', '1');
  if (q.orderBy) p.set('order', q.orderBy);
  p.set('dir', q.orderDesc ? 'desc' : 'asc');
  p.set('limit', String(q.limit));
  if (s.sql) p.set('sql', s.sql);
  if (s.trace) p.set('trace', s.trace);
  if (s.board) p.set('board', s.board);
  if (s.sort) p.set('sort', `${s.sort.desc ? '-' : ''}${s.sort.column}`);
  return p.toString();
}

function parseFilter(text: string): Filter | null {
  try {
    const v: unknown = JSON.parse(text);
    if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === 'string')) return null;
    const [column, op, value] = v as string[];
    if (!OPS.some((o) => o.op === op)) return null;
    return { column, op: op as Op, value };
  } catch {
    return null;
  }
}

function parseHaving(text: string): Having | null {
  try {
    const v: unknown = JSON.parse(text);
    if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === 'string')) return null;
    const [agg, op, value] = v as string[];
    if (!(HAVING_OPS as readonly string[]).includes(op)) return null;
    return { agg, op: op as Having['op'], value };
  } catch {
    return null;
  }
}

function parseAgg(text: string): Agg | null {
  if (text === 'count') return { fn: 'count' };
  const i = text.indexOf(':');
  if (i < 0) return null;
  const fn = text.slice(0, i);
  if (!AGG_FNS.some((f) => f.fn === fn) || fn === 'count') return null;
  return { fn: fn as AggFn, column: text.slice(i + 1) };
}

export function decode(search: string): AppState {
  const p = new URLSearchParams(search);
  const q = defaultState(p.get('table') ?? '');
  const range = p.get('range');
  const from = p.get('from');
  const to = p.get('to');
  if (from && to) q.range = { kind: 'absolute', from, to };
  else if (range && (RELATIVE_RANGES as readonly string[]).includes(range)) q.range = { kind: 'relative', last: range as Relative };
  q.filters = p.getAll('filter').map(parseFilter).filter((f): f is Filter => f !== null);
  q.groupBy = p.getAll('group').filter(Boolean);
  const aggs = p.getAll('agg').map(parseAgg).filter((a): a is Agg => a !== null);
  if (aggs.length) q.aggs = aggs;
  q.having = p.getAll('having').map(parseHaving).filter((c): c is Having => c !== null);
  q.selection = p.getAll('sel').map(parseFilter).filter((f): f is Filter => f !== null);
  const compare = p.get('compare') ?? '';
  q.compare = (COMPARE_SHIFTS as readonly string[]).includes(compare) ? (compare as CompareShift) : '';
  q.heatmap = p.get('heatmap') ?? '';
  const style = p.get('chart') ?? '';
  if ((CHART_STYLES as readonly string[]).includes(style)) q.style = style as ChartStyle;
  q.total = p.get('total') === '1';
  q.live = p.get('live') === '1';
  q.orderBy = p.get('order') ?? '';
  q.orderDesc = p.get('dir') !== 'asc';
  const limit = Number(p.get('limit'));
  if (Number.isInteger(limit) && limit > 0) q.limit = Math.min(limit, 10000);
  const view = p.get('view');
  const sort = p.get('sort');
  return {
    view: (VIEWS as readonly string[]).includes(view ?? '') ? (view as View) : 'explore',
    query: q,
    sql: p.get('sql') ?? '',
    trace: p.get('trace') ?? '',
    board: p.get('board') ?? '',
    sort: sort ? { column: sort.replace(/^-/, ''), desc: sort.startsWith('-') } : null,
  };
}
