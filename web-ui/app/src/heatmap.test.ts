import { expect, it } from 'vitest';
import { type Column, defaultState } from './model';
import { BuilderError, heatmapSql, stepRange } from './sql';
import { selectedCells, shade, stepLabel, toHeat } from './views/heatmap';
import { boxFilters, boxOf } from './bubble';

const COLUMNS: Column[] = [
  { name: 'time', type: 'Timestamp' },
  { name: 'duration_ms', type: 'Float64' },
  { name: 'odd "ms"', type: 'Int64' },
  { name: 'region', type: 'Utf8' },
];
const NOW = new Date('2026-11-26T12:00:00Z');

function state(column: string, columns = COLUMNS) {
  const s = defaultState('events');
  s.heatmap = column;
  return heatmapSql(s, columns, NOW);
}

it('buckets time like the chart and values by quarter decades, in one query', () => {
  const sql = state('duration_ms');
  expect(sql).toContain(`date_bin(INTERVAL '30 seconds', "time", TIMESTAMP '1970-01-01T00:00:00Z') AS "bucket"`);
  expect(sql).toContain(`CAST(CASE WHEN "duration_ms" > 0 THEN floor(log10(CAST("duration_ms" AS DOUBLE)) * 4) WHEN "duration_ms" IS NOT NULL THEN -1000 END AS BIGINT) AS "step"`);
  expect(sql).toContain('count(*) AS "n"');
  expect(sql).toContain(`"time" >= TIMESTAMP '2026-11-26T11:00:00.000Z' AND "time" < TIMESTAMP '2026-11-26T12:00:00.000Z' AND "duration_ms" IS NOT NULL`);
  expect(sql).toContain('GROUP BY 1, 2');
});

it('quotes the column and weights by the sample rate', () => {
  expect(state('odd "ms"')).toContain(`log10(CAST("odd ""ms""" AS DOUBLE))`);
  expect(state('duration_ms', [...COLUMNS, { name: 'samplerate', type: 'Int64' }])).toContain('sum(coalesce("samplerate", 1)) AS "n"');
});

it('takes numeric columns only', () => {
  expect(() => state('region')).toThrow(BuilderError);
  expect(() => state('nope')).toThrow(/no column "nope"/);
});

it('says what each step holds', () => {
  expect(stepRange(4)).toEqual({ low: 10, high: 10 ** 1.25 });
  expect(stepRange(-1000)).toBeNull();
  expect(stepLabel(8, 'duration_ms')).toMatch(/^100 ms – 178 ms$/);
  expect(stepLabel(-1000, 'duration_ms')).toBe('≤ 0');
});

it('lays cells on every time bucket of the window, totals and shades them', () => {
  const result = {
    columns: [],
    rows: [
      ['2026-11-26T11:00:00Z', 4, 3],
      ['2026-11-26T11:00:30Z', 8, 1],
      ['2026-11-26T11:00:30Z', 4, 6],
    ],
    stats: { elapsed_ms: 1, rows_scanned: 10 },
  };
  const heat = toHeat(result, 'duration_ms', new Date('2026-11-26T11:00:00Z'), new Date('2026-11-26T11:02:00Z'), 30);
  expect(heat.times.length).toBe(4);
  expect(heat.steps).toEqual([4, 8]);
  expect(heat.total).toBe(10);
  expect(heat.max).toBe(6);
  expect(shade(0, 6)).toBe('rgba(0,0,0,0)');
  expect(shade(6, 6)).toBe('rgb(8, 48, 107)');
});

it('finds the cells of a box it selected again from the selection', () => {
  const heat = toHeat(
    { columns: [], rows: [['2026-11-26T11:00:00Z', 4, 1], ['2026-11-26T11:00:30Z', 8, 2], ['2026-11-26T11:01:00Z', 12, 3]], stats: { elapsed_ms: 0, rows_scanned: 0 } },
    'duration_ms',
    new Date('2026-11-26T11:00:00Z'),
    new Date('2026-11-26T11:02:00Z'),
    30,
  );
  const box = { from: heat.times[1], to: heat.times[2] + 30, lowStep: 8, highStep: 12 };
  const selected = boxOf(boxFilters(box, 'duration_ms'), 'duration_ms')!;
  expect(selectedCells(heat, selected)).toEqual({ i0: 1, i1: 2, j0: 1, j1: 2 });
  expect(boxOf([{ column: 'status', op: '>=', value: '500' }], 'duration_ms')).toBeNull();
});
