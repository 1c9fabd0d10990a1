import { expect, it } from 'vitest';
import { defaultState } from './model';
import { type AppState, decode, encode } from './url';

it('round-trips the whole state through the query string', () => {
  const s: AppState = {
    view: 'explore',
    query: {
      ...defaultState('events'),
      range: { kind: 'absolute', from: '2026-01-01T06:00:00.000Z', to: '2026-01-01T07:00:00.000Z' },
      filters: [
        { column: 'client.name', op: 'contains', value: `a|b"c'&=` },
        { column: 'status', op: 'exists', value: '' },
      ],
      groupBy: ['region', 'with space'],
      aggs: [{ fn: 'count' }, { fn: 'p99', column: 'odd:name' }],
      having: [{ agg: 'p99(odd:name)', op: '<', value: '2.5' }],
      compare: '1d',
      selection: [{ column: 'status', op: '>=', value: '500' }],
      heatmap: 'duration_ms',
      style: 'bars',
      total: true,
      live: true,
      orderBy: 'p99(odd:name)',
      orderDesc: false,
      limit: 25,
    },
    sql: "SELECT 'x' & 1",
    trace: 'a&b=c',
    board: 'on call',
    sort: { column: 'count', desc: true },
  };
  expect(decode(encode(s))).toEqual(s);
});

it('falls back to defaults for malformed parameters', () => {
  const s = decode('view=nope&range=3y&filter=notjson&filter=["a","like","b"]&agg=median:x&limit=-4&having=["count","~","1"]&compare=2y&sel=[1,2]&chart=pie&total=yes');
  expect(s.view).toBe('explore');
  expect(s.query).toEqual(defaultState(''));
  expect(s.sort).toBeNull();
});
