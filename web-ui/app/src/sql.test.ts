import { describe, expect, it } from 'vitest';
import { type Column, type QueryState, defaultState } from './model';
import { BuilderError, bucketSeconds, comparedState, errorPosition, tokenEnd, filterSql, quoteIdent, quoteString, samplesSql, seriesSql, tableSql } from './sql';

const COLUMNS: Column[] = [
  { name: 'time', type: 'Timestamp' },
  { name: 'status', type: 'Int64' },
  { name: 'duration_ms', type: 'Float64' },
  { name: 'region', type: 'Utf8' },
  { name: 'service', type: 'Utf8' },
  { name: 'is_mobile', type: 'Boolean' },
  { name: 'tags', type: 'List<Utf8>' },
  { name: 'client.name', type: 'Utf8' },
  { name: 'odd "name"', type: 'Utf8' },
  { name: 'with space', type: 'Int64' },
];
const NOW = new Date('2026-11-26T12:00:00Z');

function state(change: (s: QueryState) => void = () => {}): QueryState {
  const s = defaultState('events');
  change(s);
  return s;
}

describe('quoting', () => {
  it('quotes identifiers, doubling double quotes', () => {
    expect(quoteIdent('client.name')).toBe('"client.name"');
    expect(quoteIdent('with space')).toBe('"with space"');
    expect(quoteIdent('odd "name"')).toBe('"odd ""name"""');
  });
  it('quotes strings, doubling single quotes', () => {
    expect(quoteString("it's")).toBe("'it''s'");
    expect(quoteString("'; DROP TABLE events; --")).toBe("'''; DROP TABLE events; --'");
  });
});

describe('filters', () => {
  const f = (column: string, op: Parameters<typeof filterSql>[0]['op'], value = '') => filterSql({ column, op, value }, COLUMNS);
  it('compares with literals of the column type', () => {
    expect(f('status', '>', '499')).toBe('"status" > 499');
    expect(f('duration_ms', '<', '1.5e3')).toBe('"duration_ms" < 1.5e3');
    expect(f('region', '=', 'eu-west-1')).toBe(`"region" = 'eu-west-1'`);
    expect(f('region', '!=', 'x')).toBe(`"region" != 'x'`);
    expect(f('is_mobile', '=', 'TRUE')).toBe('"is_mobile" = true');
    expect(f('client.name', '=', 'ios')).toBe(`"client.name" = 'ios'`);
  });
  it('builds contains, in, exists and does not exist', () => {
    expect(f('service', 'contains', "a'b")).toBe(`strpos(CAST("service" AS VARCHAR), 'a''b') > 0`);
    expect(f('status', 'in', '500, 502,,503')).toBe('"status" IN (500, 502, 503)');
    expect(f('region', 'in', 'a,b')).toBe(`"region" IN ('a', 'b')`);
    expect(f('odd "name"', 'exists')).toBe('"odd ""name""" IS NOT NULL');
    expect(f('with space', 'not_exists')).toBe('"with space" IS NULL');
    expect(f('tags', 'contains', 'beta')).toBe(`array_has("tags", 'beta')`);
  });
  it('refuses values that are not of the column type, naming them', () => {
    expect(() => f('status', '=', '1 OR 1=1')).toThrow(BuilderError);
    expect(() => f('status', '=', '1 OR 1=1')).toThrow(/"1 OR 1=1" is not a number \(column status is Int64\)/);
    expect(() => f('status', '>', '')).toThrow(/not a number/);
    expect(() => f('is_mobile', '=', 'yes')).toThrow(/not true or false/);
    expect(() => f('status', 'in', ' , ')).toThrow(/comma-separated/);
    expect(() => f('nope', '=', '1')).toThrow(/no column "nope"/);
    expect(() => f('tags', '>', 'a')).toThrow(/string set/);
  });
  it('keeps any string value inside one literal', () => {
    const nasty = ["'", "''", "\\'", "x' OR '1'='1", "a\\", '"; DROP TABLE events; --', '\n) UNION SELECT 1 --'];
    for (const v of nasty) {
      const sql = f('region', '=', v);
      const lit = sql.slice('"region" = '.length);
      // One literal: starts and ends with a quote, and every quote inside is doubled.
      expect(lit.startsWith("'") && lit.endsWith("'")).toBe(true);
      expect(lit.slice(1, -1).replace(/''/g, '')).not.toContain("'");
      expect(lit.slice(1, -1).replace(/''/g, "'")).toBe(v);
    }
  });
});

describe('table query', () => {
  it('counts over the time range by default', () => {
    expect(tableSql(state(), COLUMNS, NOW)).toBe(
      [
        'SELECT count(*) AS "count"',
        'FROM "events"',
        `WHERE "time" >= TIMESTAMP '2026-11-26T11:00:00.000Z' AND "time" < TIMESTAMP '2026-11-26T12:00:00.000Z'`,
        'ORDER BY "count" DESC',
        'LIMIT 100',
      ].join('\n'),
    );
  });
  it('groups, filters, aggregates and orders', () => {
    const sql = tableSql(
      state((s) => {
        s.range = { kind: 'relative', last: '24h' };
        s.filters = [{ column: 'status', op: '>', value: '499' }];
        s.groupBy = ['region', 'client.name'];
        s.aggs = [{ fn: 'count' }, { fn: 'p99', column: 'duration_ms' }, { fn: 'count_distinct', column: 'service' }, { fn: 'avg', column: 'duration_ms' }];
        s.orderBy = 'p99(duration_ms)';
        s.orderDesc = false;
        s.limit = 10;
      }),
      COLUMNS,
      NOW,
    );
    expect(sql).toBe(
      [
        'SELECT "region", "client.name", count(*) AS "count", approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY "duration_ms") AS "p99(duration_ms)", approx_distinct("service") AS "count distinct(service)", avg("duration_ms") AS "avg(duration_ms)"',
        'FROM "events"',
        `WHERE "time" >= TIMESTAMP '2026-11-25T12:00:00.000Z' AND "time" < TIMESTAMP '2026-11-26T12:00:00.000Z' AND "status" > 499`,
        'GROUP BY "region", "client.name"',
        'ORDER BY "p99(duration_ms)" ASC, "region" ASC, "client.name" ASC',
        'LIMIT 10',
      ].join('\n'),
    );
  });
  it('weights by the sample rate when the table has one', () => {
    const sampled = [...COLUMNS, { name: 'samplerate', type: 'Int64' }];
    const sql = tableSql(
      state((s) => {
        s.aggs = [{ fn: 'count' }, { fn: 'sum', column: 'duration_ms' }, { fn: 'avg', column: 'duration_ms' }, { fn: 'p99', column: 'duration_ms' }, { fn: 'max', column: 'duration_ms' }];
      }),
      sampled,
      NOW,
    );
    const w = 'coalesce("samplerate", 1)';
    expect(sql.split('\n')[0]).toBe(
      `SELECT sum(${w}) AS "count", sum("duration_ms" * ${w}) AS "sum(duration_ms)", ` +
        `CAST(sum("duration_ms" * ${w}) AS DOUBLE) / sum(CASE WHEN "duration_ms" IS NOT NULL THEN ${w} END) AS "avg(duration_ms)", ` +
        `approx_percentile_cont_with_weight(${w}, 0.99) WITHIN GROUP (ORDER BY "duration_ms") AS "p99(duration_ms)", max("duration_ms") AS "max(duration_ms)"`,
    );
  });
  it('uses absolute ranges as given', () => {
    const sql = tableSql(state((s) => (s.range = { kind: 'absolute', from: '2026-01-01T06:00:00Z', to: '2026-01-01T07:00:00Z' })), COLUMNS, NOW);
    expect(sql).toContain(`"time" >= TIMESTAMP '2026-01-01T06:00:00.000Z' AND "time" < TIMESTAMP '2026-01-01T07:00:00.000Z'`);
    expect(() => tableSql(state((s) => (s.range = { kind: 'absolute', from: '2026-01-02', to: '2026-01-01' })), COLUMNS, NOW)).toThrow(/from must be before to/);
  });
  it('refuses incomplete or mistyped aggregates', () => {
    expect(() => tableSql(state((s) => (s.aggs = [{ fn: 'sum', column: 'region' }])), COLUMNS, NOW)).toThrow(/sum\(region\): region is Utf8, not a number/);
    expect(() => tableSql(state((s) => (s.aggs = [{ fn: 'avg', column: '' }])), COLUMNS, NOW)).toThrow(/no column chosen/);
    expect(() => tableSql(state((s) => (s.aggs = [])), COLUMNS, NOW)).toThrow(/at least one aggregate/);
    expect(() => tableSql(state((s) => (s.groupBy = ['gone'])), COLUMNS, NOW)).toThrow(/group by: no column "gone"/);
    expect(() => tableSql(defaultState(''), COLUMNS, NOW)).toThrow(/pick a table/);
  });
  it('quotes odd table names and clamps the limit', () => {
    const sql = tableSql(state((s) => ((s.table = 'we"ird'), (s.limit = 1e9))), COLUMNS, NOW);
    expect(sql).toContain('FROM "we""ird"');
    expect(sql).toContain('LIMIT 10000');
  });
});

describe('time buckets', () => {
  it('draws each range in at most 120 points', () => {
    const b = (last: '15m' | '1h' | '6h' | '24h' | '7d') => bucketSeconds({ kind: 'relative', last }, NOW);
    expect(b('15m')).toBe(10);
    expect(b('1h')).toBe(30);
    expect(b('6h')).toBe(300);
    expect(b('24h')).toBe(1800);
    expect(b('7d')).toBe(10800);
    expect(bucketSeconds({ kind: 'absolute', from: '2026-01-01T00:00:00Z', to: '2026-01-01T00:01:00Z' }, NOW)).toBe(1);
  });
  it('bins the series and keeps it to the top groups', () => {
    const s = state((s) => {
      s.range = { kind: 'relative', last: '24h' };
      s.groupBy = ['region', 'is_mobile'];
    });
    const sql = seriesSql(s, COLUMNS, NOW, [
      ['eu', true],
      [null, false],
      ["o'hare", true],
    ]);
    expect(sql).toContain(`SELECT date_bin(INTERVAL '1800 seconds', "time", TIMESTAMP '1970-01-01T00:00:00Z') AS "bucket", "region", "is_mobile", count(*) AS "count"`);
    expect(sql).toContain(`AND (("region" = 'eu' AND "is_mobile" = true) OR ("region" IS NULL AND "is_mobile" = false) OR ("region" = 'o''hare' AND "is_mobile" = true))`);
    expect(sql).toContain('GROUP BY 1, 2, 3\nORDER BY 1, 2, 3');
    expect(seriesSql(state(), COLUMNS, NOW)).toContain('GROUP BY 1\nORDER BY 1');
  });
});

it('samples are the newest matching events', () => {
  const sql = samplesSql(state((s) => (s.filters = [{ column: 'region', op: '=', value: 'eu' }])), COLUMNS, NOW);
  expect(sql).toMatch(/^SELECT \*\nFROM "events"\nWHERE .* AND "region" = 'eu'\nORDER BY "time" DESC\nLIMIT 50$/);
});

it('finds the position a parser error names', () => {
  const doc = 'SELECT a\nFROM t WHER x';
  expect(errorPosition('found: x at Line: 2, Column: 13', doc)).toBe(doc.indexOf('x', 9));
  expect(errorPosition('Expected: an expression, found: EOF', 'SELECT a FROM t WHERE ')).toBe(20);
  expect(errorPosition('table not found', doc)).toBeNull();
});

it('underlines the whole word an error points at', () => {
  const doc = 'SELECT a FROM t WHER status > 1';
  const at = doc.indexOf('status');
  expect(doc.slice(at, tokenEnd(doc, at))).toBe('status');
  expect(tokenEnd(doc, doc.indexOf('>'))).toBe(doc.indexOf('>') + 1);
  expect(tokenEnd('x', 1)).toBe(1);
});

describe('HAVING', () => {
  it('filters groups on an aggregate, repeated as its expression', () => {
    const sql = tableSql(
      state((s) => {
        s.groupBy = ['region'];
        s.aggs = [{ fn: 'count' }, { fn: 'p99', column: 'duration_ms' }];
        s.having = [
          { agg: 'count', op: '>', value: '100' },
          { agg: 'p99(duration_ms)', op: '<', value: ' 2.5e3 ' },
        ];
      }),
      COLUMNS,
      NOW,
    );
    expect(sql).toContain('GROUP BY "region"\nHAVING count(*) > 100 AND approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY "duration_ms") < 2.5e3\nORDER BY');
  });
  it('takes only numbers, and only the query\'s aggregates', () => {
    const bad = (agg: string, value: string) => () =>
      tableSql(
        state((s) => (s.having = [{ agg, op: '>', value }])),
        COLUMNS,
        NOW,
      );
    expect(bad('count', "1; DROP TABLE events")).toThrow(BuilderError);
    expect(bad('count', "1 OR 1=1")).toThrow(/not a number/);
    expect(bad('sum(status)', '1')).toThrow(/not one of the aggregates/);
    expect(bad('', '1')).toThrow(/pick an aggregate/);
  });
  it('leaves the chart\'s per-bucket query alone', () => {
    const s = state((s) => (s.having = [{ agg: 'count', op: '>', value: '5' }]));
    expect(seriesSql(s, COLUMNS, NOW)).not.toContain('HAVING');
  });
});

describe('compare to', () => {
  it('asks the same question over the window shifted back', () => {
    const s = state((s) => {
      s.range = { kind: 'relative', last: '1h' };
      s.compare = '1d';
    });
    const then = comparedState(s, NOW)!;
    expect(then.range).toEqual({ kind: 'absolute', from: '2026-11-25T11:00:00.000Z', to: '2026-11-25T12:00:00.000Z' });
    expect(tableSql(then, COLUMNS, NOW)).toContain(`"time" >= TIMESTAMP '2026-11-25T11:00:00.000Z' AND "time" < TIMESTAMP '2026-11-25T12:00:00.000Z'`);
    expect(seriesSql(then, COLUMNS, NOW)).toContain(`"time" < TIMESTAMP '2026-11-25T12:00:00.000Z'`);
    // The same buckets: the earlier window is as long.
    expect(bucketSeconds(then.range, NOW)).toBe(bucketSeconds(s.range, NOW));
  });
  it('shifts an absolute window by a week', () => {
    const s = state((s) => {
      s.range = { kind: 'absolute', from: '2026-11-20T00:00:00Z', to: '2026-11-21T00:00:00Z' };
      s.compare = '1w';
    });
    expect(comparedState(s, NOW)!.range).toEqual({ kind: 'absolute', from: '2026-11-13T00:00:00.000Z', to: '2026-11-14T00:00:00.000Z' });
    expect(comparedState(state(), NOW)).toBeNull();
  });
});
