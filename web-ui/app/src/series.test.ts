import { expect, it } from 'vitest';
import { stacked, toChart, totalOf, unitsOf } from './series';

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

it('stacks the series of the first unit, gaps as 0, and totals them', () => {
  const series = [
    { label: 'eu', column: 'count', values: [1, null, 3] },
    { label: 'us', column: 'count', values: [2, 5, null] },
    { label: 'p99', column: 'p99(duration_ms)', values: [9, 9, 9] },
  ];
  const s = stacked(series);
  expect(s.map((x) => x.values)).toEqual([
    [1, 0, 3],
    [3, 5, 3],
    [9, 9, 9],
  ]);
  expect(totalOf(series)).toEqual({ label: 'total', column: 'count', values: [3, 5, 3] });
  // An earlier window laid over the chart is not part of the total.
  expect(totalOf([...series, { label: 'eu (1h before)', column: 'count', values: [7, 7, 7], dashed: true }])!.values).toEqual([3, 5, 3]);
  expect(totalOf([])).toBeNull();
});
