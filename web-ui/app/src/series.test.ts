import { expect, it } from 'vitest';
import { toChart, unitsOf } from './series';

const T = 'Timestamp(ns, "UTC")';

it('makes one series per group, aligned on the time axis', () => {
  const chart = toChart(
    [
      { name: 'bucket', type: T },
      { name: 'region', type: 'Utf8' },
      { name: 'count', type: 'Int64' },
    ],
    [
      ['2026-01-01T00:00:00Z', 'eu', 3],
      ['2026-01-01T00:00:00Z', 'us', 5],
      ['2026-01-01T00:01:00Z', 'us', 7],
      ['2026-01-01T00:01:00Z', null, 1],
    ],
  )!;
  const t0 = Date.parse('2026-01-01T00:00:00Z') / 1000;
  expect(chart.x).toEqual([t0, t0 + 60]);
  expect(chart.series.map((s) => [s.label, s.values])).toEqual([
    ['eu', [3, null]],
    ['us', [5, 7]],
    ['(null)', [null, 1]],
  ]);
});

it('names series by value column when there are several, and skips results without time', () => {
  const chart = toChart(
    [
      { name: 'b', type: T },
      { name: 'n', type: 'Int64' },
      { name: 'p99', type: 'Float64' },
    ],
    [['2026-01-01T00:00:00Z', 1, 2.5]],
  )!;
  expect(chart.series.map((s) => s.label)).toEqual(['n', 'p99']);
  expect(toChart([{ name: 'n', type: 'Int64' }], [[1]])).toBeNull();
  expect(toChart([{ name: 'b', type: T }, { name: 's', type: 'Utf8' }], [])).toBeNull();
});

it('gives counts and durations their own axes', () => {
  const s = (column: string) => ({ label: column, column, values: [] });
  expect(unitsOf([s('count'), s('p99(duration_ms)'), s('count distinct(user_id)'), s('avg(duration_ms)')])).toEqual(['count', 'ms']);
  expect(unitsOf([s('sum(bytes)')])).toEqual(['bytes']);
});
