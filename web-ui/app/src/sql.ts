// The SQL builder: turns the explorer's state into DataFusion SQL.
//
// Every name is quoted as an identifier and every value is either checked
// to be a number/boolean or quoted as a string literal, so nothing typed in
// the builder can change the statement's structure.

import { type Agg, type Column, type Filter, type Having, type QueryState, type TimeRange, RANGE_SECONDS, SHIFT_SECONDS, aggLabel } from './model';

export class BuilderError extends Error {}

/** `"name"`, with `"` doubled: any column name, dots, spaces and quotes included. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** `'text'`, with `'` doubled (DataFusion's SQL has no backslash escapes). */
export function quoteString(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

const NUMBER = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;
const NUMERIC_TYPES = new Set(['Int64', 'Float64', 'UInt64', 'Int32', 'Float32']);

export function isNumeric(type: string): boolean {
  return NUMERIC_TYPES.has(type);
}

/** A literal of the column's type, or a BuilderError naming what is wrong. */
export function literal(value: string, column: Column): string {
  const v = value.trim();
  if (isNumeric(column.type)) {
    if (!NUMBER.test(v)) throw new BuilderError(`"${value}" is not a number (column ${column.name} is ${column.type})`);
    return v;
  }
  if (column.type === 'Boolean') {
    const b = v.toLowerCase();
    if (b !== 'true' && b !== 'false') throw new BuilderError(`"${value}" is not true or false (column ${column.name} is Boolean)`);
    return b;
  }
  if (column.type === 'Timestamp') {
    if (Number.isNaN(Date.parse(v))) throw new BuilderError(`"${value}" is not a time (column ${column.name})`);
    return `TIMESTAMP ${quoteString(v)}`;
  }
  return quoteString(value);
}

export function columnOf(columns: Column[], name: string | undefined, what: string): Column {
  const c = columns.find((c) => c.name === name);
  if (!c) throw new BuilderError(`${what}: no column ${name ? `"${name}"` : 'chosen'}`);
  return c;
}

export function filterSql(f: Filter, columns: Column[]): string {
  const col = columnOf(columns, f.column, 'filter');
  const id = quoteIdent(col.name);
  if (f.op === 'exists') return `${id} IS NOT NULL`;
  if (f.op === 'not_exists') return `${id} IS NULL`;
  if (col.type.startsWith('List')) {
    if (f.op === '=' || f.op === 'contains') return `array_has(${id}, ${quoteString(f.value)})`;
    if (f.op === '!=') return `NOT array_has(${id}, ${quoteString(f.value)})`;
    throw new BuilderError(`filter on ${col.name}: a string set takes =, !=, contains, exists`);
  }
  switch (f.op) {
    case '=':
    case '!=':
    case '<':
    case '>':
    case '<=':
    case '>=':
      return `${id} ${f.op} ${literal(f.value, col)}`;
    case 'contains':
      return `strpos(CAST(${id} AS VARCHAR), ${quoteString(f.value)}) > 0`;
    case 'in': {
      const items = f.value.split(',').map((s) => s.trim()).filter((s) => s !== '');
      if (items.length === 0) throw new BuilderError(`filter on ${col.name}: "in" needs a comma-separated list`);
      return `${id} IN (${items.map((s) => literal(s, col)).join(', ')})`;
    }
  }
}

/** The column of an event's sample rate: the event stands for that many. */
export const SAMPLE_RATE = 'samplerate';

/**
 * The weight of a row when the table has sampled events (NULL: 1), so that
 * counts, sums, averages and percentiles speak of the events the samples
 * stand for; null when it has none.
 */
export function sampleWeight(columns: Column[]): string | null {
  return columns.some((c) => c.name === SAMPLE_RATE) ? `coalesce(${quoteIdent(SAMPLE_RATE)}, 1)` : null;
}

export function aggSql(a: Agg, columns: Column[]): string {
  const w = sampleWeight(columns);
  if (a.fn === 'count') return w ? `sum(${w})` : 'count(*)';
  const col = columnOf(columns, a.column, aggLabel(a));
  const id = quoteIdent(col.name);
  const numeric = isNumeric(col.type);
  const needNumber = () => {
    if (!numeric) throw new BuilderError(`${aggLabel(a)}: ${col.name} is ${col.type}, not a number`);
  };
  switch (a.fn) {
    case 'sum':
      needNumber();
      return w ? `sum(${id} * ${w})` : `sum(${id})`;
    case 'avg':
      needNumber();
      return w ? `CAST(sum(${id} * ${w}) AS DOUBLE) / sum(CASE WHEN ${id} IS NOT NULL THEN ${w} END)` : `avg(${id})`;
    case 'min':
    case 'max':
      return `${a.fn}(${id})`;
    case 'p50':
    case 'p90':
    case 'p99':
      needNumber();
      return w
        ? `approx_percentile_cont_with_weight(${w}, 0.${a.fn.slice(1)}) WITHIN GROUP (ORDER BY ${id})`
        : `approx_percentile_cont(0.${a.fn.slice(1)}) WITHIN GROUP (ORDER BY ${id})`;
    case 'count_distinct':
      return `approx_distinct(${id})`;
  }
}

/** The time range as two instants, relative ranges ending at `now`. */
export function resolveRange(range: TimeRange, now: Date): { from: Date; to: Date } {
  if (range.kind === 'relative') {
    return { from: new Date(now.getTime() - RANGE_SECONDS[range.last] * 1000), to: now };
  }
  const from = new Date(range.from);
  const to = new Date(range.to);
  if (Number.isNaN(from.getTime()) || Number.isNaN(to.getTime())) throw new BuilderError('time range: from and to must be times');
  if (from >= to) throw new BuilderError('time range: from must be before to');
  return { from, to };
}

const BUCKETS = [1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400];
const MAX_POINTS = 120;

/** The smallest bucket (seconds) that draws the range in at most 120 points. */
export function bucketSeconds(range: TimeRange, now: Date): number {
  const { from, to } = resolveRange(range, now);
  const span = (to.getTime() - from.getTime()) / 1000;
  return BUCKETS.find((b) => span / b <= MAX_POINTS) ?? BUCKETS[BUCKETS.length - 1];
}

/** The window and the filters: what every query of a run is about. */
export function whereSql(s: QueryState, columns: Column[], now: Date): string {
  const { from, to } = resolveRange(s.range, now);
  const parts = [
    `"time" >= TIMESTAMP ${quoteString(from.toISOString())}`,
    `"time" < TIMESTAMP ${quoteString(to.toISOString())}`,
    ...s.filters.map((f) => filterSql(f, columns)),
  ];
  return parts.join(' AND ');
}

function checkTable(s: QueryState, columns: Column[]) {
  if (!s.table) throw new BuilderError('pick a table');
  for (const g of s.groupBy) columnOf(columns, g, 'group by');
  if (s.aggs.length === 0) throw new BuilderError('pick at least one aggregate');
}

/** `HAVING` conditions, each on one of the query's aggregates and a number. */
export function havingSql(s: QueryState, columns: Column[]): string {
  return s.having
    .map((c: Having) => {
      const agg = s.aggs.find((a) => aggLabel(a) === c.agg);
      if (!agg) throw new BuilderError(`HAVING: ${c.agg ? `"${c.agg}" is not one of the aggregates` : 'pick an aggregate'}`);
      const v = c.value.trim();
      if (!NUMBER.test(v)) throw new BuilderError(`HAVING ${c.agg}: "${c.value}" is not a number`);
      return `${aggSql(agg, columns)} ${c.op} ${v}`;
    })
    .join(' AND ');
}

/** The window `shift` earlier: what "Compare to" asks about. */
export function shiftedRange(range: TimeRange, now: Date, shiftSeconds: number): TimeRange {
  const { from, to } = resolveRange(range, now);
  const back = (d: Date) => new Date(d.getTime() - shiftSeconds * 1000).toISOString();
  return { kind: 'absolute', from: back(from), to: back(to) };
}

/** The state of the comparison query: the same question over the shifted window. */
export function comparedState(s: QueryState, now: Date): QueryState | null {
  if (!s.compare) return null;
  return { ...s, range: shiftedRange(s.range, now, SHIFT_SECONDS[s.compare]) };
}

/** The grouped aggregate shown in the results table. */
export function tableSql(s: QueryState, columns: Column[], now: Date): string {
  checkTable(s, columns);
  const having = havingSql(s, columns);
  const groups = s.groupBy.map(quoteIdent);
  const select = [...groups, ...s.aggs.map((a) => `${aggSql(a, columns)} AS ${quoteIdent(aggLabel(a))}`)];
  const labels = [...s.groupBy, ...s.aggs.map(aggLabel)];
  const order = labels.includes(s.orderBy) ? s.orderBy : aggLabel(s.aggs[0]);
  const tie = s.groupBy.map((g) => `${quoteIdent(g)} ASC`);
  const limit = Math.max(1, Math.min(10000, Math.floor(s.limit) || 100));
  return [
    `SELECT ${select.join(', ')}`,
    `FROM ${quoteIdent(s.table)}`,
    `WHERE ${whereSql(s, columns, now)}`,
    groups.length ? `GROUP BY ${groups.join(', ')}` : '',
    having ? `HAVING ${having}` : '',
    `ORDER BY ${[`${quoteIdent(order)} ${s.orderDesc ? 'DESC' : 'ASC'}`, ...tie].join(', ')}`,
    `LIMIT ${limit}`,
  ]
    .filter(Boolean)
    .join('\n');
}

/** `g = v` for one group's values (NULL-safe). */
function groupMatch(groupBy: string[], columns: Column[], values: unknown[]): string {
  return groupBy
    .map((g, i) => {
      const v = values[i];
      const id = quoteIdent(g);
      if (v === null || v === undefined) return `${id} IS NULL`;
      return `${id} = ${literal(String(v), columnOf(columns, g, 'group by'))}`;
    })
    .join(' AND ');
}

/**
 * The time series: the aggregates per time bucket, one series per group.
 * `topGroups` (group values from the results table) confines it to the
 * groups the table shows, so that a high-cardinality column does not
 * bring thousands of series.
 */
export function seriesSql(s: QueryState, columns: Column[], now: Date, topGroups: unknown[][] = []): string {
  checkTable(s, columns);
  const bucket = bucketSeconds(s.range, now);
  const groups = s.groupBy.map(quoteIdent);
  const select = [
    `date_bin(INTERVAL '${bucket} seconds', "time", TIMESTAMP '1970-01-01T00:00:00Z') AS "bucket"`,
    ...groups,
    ...s.aggs.map((a) => `${aggSql(a, columns)} AS ${quoteIdent(aggLabel(a))}`),
  ];
  let where = whereSql(s, columns, now);
  if (groups.length && topGroups.length) {
    where += ` AND (${topGroups.map((v) => `(${groupMatch(s.groupBy, columns, v)})`).join(' OR ')})`;
  }
  const by = Array.from({ length: groups.length + 1 }, (_, i) => String(i + 1));
  return [
    `SELECT ${select.join(', ')}`,
    `FROM ${quoteIdent(s.table)}`,
    `WHERE ${where}`,
    `GROUP BY ${by.join(', ')}`,
    `ORDER BY ${by.join(', ')}`,
  ].join('\n');
}

/** Value buckets per decade of a heatmap: 10^(k/4), so each is ×1.78. */
export const HEAT_STEPS = 4;

/** The log-scaled value step of a numeric column (see `heatmapSql`); NULL stays NULL. */
export function stepSql(id: string): string {
  return `CAST(CASE WHEN ${id} > 0 THEN floor(log10(CAST(${id} AS DOUBLE)) * ${HEAT_STEPS}) WHEN ${id} IS NOT NULL THEN -1000 END AS BIGINT)`;
}

/**
 * The heatmap of a numeric column: events per time bucket (the chart's)
 * and value bucket, in one grouped query. Value buckets are log-scaled
 * (`floor(log10(v) * 4)`, bucket k holds [10^(k/4), 10^((k+1)/4))), as
 * latencies spread over decades; values ≤ 0 share bucket -1000. Counts are
 * weighted by the sample rate, as the other views' are.
 */
export function heatmapSql(s: QueryState, columns: Column[], now: Date): string {
  if (!s.table) throw new BuilderError('pick a table');
  const col = columnOf(columns, s.heatmap, 'heatmap');
  if (!isNumeric(col.type)) throw new BuilderError(`heatmap: ${col.name} is ${col.type}, not a number`);
  const id = quoteIdent(col.name);
  const bucket = bucketSeconds(s.range, now);
  const w = sampleWeight(columns);
  return [
    `SELECT date_bin(INTERVAL '${bucket} seconds', "time", TIMESTAMP '1970-01-01T00:00:00Z') AS "bucket",`,
    `${stepSql(id)} AS "step",`,
    `${w ? `sum(${w})` : 'count(*)'} AS "n"`,
    `FROM ${quoteIdent(s.table)}`,
    `WHERE ${whereSql(s, columns, now)} AND ${id} IS NOT NULL`,
    `GROUP BY 1, 2`,
    `ORDER BY 1, 2`,
  ].join('\n');
}

/** The values a heatmap step holds: [low, high); step -1000 is "≤ 0". */
export function stepRange(step: number): { low: number; high: number } | null {
  if (step <= -1000) return null;
  return { low: 10 ** (step / HEAT_STEPS), high: 10 ** ((step + 1) / HEAT_STEPS) };
}

/** Raw events matching the filters, newest first. */
export function samplesSql(s: QueryState, columns: Column[], now: Date, limit = 50): string {
  if (!s.table) throw new BuilderError('pick a table');
  return [`SELECT *`, `FROM ${quoteIdent(s.table)}`, `WHERE ${whereSql(s, columns, now)}`, `ORDER BY "time" DESC`, `LIMIT ${limit}`].join('\n');
}

/** `Line: 1, Column: 8` in DataFusion's parser messages, as a document offset. */
export function errorPosition(message: string, doc: string): number | null {
  if (/found: EOF/.test(message)) return Math.max(0, doc.trimEnd().length - 1);
  const m = /Line: (\d+), Column: (\d+)/.exec(message);
  if (!m) return null;
  const lines = doc.split('\n');
  const line = Number(m[1]) - 1;
  if (line < 0 || line >= lines.length) return null;
  const before = lines.slice(0, line).reduce((a, l) => a + l.length + 1, 0);
  return Math.min(before + Math.max(0, Number(m[2]) - 1), doc.length);
}

/** The end of the word starting at `at` (at least one character), for underlining it. */
export function tokenEnd(doc: string, at: number): number {
  const m = /^[\w."]+/.exec(doc.slice(at));
  return Math.min(doc.length, at + Math.max(1, m ? m[0].length : 1));
}
