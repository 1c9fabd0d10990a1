import { expect, it } from 'vitest';
import { changePercent, overlay, withThen } from './compare';

it('lays the earlier window over the current one, dashed and labelled', () => {
  const now = { x: [100, 160], series: [{ label: 'count', column: 'count', values: [1, 2] }] };
  const then = { x: [40, 100], series: [{ label: 'count', column: 'count', values: [5, 6] }] };
  const c = overlay(now, then, 60, '1h');
  expect(c.x).toEqual([100, 160]);
  expect(c.series.map((s) => s.label)).toEqual(['count', 'count (1h before)']);
  expect(c.series[1].values).toEqual([5, 6]);
  expect(c.series[1].dashed).toBe(true);
  expect(c.series[0].dashed).toBeUndefined();
});

it('keeps times only one window has', () => {
  const now = { x: [100], series: [{ label: 'count', column: 'count', values: [1] }] };
  const then = { x: [100], series: [{ label: 'count', column: 'count', values: [7] }] };
  const c = overlay(now, then, 30, '1d');
  expect(c.x).toEqual([100, 130]);
  expect(c.series[0].values).toEqual([1, null]);
  expect(c.series[1].values).toEqual([null, 7]);
});

it('adds each aggregate then and its change, matched by group', () => {
  const cols = [
    { name: 'region', type: 'Utf8' },
    { name: 'count', type: 'Int64' },
  ];
  const now = { columns: cols, rows: [['eu', 150], ['us', 10], [null, 4]], stats: { elapsed_ms: 1, rows_scanned: 1 } };
  const then = { columns: cols, rows: [['us', 20], ['eu', 100], [null, 0]], stats: { elapsed_ms: 1, rows_scanned: 1 } };
  const t = withThen(now, then, 1, '1w');
  expect(t.columns.map((c) => c.name)).toEqual(['region', 'count', 'count (1w before)', 'count change %']);
  expect(t.rows).toEqual([
    ['eu', 150, 100, 50],
    ['us', 10, 20, -50],
    [null, 4, 0, null],
  ]);
});

it('has no change without a base', () => {
  expect(changePercent(5, null)).toBeNull();
  expect(changePercent(5, 0)).toBeNull();
  expect(changePercent(3, 4)).toBe(-25);
});
