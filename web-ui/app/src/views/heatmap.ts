// A heatmap of a numeric column over time: columns are the chart's time
// buckets, rows the log-scaled value steps of `heatmapSql`, colour the
// events in the cell (log-scaled too, so that a few slow requests still
// show beside thousands of fast ones). Drawn on a canvas; hovering a cell
// says its time, its value range and its count. Dragging a box (or
// clicking a cell) selects those time buckets and value steps, for "what is
// different".

import type { QueryResult } from '../api';
import { h } from '../dom';
import { formatIn, formatNumber, unitOf } from '../format';
import { stepRange } from '../sql';

export interface HeatCell {
  /** Unix seconds of the time bucket's start. */
  t: number;
  step: number;
  n: number;
}

export interface Heat {
  column: string;
  /** Time buckets' starts, ascending, every bucket of the window. */
  times: number[];
  bucketSeconds: number;
  /** Value steps present, ascending (the y axis, bottom up). */
  steps: number[];
  cells: HeatCell[];
  max: number;
  total: number;
}

/** The heatmap of an answer of `heatmapSql` over [from, to). */
export function toHeat(result: QueryResult, column: string, from: Date, to: Date, bucketSeconds: number): Heat {
  const cells: HeatCell[] = result.rows
    .map((r) => ({ t: Date.parse(String(r[0])) / 1000, step: Number(r[1]), n: Number(r[2]) }))
    .filter((c) => Number.isFinite(c.t) && Number.isFinite(c.step) && Number.isFinite(c.n));
  const first = Math.floor(from.getTime() / 1000 / bucketSeconds) * bucketSeconds;
  const times: number[] = [];
  for (let t = first; t < to.getTime() / 1000; t += bucketSeconds) times.push(t);
  const steps = [...new Set(cells.map((c) => c.step))].sort((a, b) => a - b);
  const max = cells.reduce((m, c) => Math.max(m, c.n), 0);
  const total = cells.reduce((s, c) => s + c.n, 0);
  return { column, times, bucketSeconds, steps, cells, max, total };
}

/** Light to dark blue by the cell's share of the busiest cell (log scale). */
export function shade(n: number, max: number): string {
  if (n <= 0 || max <= 0) return 'rgba(0,0,0,0)';
  const x = Math.log1p(n) / Math.log1p(max);
  const mix = (a: number, b: number) => Math.round(a + (b - a) * x);
  return `rgb(${mix(222, 8)}, ${mix(235, 48)}, ${mix(247, 107)})`;
}

/** The label of a value step: `10 ms – 17.8 ms`, or `≤ 0`. */
export function stepLabel(step: number, column: string): string {
  const r = stepRange(step);
  if (!r) return '≤ 0';
  const unit = unitOf(column);
  return `${formatIn(unit, r.low)} – ${formatIn(unit, r.high)}`;
}

/** Cells a drag covered: time buckets [from, to) in unix seconds, value steps lowStep..highStep. */
export interface HeatBox {
  from: number;
  to: number;
  lowStep: number;
  highStep: number;
}

const LEFT = 90;
const BOTTOM = 24;
const HEIGHT = 260;

/** A selection drawn on the heatmap: time [from, to), values from `low` (none: from the "≤ 0" step) below `high`. */
export interface Selected {
  from: number;
  to: number;
  low: number | null;
  high: number;
}

/** The cells a selection covers, as index ranges, or null when none. */
export function selectedCells(heat: Heat, s: Selected): { i0: number; i1: number; j0: number; j1: number } | null {
  const cols = heat.times.map((t, i) => [t, i]).filter(([t]) => t >= s.from && t < s.to).map(([, i]) => i);
  const within = (step: number) => {
    const r = stepRange(step);
    if (!r) return s.low === null;
    return (s.low === null || r.low >= s.low * (1 - 1e-9)) && r.high <= s.high * (1 + 1e-9);
  };
  const rows = heat.steps.map((step, j) => [step, j]).filter(([step]) => within(step)).map(([, j]) => j);
  if (!cols.length || !rows.length) return null;
  return { i0: cols[0], i1: cols[cols.length - 1], j0: rows[0], j1: rows[rows.length - 1] };
}

export function heatmap(heat: Heat, onSelect?: (box: HeatBox) => void, selected?: Selected | null): HTMLElement {
  const canvas = h('canvas', { height: String(HEIGHT) });
  const tip = h('div', { class: 'heat-tip', 'data-testid': 'heatmap-tip' });
  const box = h('div', { class: 'heat-box', 'data-testid': 'heatmap-box' });
  const el = h(
    'div',
    { class: 'chart heatmap', 'data-view': 'heatmap', 'data-total': String(heat.total), 'data-cells': String(heat.cells.length) },
    h('div', { class: 'heat-title' }, `${heat.column} over time · ${formatNumber(heat.total)} events`),
    canvas,
    box,
    tip,
  );
  if (heat.cells.length === 0) {
    el.replaceChildren(h('p', { class: 'muted' }, `No values of ${heat.column} in this time range.`));
    return el;
  }
  const byCell = new Map(heat.cells.map((c) => [`${c.t}:${c.step}`, c.n]));
  const geometry = () => {
    const width = Math.max(200, el.clientWidth - 16);
    const cw = (width - LEFT) / heat.times.length;
    const ch = (HEIGHT - BOTTOM) / heat.steps.length;
    return { width, cw, ch };
  };
  const draw = () => {
    const { width, cw, ch } = geometry();
    canvas.width = width;
    const g = canvas.getContext('2d');
    if (!g) return;
    g.clearRect(0, 0, width, HEIGHT);
    heat.times.forEach((t, i) =>
      heat.steps.forEach((step, j) => {
        const n = byCell.get(`${t}:${step}`) ?? 0;
        if (n === 0) return;
        g.fillStyle = shade(n, heat.max);
        g.fillRect(LEFT + i * cw, HEIGHT - BOTTOM - (j + 1) * ch, Math.ceil(cw), Math.ceil(ch));
      }),
    );
    const chosen = selected ? selectedCells(heat, selected) : null;
    if (chosen) {
      g.strokeStyle = '#f28e2b';
      g.lineWidth = 2;
      g.strokeRect(LEFT + chosen.i0 * cw, HEIGHT - BOTTOM - (chosen.j1 + 1) * ch, (chosen.i1 - chosen.i0 + 1) * cw, (chosen.j1 - chosen.j0 + 1) * ch);
    }
    g.fillStyle = '#5f6b7a';
    g.font = '11px system-ui, sans-serif';
    const every = Math.max(1, Math.ceil(heat.steps.length / 8));
    heat.steps.forEach((step, j) => {
      if (j % every) return;
      const r = stepRange(step);
      g.fillText(r ? formatIn(unitOf(heat.column), r.low) : '≤ 0', 4, HEIGHT - BOTTOM - j * ch - 2);
    });
    const ticks = Math.min(6, heat.times.length);
    for (let k = 0; k < ticks; k++) {
      const i = Math.floor((k * heat.times.length) / ticks);
      const label = new Date(heat.times[i] * 1000).toISOString().slice(11, 16);
      g.fillText(label, LEFT + i * cw, HEIGHT - 6);
    }
  };
  /** The cell under the pointer (clamped to the grid with `clamp`), or null outside it. */
  const cellAt = (e: MouseEvent, clamp = false) => {
    const { cw, ch } = geometry();
    const r = canvas.getBoundingClientRect();
    let i = Math.floor((e.clientX - r.left - LEFT) / cw);
    let j = Math.floor((HEIGHT - BOTTOM - (e.clientY - r.top)) / ch);
    if (clamp) {
      i = Math.min(Math.max(i, 0), heat.times.length - 1);
      j = Math.min(Math.max(j, 0), heat.steps.length - 1);
    }
    return i < 0 || i >= heat.times.length || j < 0 || j >= heat.steps.length ? null : { i, j };
  };
  let start: { i: number; j: number } | null = null;
  const cover = (a: { i: number; j: number }, b: { i: number; j: number }) => {
    const { cw, ch } = geometry();
    const [i0, i1] = [Math.min(a.i, b.i), Math.max(a.i, b.i)];
    const [j0, j1] = [Math.min(a.j, b.j), Math.max(a.j, b.j)];
    Object.assign(box.style, {
      display: 'block',
      left: `${canvas.offsetLeft + LEFT + i0 * cw}px`,
      top: `${canvas.offsetTop + HEIGHT - BOTTOM - (j1 + 1) * ch}px`,
      width: `${(i1 - i0 + 1) * cw}px`,
      height: `${(j1 - j0 + 1) * ch}px`,
    });
    return { from: heat.times[i0], to: heat.times[i1] + heat.bucketSeconds, lowStep: heat.steps[j0], highStep: heat.steps[j1] };
  };
  if (onSelect) {
    // Capturing the pointer keeps the drag's end on the canvas even when it ends outside.
    canvas.addEventListener('pointerdown', (e) => {
      if (e.button !== 0) return;
      start = cellAt(e);
      if (!start) return;
      e.preventDefault();
      canvas.setPointerCapture(e.pointerId);
    });
    canvas.addEventListener('pointerup', (e) => {
      if (!start) return;
      const chosen = cover(start, cellAt(e, true)!);
      start = null;
      onSelect(chosen);
    });
    // A drag the browser took back (a touch scroll, a lost capture) selects nothing.
    const drop = () => {
      if (!start) return;
      start = null;
      box.style.display = 'none';
    };
    canvas.addEventListener('pointercancel', drop);
    canvas.addEventListener('lostpointercapture', drop);
  }
  canvas.addEventListener('pointermove', (e) => {
    if (start) cover(start, cellAt(e, true)!);
    const cell = cellAt(e);
    if (!cell) return void (tip.textContent = '');
    const { i, j } = cell;
    const t = heat.times[i];
    const n = byCell.get(`${t}:${heat.steps[j]}`) ?? 0;
    const when = `${new Date(t * 1000).toISOString().replace('.000Z', 'Z')} + ${heat.bucketSeconds} s`;
    tip.textContent = `${when} · ${heat.column} ${stepLabel(heat.steps[j], heat.column)} · ${formatNumber(n)} event${n === 1 ? '' : 's'}`;
  });
  canvas.addEventListener('mouseleave', () => (tip.textContent = ''));
  new ResizeObserver(draw).observe(el);
  requestAnimationFrame(draw);
  return el;
}
