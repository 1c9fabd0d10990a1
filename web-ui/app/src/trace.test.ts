import { expect, it } from 'vitest';
import { MAX_SPANS, isError, spanSql, toTrace, traceSql, traceTables } from './trace';

const TABLES = [
  {
    name: 'frontend',
    columns: [
      { name: 'time', type: 'Timestamp' },
      { name: 'trace.trace_id', type: 'Utf8' },
      { name: 'trace.span_id', type: 'Utf8' },
      { name: 'trace.parent_id', type: 'Utf8' },
      { name: 'name', type: 'Utf8' },
      { name: 'service.name', type: 'Utf8' },
      { name: 'duration_ms', type: 'Float64' },
      { name: 'error', type: 'Boolean' },
    ],
  },
  {
    name: "db's spans",
    columns: [
      { name: 'time', type: 'Timestamp' },
      { name: 'trace.trace_id', type: 'Utf8' },
      { name: 'trace.span_id', type: 'Utf8' },
    ],
  },
  { name: 'events', columns: [{ name: 'time', type: 'Timestamp' }, { name: 'trace.trace_id', type: 'Utf8' }] },
];

function result(rows: unknown[][]) {
  return { columns: [], rows, stats: { elapsed_ms: 1, rows_scanned: 1 } };
}

it('gathers the trace from every table with trace and span ids, in one query', () => {
  expect(traceTables(TABLES).map((t) => t.name)).toEqual(['frontend', "db's spans"]);
  const sql = traceSql(TABLES, "abc' OR '1'='1");
  expect(sql.match(/UNION ALL/g)).toHaveLength(1);
  expect(sql).toContain(`FROM "frontend" WHERE CAST("trace.trace_id" AS VARCHAR) = 'abc'' OR ''1''=''1' AND "trace.span_id" IS NOT NULL`);
  expect(sql).toContain(`CAST("service.name" AS VARCHAR) AS "service"`);
  expect(sql).toContain(`CAST("duration_ms" AS DOUBLE) AS "duration_ms"`);
  // A table without those columns answers NULLs, and its own name as the service.
  expect(sql).toContain(`SELECT 'db''s spans' AS "table", extract(epoch FROM "time") AS "start", CAST("trace.span_id" AS VARCHAR) AS "span_id", CAST(NULL AS VARCHAR) AS "parent_id", CAST(NULL AS VARCHAR) AS "name", CAST('db''s spans' AS VARCHAR) AS "service", CAST(NULL AS DOUBLE) AS "duration_ms", CAST(NULL AS VARCHAR) AS "error" FROM "db's spans"`);
  expect(sql).toContain(`LIMIT ${MAX_SPANS + 1}`);
  expect(() => traceSql([TABLES[2]], 'x')).toThrow(/trace.span_id/);
  expect(spanSql("db's spans", 't', "s'1")).toBe(`SELECT * FROM "db's spans" WHERE CAST("trace.trace_id" AS VARCHAR) = 't' AND CAST("trace.span_id" AS VARCHAR) = 's''1' LIMIT 1`);
});

it('nests spans under their parents, children by start, and spans the trace', () => {
  const t = toTrace(
    't1',
    result([
      ['frontend', 100.0, 'root', '', 'GET /', 'frontend', 120, 'false'],
      ['frontend', 100.01, 'charge', 'root', 'charge', 'frontend', 60, 'true'],
      ['db', 100.02, 'sql', 'charge', 'SELECT', 'db', 20, null],
      ['frontend', 100.08, 'render', 'root', 'render', 'frontend', 30, null],
      ['db', 100.05, 'lost', 'gone', 'orphan', 'db', 1, 'card declined'],
    ]),
  );
  expect(t.spans.map((s) => [s.spanId, s.depth])).toEqual([
    ['root', 0],
    ['charge', 1],
    ['sql', 2],
    ['render', 1],
    ['lost', 0],
  ]);
  expect(t.spans.find((s) => s.spanId === 'lost')?.orphan).toBe(true);
  const self = toTrace('t', result([['a', 1, 'x', 'x', 'x', 's', 1, null]]));
  expect(self.spans.map((s) => [s.depth, s.orphan])).toEqual([[0, false]]);
  expect(t.spans.filter((s) => s.error).map((s) => s.spanId)).toEqual(['charge', 'lost']);
  expect(t.durationMs).toBeCloseTo(120, 6);
  expect(t.truncated).toBe(false);
});

it('draws a cycle of parents instead of losing it, and says when the trace was cut', () => {
  const t = toTrace('t', result([['a', 1, 'x', 'y', 'x', 's', 1, null], ['a', 2, 'y', 'x', 'y', 's', 1, null]]));
  expect(t.spans.map((s) => s.spanId).sort()).toEqual(['x', 'y']);
  const many = toTrace('t', result(Array.from({ length: MAX_SPANS + 1 }, (_, i) => ['a', i, `s${i}`, null, 'n', 's', 1, null])));
  expect(many.spans).toHaveLength(MAX_SPANS);
  expect(many.truncated).toBe(true);
});

it('reads error values the way services write them', () => {
  expect([true, 'true', 'timeout', 1].map(isError)).toEqual([true, true, true, true]);
  expect([false, 'false', '', '0', null, undefined].map(isError)).toEqual([false, false, false, false, false, false]);
});
