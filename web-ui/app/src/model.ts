// The explorer's query state: what the builder edits, what the URL holds.

export type Op = '=' | '!=' | '<' | '>' | '<=' | '>=' | 'contains' | 'in' | 'exists' | 'not_exists';

export const OPS: { op: Op; label: string }[] = [
  { op: '=', label: '=' },
  { op: '!=', label: '!=' },
  { op: '<', label: '<' },
  { op: '>', label: '>' },
  { op: '<=', label: '<=' },
  { op: '>=', label: '>=' },
  { op: 'contains', label: 'contains' },
  { op: 'in', label: 'in' },
  { op: 'exists', label: 'exists' },
  { op: 'not_exists', label: 'does not exist' },
];

export interface Filter {
  column: string;
  op: Op;
  /** As typed; `in` takes a comma-separated list. Ignored by (not_)exists. */
  value: string;
}

export type AggFn = 'count' | 'sum' | 'avg' | 'min' | 'max' | 'p50' | 'p90' | 'p99' | 'count_distinct';

export const AGG_FNS: { fn: AggFn; label: string }[] = [
  { fn: 'count', label: 'count' },
  { fn: 'sum', label: 'sum' },
  { fn: 'avg', label: 'avg' },
  { fn: 'min', label: 'min' },
  { fn: 'max', label: 'max' },
  { fn: 'p50', label: 'p50' },
  { fn: 'p90', label: 'p90' },
  { fn: 'p99', label: 'p99' },
  { fn: 'count_distinct', label: 'count distinct' },
];

export interface Agg {
  fn: AggFn;
  /** Every function but `count` needs a column. */
  column?: string;
}

export const RELATIVE_RANGES = ['15m', '1h', '6h', '24h', '7d'] as const;
export type Relative = (typeof RELATIVE_RANGES)[number];

export type TimeRange =
  | { kind: 'relative'; last: Relative }
  /** ISO 8601 instants. */
  | { kind: 'absolute'; from: string; to: string };

/** A condition on an aggregate's value (SQL's HAVING): `count > 100`. */
export interface Having {
  /** The aggregate's label, as `aggLabel` gives it. */
  agg: string;
  op: '=' | '!=' | '<' | '>';
  value: string;
}

export const HAVING_OPS = ['>', '<', '=', '!='] as const;

/** How far back "Compare to" looks: the same query over the window shifted by it. */
export const COMPARE_SHIFTS = ['1h', '1d', '1w'] as const;
export type CompareShift = (typeof COMPARE_SHIFTS)[number];
export const SHIFT_SECONDS: Record<CompareShift, number> = { '1h': 3600, '1d': 86400, '1w': 7 * 86400 };

export const CHART_STYLES = ['lines', 'stacked', 'bars'] as const;
export type ChartStyle = (typeof CHART_STYLES)[number];

export interface QueryState {
  table: string;
  range: TimeRange;
  filters: Filter[];
  groupBy: string[];
  aggs: Agg[];
  having: Having[];
  /** Empty: no comparison. */
  compare: CompareShift | '';
  /**
   * "What is different": the conditions (ANDed) that pick the selected
   * events, compared with the rest of the window; empty: no comparison.
   */
  selection: Filter[];
  /** A numeric column drawn as a heatmap over time; empty: none. */
  heatmap: string;
  /** How the chart draws its series. */
  style: ChartStyle;
  /** A line for the sum of the series (of the first unit). */
  total: boolean;
  /** Follow the view as events arrive (`live.ts`). */
  live: boolean;
  /** A result column's name (an aggregate's label or a group column); empty: the first aggregate. */
  orderBy: string;
  orderDesc: boolean;
  limit: number;
}

export interface Column {
  name: string;
  /** A logical type as `/v1/tables` reports it: Timestamp, Int64, Float64, Utf8, Boolean, List<Utf8>. */
  type: string;
}

export function defaultState(table = ''): QueryState {
  return {
    table,
    range: { kind: 'relative', last: '1h' },
    filters: [],
    groupBy: [],
    aggs: [{ fn: 'count' }],
    having: [],
    compare: '',
    selection: [],
    heatmap: '',
    style: 'lines',
    total: false,
    live: false,
    orderBy: '',
    orderDesc: true,
    limit: 100,
  };
}

export const RANGE_SECONDS: Record<Relative, number> = {
  '15m': 15 * 60,
  '1h': 3600,
  '6h': 6 * 3600,
  '24h': 24 * 3600,
  '7d': 7 * 24 * 3600,
};

/** A label for an aggregate, also its column name in results: `count`, `p99(duration_ms)`. */
export function aggLabel(a: Agg): string {
  const name = AGG_FNS.find((f) => f.fn === a.fn)?.label ?? a.fn;
  return a.fn === 'count' ? 'count' : `${name}(${a.column ?? ''})`;
}
