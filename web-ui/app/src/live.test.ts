import { expect, it } from 'vitest';
import { type Column, defaultState } from './model';
import { applyUpdate, liveSpec, requeried, withRequeried, withSamples } from './live';
import { BuilderError } from './sql';

const COLUMNS: Column[] = [
  { name: 'time', type: 'Timestamp' },
  { name: 'region', type: 'Utf8' },
  { name: 'status', type: 'Int64' },
  { name: 'duration_ms', type: 'Float64' },
];
const NOW = new Date('2026-11-26T12:00:00Z');

function state() {
  const s = defaultState('events');
  s.range = { kind: 'relative', last: '15m' };
  s.groupBy = ['region'];
  s.aggs = [{ fn: 'count' }, { fn: 'p99', column: 'duration_ms' }, { fn: 'max', column: 'duration_ms' }];
  s.filters = [{ column: 'region', op: '!=', value: "x' OR 1=1" }];
  return s;
}

it('follows the filters (not the time range), the groups and the aggregates that add up', () => {
  const spec = liveSpec(state(), COLUMNS, NOW);
  expect(spec).toEqual({
    table: 'events',
    filter: `"region" != 'x'' OR 1=1'`,
    group_by: ['region'],
    aggregates: [{ fn: 'count' }, { fn: 'max', column: 'duration_ms' }],
    bucket_seconds: 10,
  });
  expect(requeried(state(), COLUMNS)).toEqual(['p99(duration_ms)']);
  const minOfText = { ...state(), aggs: [{ fn: 'min' as const, column: 'region' }] };
  expect(liveSpec(minOfText, COLUMNS, NOW).aggregates).toEqual([{ fn: 'count' }]);
  expect(requeried(minOfText, COLUMNS)).toEqual(['min(region)']);
  const absolute = { ...state(), range: { kind: 'absolute' as const, from: '2026-11-26T11:00:00Z', to: '2026-11-26T12:00:00Z' } };
  expect(() => liveSpec(absolute, COLUMNS, NOW)).toThrow(BuilderError);
});

it('adds counts, keeps maxima, adds buckets of drawn groups and slides the window', () => {
  const s = state();
  const series = {
    columns: [
      { name: 'bucket', type: 'Timestamp' },
      { name: 'region', type: 'Utf8' },
      { name: 'count', type: 'Int64' },
      { name: 'p99(duration_ms)', type: 'Float64' },
      { name: 'max(duration_ms)', type: 'Float64' },
    ],
    rows: [
      ['2026-11-26T11:40:00Z', 'eu', 9, 10, 12],
      ['2026-11-26T11:59:50Z', 'eu', 2, 10, 12],
    ],
    stats: { elapsed_ms: 0, rows_scanned: 0 },
  };
  const update = {
    buckets: [
      { t: Date.parse('2026-11-26T11:59:50Z') / 1000, group: ['eu'], values: [3, 40] },
      { t: Date.parse('2026-11-26T12:00:00Z') / 1000, group: ['eu'], values: [1, 5] },
      { t: Date.parse('2026-11-26T12:00:00Z') / 1000, group: ['elsewhere'], values: [7, 5] },
    ],
    samples: [],
    coverage: 1,
    missing_partitions: 0,
    lagging: false,
    lost: false,
    overflow: false,
  };
  const later = new Date('2026-11-26T12:00:05Z');
  const out = applyUpdate(series, update, s, COLUMNS, later, [['eu']]);
  expect(out.rows).toEqual([
    ['2026-11-26T11:59:50Z', 'eu', 5, 10, 40],
    ['2026-11-26T12:00:00.000Z', 'eu', 1, null, 5],
  ]);
  // A run that found nothing: the groups that come are drawn.
  const empty = applyUpdate({ ...series, rows: [] }, update, s, COLUMNS, later, []);
  expect(empty.rows).toHaveLength(3);
  expect(new Set(empty.rows.map((r) => r[1]))).toEqual(new Set(['eu', 'elsewhere']));
  // A fresh query brings the other aggregates, not the followed ones.
  const fresh = { ...series, rows: [['2026-11-26T11:59:50Z', 'eu', 999, 77, 999]] };
  expect(withRequeried(out, fresh, s, COLUMNS).rows[0]).toEqual(['2026-11-26T11:59:50Z', 'eu', 5, 77, 40]);
});

it("puts new samples on top, newest first, in the table's columns", () => {
  const samples = { columns: [{ name: 'time', type: 'Timestamp' }, { name: 'region', type: 'Utf8' }], rows: [['2026-01-01T00:00:00Z', 'eu']], stats: { elapsed_ms: 0, rows_scanned: 0 } };
  const u = {
    buckets: [],
    samples: [{ time: '2026-01-01T00:00:02Z', region: 'us', extra: 1 }, { time: '2026-01-01T00:00:01Z' }],
    coverage: 1,
    missing_partitions: 0,
    lagging: false,
    lost: false,
    overflow: false,
  };
  expect(withSamples(samples, u, 2).rows).toEqual([
    ['2026-01-01T00:00:02Z', 'us'],
    ['2026-01-01T00:00:01Z', null],
  ]);
});
