// The time-series chart (uPlot): one line per series, a legend that shows
// the values under the cursor, axes in the series' units.

import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { h } from '../dom';
import { formatIn, unitOf } from '../format';
import { overlay } from '../compare';
import type { ChartStyle } from '../model';
import { type Chart, type ResultColumn, type Series, stacked, toChart, totalOf, unitsOf } from '../series';

const PALETTE = ['#2f6fde', '#e4572e', '#17a398', '#f3a712', '#8e44ad', '#29335c', '#a8c686', '#db2763', '#5c946e', '#ff8c42', '#3f88c5', '#6b4e71', '#b5838d', '#118ab2', '#c0c0c0', '#7a5c61', '#06d6a0', '#ef476f', '#073b4c', '#ffd166'];

export function color(i: number): string {
  return PALETTE[i % PALETTE.length];
}

/** Counts and sums of an empty bucket are 0; averages and percentiles stay gaps. */
function zeroFills(column: string): boolean {
  return /^(count|sum\(|count distinct\()/.test(column);
}

/** A chart element; it sizes itself to its container and follows resizes. */
/** What a y axis counts: the aggregates drawn on it (`count`, `p99(duration_ms)`). */
export function axisLabel(series: Chart['series'], unit: string): string {
  return [...new Set(series.filter((s) => unitOf(s.column) === unit).map((s) => s.column))].join(', ');
}

/** How a chart draws: lines, stacked areas or stacked bars, and a total line. */
export interface Style {
  style: ChartStyle;
  total: boolean;
  /** Pixels; 280 unless smaller (a board's cells). */
  height?: number;
}

/**
 * The series as drawn, in drawing order (uPlot paints later series over
 * earlier ones, so a stack is drawn tallest first), each with the values
 * its legend shows: its own, not the stack's.
 */
function drawn(data: Chart, style: Style): { series: Series; shown: (number | null)[]; index: number; stack: boolean }[] {
  const withTotal = style.total ? [...data.series, ...[totalOf(data.series)].filter((t): t is Series => t !== null)] : data.series;
  const plain = withTotal.map((s, index) => ({ series: s, shown: s.values, index, stack: false }));
  if (style.style === 'lines') return plain;
  const current = data.series.filter((s) => !s.dashed);
  const unit = current.length ? unitOf(current[0].column) : '';
  const stackable = (s: Series) => !s.dashed && s.label !== 'total' && unitOf(s.column) === unit;
  const stacks = stacked(current.filter(stackable));
  const inStack = plain.filter((d) => stackable(d.series) && d.index < data.series.length);
  const stackedOnes = inStack.map((d, k) => ({ ...d, series: stacks[k], stack: true })).reverse();
  return [...stackedOnes, ...plain.filter((d) => !inStack.includes(d))];
}

export function chart(data: Chart, style: Style = { style: 'lines', total: false }): HTMLElement {
  const layers = drawn(data, style);
  // Each series' total, for anyone checking what is drawn (tests).
  const sums = Object.fromEntries(layers.map((d) => [d.series.label, d.shown.reduce<number>((a, v) => a + (v ?? 0), 0)]));
  const el = h('div', {
    class: 'chart',
    'data-testid': 'chart',
    'data-series': String(layers.length),
    'data-style': style.style,
    'data-axes': unitsOf(data.series).join(' '),
    'data-sums': JSON.stringify(sums),
    // The y axes' labels (drawn on the canvas), left first.
    'data-axis-labels': JSON.stringify(unitsOf(data.series).map((u) => axisLabel(data.series, u))),
  });
  if (data.x.length === 0) {
    el.append(h('p', { class: 'muted' }, 'No events in this time range.'));
    return el;
  }
  const units = unitsOf(data.series);
  const opts: uPlot.Options = {
    width: 800,
    height: style.height ?? 280,
    // One bucket alone would be stretched over years: a minute either side.
    scales: { x: { time: true, range: (_u, min, max) => (min === max ? [min - 60, max + 60] : [min, max]) } },
    legend: { live: true },
    cursor: { points: { size: 6 } },
    series: [
      { label: 'time (UTC)', value: (_u, v) => (v == null ? '—' : new Date(v * 1000).toISOString().replace('T', ' ').replace('.000Z', 'Z')) },
      ...layers.map(({ series: s, shown, index: i, stack }) => {
        const c = s.label === 'total' ? '#1d2733' : color(s.dashed ? Math.max(0, data.series.findIndex((o) => !o.dashed && s.label.startsWith(`${o.label} (`))) : i);
        return {
          label: s.label,
          stroke: c,
          width: s.label === 'total' ? 2 : 1.5,
          ...(s.dashed ? { dash: [6, 4] } : {}),
          ...(stack ? { fill: `${c}cc` } : {}),
          ...(stack && style.style === 'bars' ? { paths: uPlot.paths.bars!({ size: [0.8, 64] }) } : {}),
          points: { show: data.x.length < 3 },
          scale: unitOf(s.column),
          value: (_u: uPlot, _v: number | null, _si: number, idx: number | null) => {
            const v = idx == null ? null : shown[idx];
            return v == null ? '—' : formatIn(unitOf(s.column), v);
          },
        };
      }),
    ],
    axes: [
      {},
      ...units.map((unit, i) => ({
        scale: unit,
        label: axisLabel(data.series, unit),
        side: i === 0 ? 3 : 1,
        grid: { show: i === 0 },
        size: 70,
        values: (_u: uPlot, vals: (number | null)[]) => vals.map((v) => (v == null ? '' : formatIn(unit, v))),
      })),
    ],
  };
  const values = layers.map(({ series: s }) => (zeroFills(s.column) ? s.values.map((v) => v ?? 0) : s.values));
  const plot = new uPlot(opts, [data.x, ...values] as uPlot.AlignedData, el);
  const fit = () => {
    const w = el.clientWidth;
    if (w > 0) plot.setSize({ width: w, height: style.height ?? 280 });
  };
  new ResizeObserver(fit).observe(el);
  requestAnimationFrame(fit);
  return el;
}

/** The chart of a query answer, or an empty element when it has nothing to draw. */
export function chartOf(
  result: { columns: ResultColumn[]; rows: unknown[][] },
  then?: { result: { columns: ResultColumn[]; rows: unknown[][] }; shiftSeconds: number; shift: string },
  style?: Style,
): HTMLElement {
  const data = toChart(result.columns, result.rows);
  if (!data) return h('div', {});
  const earlier = then && toChart(then.result.columns, then.result.rows);
  return chart(earlier ? overlay(data, earlier, then.shiftSeconds, then.shift) : data, style);
}
