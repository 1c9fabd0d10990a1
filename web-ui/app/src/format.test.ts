import { expect, it } from 'vitest';
import { formatBytes, formatCell, formatMs, formatNumber, unitOf } from './format';

it('formats counts for people', () => {
  expect(formatNumber(0)).toBe('0');
  expect(formatNumber(999)).toBe('999');
  expect(formatNumber(1234)).toBe('1.2k');
  expect(formatNumber(-1234)).toBe('-1.2k');
  expect(formatNumber(123456)).toBe('123k');
  expect(formatNumber(120000)).toBe('120k');
  expect(formatNumber(100.0001)).toBe('100');
  expect(formatNumber(3_400_000)).toBe('3.4M');
  expect(formatNumber(2e9)).toBe('2B');
  expect(formatNumber(12.3456)).toBe('12.35');
  expect(formatNumber(0.012345)).toBe('0.0123');
});

it('formats durations and sizes', () => {
  expect(formatMs(0.42)).toBe('0.42 ms');
  expect(formatMs(34.2)).toBe('34 ms');
  expect(formatMs(1234)).toBe('1.2 s');
  expect(formatMs(150_000)).toBe('2.5 min');
  expect(formatBytes(512)).toBe('512 B');
  expect(formatBytes(1536)).toBe('1.5 KiB');
  expect(formatBytes(230 * 1024 * 1024)).toBe('230 MiB');
});

it('reads units from column and aggregate names', () => {
  expect(unitOf('duration_ms')).toBe('ms');
  expect(unitOf('p99(duration_ms)')).toBe('ms');
  expect(unitOf('sum(bytes)')).toBe('bytes');
  expect(unitOf('count distinct(duration_ms)')).toBe('count');
  expect(unitOf('count')).toBe('count');
  expect(formatCell(34.2, 'avg(duration_ms)')).toBe('34 ms');
  expect(formatCell(null, 'x')).toBe('—');
  expect(formatCell(['a'], 'tags')).toBe('["a"]');
});
