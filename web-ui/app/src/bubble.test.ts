import { expect, it } from 'vitest';
import { type Column, type Filter, defaultState } from './model';
import { MAX_COLUMNS, MAX_DISTINCT, TOP_VALUES, boxFilters, candidates, planOf, ranked, score, shapeSql, valuesSql } from './bubble';
import { BuilderError } from './sql';

const COLUMNS: Column[] = [
  { name: 'time', type: 'Timestamp' },
  { name: 'endpoint', type: 'Utf8' },
  { name: 'status', type: 'Int64' },
  { name: 'duration_ms', type: 'Float64' },
  { name: 'user_id', type: 'Utf8' },
  { name: 'tags', type: 'List<Utf8>' },
  { name: 'is_mobile', type: 'Boolean' },
];
const NOW = new Date('2026-11-26T12:00:00Z');
const WINDOW = `"time" >= TIMESTAMP '2026-11-26T11:00:00.000Z' AND "time" < TIMESTAMP '2026-11-26T12:00:00.000Z'`;

function state(selection: Filter[] = [{ column: 'status', op: '>=', value: '500' }]) {
  const s = defaultState('events');
  s.selection = selection;
  return s;
}

function result(rows: unknown[][]) {
  return { columns: [], rows, stats: { elapsed_ms: 1, rows_scanned: 1 } };
}

it('counts the selection and the rest of the window, and each column\'s distinct values, in one query', () => {
  const sql = shapeSql(state(), COLUMNS, NOW);
  expect(sql).toContain(`sum(CASE WHEN coalesce("status" >= 500, false) THEN 1 ELSE 0 END) AS "inside"`);
  expect(sql).toContain(`sum(CASE WHEN coalesce("status" >= 500, false) THEN 0 ELSE 1 END) AS "outside"`);
  expect(sql).toContain(`WHERE ${WINDOW}`);
  expect(sql).toContain(`approx_distinct(CAST("endpoint" AS VARCHAR)) AS "d0"`);
  expect(sql).toContain(`approx_distinct(array_to_string("tags", ', '))`);
  // The selection's own column, the time and other timestamps are not compared.
  expect(candidates(state(), COLUMNS).map((c) => c.name)).toEqual(['endpoint', 'duration_ms', 'user_id', 'tags', 'is_mobile']);
});

it('keeps hostile selection values inside literals and refuses values of the wrong type', () => {
  const sql = shapeSql(state([{ column: 'endpoint', op: '=', value: "x') OR 1=1 --" }]), COLUMNS, NOW);
  expect(sql).toContain(`coalesce("endpoint" = 'x'') OR 1=1 --', false)`);
  expect(() => shapeSql(state([{ column: 'status', op: '>=', value: '5xx' }]), COLUMNS, NOW)).toThrow(BuilderError);
  expect(() => shapeSql(state([]), COLUMNS, NOW)).toThrow(/add a condition/);
});

it('weights by the sample rate', () => {
  const sql = shapeSql(state(), [...COLUMNS, { name: 'samplerate', type: 'Int64' }], NOW);
  expect(sql).toContain(`THEN coalesce("samplerate", 1) ELSE 0 END) AS "inside"`);
  expect(sql).not.toContain('approx_distinct(CAST("samplerate"');
});

it('bins wide numeric columns, leaves id-like columns out, and asks for the top values of the rest in one query', () => {
  const s = state();
  // endpoint, duration_ms, user_id, tags, is_mobile
  const plan = planOf(result([[40, 960, 12, 900, MAX_DISTINCT + 1, 30, 2]]), s, COLUMNS);
  expect(plan.inside).toBe(40);
  expect(plan.outside).toBe(960);
  expect(plan.compared.map((c) => [c.column.name, c.binned])).toEqual([
    ['endpoint', false],
    ['duration_ms', true],
    ['tags', false],
    ['is_mobile', false],
  ]);
  expect(plan.skipped).toEqual([{ column: 'user_id', distinct: MAX_DISTINCT + 1 }]);
  const sql = valuesSql(s, COLUMNS, NOW, plan);
  expect(sql.match(/UNION ALL/g)).toHaveLength(3);
  expect(sql).toContain(`SELECT 'duration_ms' AS "column", CAST(CAST(CASE WHEN "duration_ms" > 0 THEN floor(log10(CAST("duration_ms" AS DOUBLE)) * 4) WHEN "duration_ms" IS NOT NULL THEN -1000 END AS BIGINT) AS VARCHAR) AS "value"`);
  expect(sql).toContain(`ORDER BY greatest(CAST("inside" AS DOUBLE) / 40, CAST("outside" AS DOUBLE) / 960) DESC, "value"`);
  expect(sql).toContain(`WHERE "rank" <= ${TOP_VALUES}`);
  expect(sql.match(new RegExp(`WHERE ${WINDOW.replace(/[().*+?[\]]/g, '\\$&')} GROUP BY 2`, 'g'))).toHaveLength(4);
});

it('quotes a column name that would end the literal naming it', () => {
  const odd: Column[] = [...COLUMNS, { name: "it's", type: 'Utf8' }];
  const plan = planOf(result([[1, 1, 1, 1, 1, 1, 1, 1]]), state(), odd);
  expect(valuesSql(state(), odd, NOW, plan)).toContain(`SELECT 'it''s' AS "column", CAST("it's" AS VARCHAR) AS "value"`);
});

it('scores by total variation distance and ranks the most different column first', () => {
  expect(score([{ value: 'a', inside: 1, outside: 0 }])).toBe(1);
  expect(score([{ value: 'a', inside: 0.5, outside: 0.5 }])).toBe(0);
  // Shares not shown count as "everything else".
  expect(score([{ value: 'a', inside: 0.3, outside: 0.1 }])).toBeCloseTo(0.2);
  const s = state();
  const plan = planOf(result([[10, 90, 5, 0, 0, 0, 2]]), s, COLUMNS);
  const columns = ranked(
    result([
      ['endpoint', '/checkout', 10, 0],
      ['endpoint', '/home', 0, 90],
      ['is_mobile', 'false', 5, 45],
      ['is_mobile', 'true', 5, 45],
    ]),
    plan,
  );
  expect(columns.map((c) => [c.column, c.score])).toEqual([
    ['endpoint', 1],
    ['is_mobile', 0],
  ]);
  expect(columns[0].values[0]).toEqual({ value: '/checkout', inside: 1, outside: 0 });
});

it('turns a box on the heatmap into conditions on the time and the column', () => {
  const box = { from: Date.parse('2026-11-26T11:00:00Z') / 1000, to: Date.parse('2026-11-26T11:05:00Z') / 1000, lowStep: 8, highStep: 11 };
  expect(boxFilters(box, 'duration_ms')).toEqual([
    { column: 'time', op: '>=', value: '2026-11-26T11:00:00.000Z' },
    { column: 'time', op: '<', value: '2026-11-26T11:05:00.000Z' },
    { column: 'duration_ms', op: '>=', value: '100' },
    { column: 'duration_ms', op: '<', value: String(10 ** 3) },
  ]);
  expect(boxFilters({ ...box, lowStep: -1000, highStep: -1000 }, 'x').slice(2)).toEqual([{ column: 'x', op: '<=', value: '0' }]);
  expect(boxFilters({ ...box, lowStep: -1000, highStep: 0 }, 'x').slice(2)).toEqual([{ column: 'x', op: '<', value: String(10 ** 0.25) }]);
});

it('names the columns beyond the first ones it compares', () => {
  const wide: Column[] = [{ name: 'time', type: 'Timestamp' }, ...Array.from({ length: MAX_COLUMNS + 2 }, (_, i) => ({ name: `c${i}`, type: 'Utf8' }))];
  const s = state([{ column: 'c0', op: '=', value: 'x' }]);
  const plan = planOf(result([[1, 1, ...Array(MAX_COLUMNS).fill(3)]]), s, wide);
  expect(plan.compared).toHaveLength(MAX_COLUMNS);
  expect(plan.skipped).toEqual([{ column: `c${MAX_COLUMNS + 1}` }]);
});
