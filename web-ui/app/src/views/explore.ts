// The explorer: a Scuba-style builder on the left (table, time range,
// filters, group by, aggregates, order, limit), and on the right the
// chart, the results table and sample events of the same question.

import * as api from '../api';
import { h, select } from '../dom';
import { AGG_FNS, type Agg, type AggFn, CHART_STYLES, type ChartStyle, COMPARE_SHIFTS, type Column, type CompareShift, type Filter, HAVING_OPS, type Having, OPS, type Op, type QueryState, RELATIVE_RANGES, type Relative, SHIFT_SECONDS, aggLabel } from '../model';
import { BuilderError, SAMPLE_RATE, bucketSeconds, comparedState, heatmapSql, isNumeric, resolveRange, sampleWeight, samplesSql, seriesSql, tableSql } from '../sql';
import { type HeatBox, heatmap, toHeat } from './heatmap';
import { bubbleUp } from './bubbleup';
import { boxFilters, boxOf, planOf, ranked, selectionSql, shapeSql, valuesSql } from '../bubble';
import { withThen } from '../compare';
import { MAX_SERIES } from '../series';
import { type App } from '../app';
import { chartOf } from './chart';
import { resultsTable, urlSortedTable } from './resultsTable';
import { QueryStatus } from './status';
import { saveControl } from './save';
import { follow, liveStatus, stopFollowing } from './follow';

const status = new QueryStatus();
const results = h('div', { class: 'results-area' });
const builderError = h('div', { class: 'error', 'data-testid': 'builder-error' });
const liveState = liveStatus();

function columnsOf(app: App): Column[] {
  return app.tables.find((t) => t.name === app.state.query.table)?.columns ?? [];
}

function columnOptions(columns: Column[], keep = '') {
  const opts = columns.map((c) => ({ value: c.name, label: `${c.name} (${c.type})` }));
  if (keep && !columns.some((c) => c.name === keep)) opts.unshift({ value: keep, label: `${keep} (missing)` });
  return [{ value: '', label: '— column —' }, ...opts];
}

function section(title: string, ...body: (Node | null)[]) {
  return h('fieldset', {}, h('legend', {}, title), ...body);
}

function removeButton(onclick: () => void, what: string) {
  return h('button', { class: 'icon', title: `remove ${what}`, 'aria-label': `remove ${what}`, onclick }, '×');
}

function timeSection(app: App): HTMLElement {
  const q = app.state.query;
  const range = q.range;
  const choices = [...RELATIVE_RANGES.map((r) => ({ value: r, label: `last ${r}` })), { value: 'absolute', label: 'from … to …' }];
  const picker = select(choices, range.kind === 'relative' ? range.last : 'absolute', (v) =>
    app.update((s) => {
      if (v === 'absolute') {
        const to = new Date();
        s.query.range = { kind: 'absolute', from: new Date(to.getTime() - 3600_000).toISOString(), to: to.toISOString() };
      } else s.query.range = { kind: 'relative', last: v as Relative };
    }),
    { 'data-testid': 'range' },
  );
  if (range.kind === 'relative') return section('Time', picker);
  const input = (which: 'from' | 'to') =>
    h('input', {
      type: 'datetime-local',
      step: '1',
      value: toLocalInput(range[which]),
      'data-testid': `range-${which}`,
      onchange: (e: Event) => {
        const v = (e.target as HTMLInputElement).value;
        if (v) app.update((s) => s.query.range.kind === 'absolute' && (s.query.range[which] = new Date(v).toISOString()), false);
      },
    });
  return section('Time', picker, h('label', {}, 'from ', input('from')), h('label', {}, 'to ', input('to')));
}

/** An ISO instant as a datetime-local value (the browser's time zone). */
function toLocalInput(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return new Date(d.getTime() - d.getTimezoneOffset() * 60_000).toISOString().slice(0, 19);
}

/** Where a row of conditions lives: the filters, or the "what is different" selection. */
type Conditions = 'filters' | 'selection';

function filterRow(app: App, f: Filter, i: number, columns: Column[], list: Conditions = 'filters'): HTMLElement {
  const set = (change: (f: Filter) => void, rerender = true) => app.update((s) => change(s.query[list][i]), rerender);
  const needsValue = f.op !== 'exists' && f.op !== 'not_exists';
  return h(
    'div',
    { class: 'row', 'data-testid': list === 'filters' ? 'filter' : 'selection' },
    select(columnOptions(columns, f.column), f.column, (v) => set((f) => (f.column = v)), { 'aria-label': 'filter column' }),
    select(
      OPS.map((o) => ({ value: o.op, label: o.label })),
      f.op,
      (v) => set((f) => (f.op = v as Op)),
      { 'aria-label': 'filter operator' },
    ),
    needsValue
      ? h('input', {
          value: f.value,
          placeholder: f.op === 'in' ? 'a, b, c' : 'value',
          'aria-label': 'filter value',
          oninput: (e: Event) => set((f) => (f.value = (e.target as HTMLInputElement).value), false),
          onkeydown: (e: KeyboardEvent) => e.key === 'Enter' && runExplore(app),
        })
      : null,
    removeButton(() => app.update((s) => s.query[list].splice(i, 1)), list === 'filters' ? 'filter' : 'selection condition'),
  );
}

function groupRow(app: App, g: string, i: number, columns: Column[]): HTMLElement {
  return h(
    'div',
    { class: 'row', 'data-testid': 'group' },
    select(columnOptions(columns, g), g, (v) => app.update((s) => (s.query.groupBy[i] = v)), { 'aria-label': 'group by column' }),
    removeButton(() => app.update((s) => s.query.groupBy.splice(i, 1)), 'group'),
  );
}

function aggRow(app: App, a: Agg, i: number, columns: Column[]): HTMLElement {
  const fn = select(
    AGG_FNS.map((f) => ({ value: f.fn, label: f.label })),
    a.fn,
    (v) => app.update((s) => (s.query.aggs[i] = v === 'count' ? { fn: 'count' } : { fn: v as AggFn, column: a.column ?? '' })),
    { 'aria-label': 'aggregate function' },
  );
  const col =
    a.fn === 'count'
      ? null
      : select(columnOptions(columns, a.column), a.column ?? '', (v) => app.update((s) => (s.query.aggs[i].column = v)), { 'aria-label': 'aggregate column' });
  const remove = app.state.query.aggs.length > 1 ? removeButton(() => app.update((s) => s.query.aggs.splice(i, 1)), 'aggregate') : null;
  return h('div', { class: 'row', 'data-testid': 'agg' }, fn, col, remove);
}

function havingRow(app: App, c: Having, i: number): HTMLElement {
  const set = (change: (c: Having) => void, rerender = true) => app.update((s) => change(s.query.having[i]), rerender);
  const labels = app.state.query.aggs.map(aggLabel);
  return h(
    'div',
    { class: 'row', 'data-testid': 'having' },
    select([{ value: '', label: '— aggregate —' }, ...labels.map((l) => ({ value: l, label: l }))], c.agg, (v) => set((c) => (c.agg = v)), { 'aria-label': 'having aggregate' }),
    select(
      HAVING_OPS.map((o) => ({ value: o, label: o })),
      c.op,
      (v) => set((c) => (c.op = v as Having['op'])),
      { 'aria-label': 'having operator' },
    ),
    h('input', {
      value: c.value,
      placeholder: 'number',
      'aria-label': 'having value',
      oninput: (e: Event) => set((c) => (c.value = (e.target as HTMLInputElement).value), false),
      onkeydown: (e: KeyboardEvent) => e.key === 'Enter' && runExplore(app),
    }),
    removeButton(() => app.update((s) => s.query.having.splice(i, 1)), 'HAVING condition'),
  );
}

function compareSection(app: App): HTMLElement {
  const labels: Record<CompareShift, string> = { '1h': '1 hour before', '1d': '1 day before', '1w': '1 week before' };
  return section(
    'Compare to',
    select([{ value: '', label: 'nothing' }, ...COMPARE_SHIFTS.map((c) => ({ value: c, label: labels[c] }))], app.state.query.compare, (v) => app.update((s) => (s.query.compare = v as CompareShift | '')), {
      'data-testid': 'compare',
      'aria-label': 'Compare to',
    }),
  );
}

function differenceSection(app: App, columns: Column[]): HTMLElement {
  const q = app.state.query;
  return section(
    'What is different',
    ...q.selection.map((f, i) => filterRow(app, f, i, columns, 'selection')),
    h('button', { class: 'add', 'data-testid': 'add-selection', onclick: () => app.update((s) => s.query.selection.push({ column: '', op: '=', value: '' })) }, '+ selection'),
    h('p', { class: 'hint' }, 'The events these conditions pick (or a box dragged on the heatmap) against the rest of the window, column by column.'),
  );
}

function chartSection(app: App): HTMLElement {
  const q = app.state.query;
  const labels: Record<ChartStyle, string> = { lines: 'lines', stacked: 'stacked areas', bars: 'stacked bars' };
  return section(
    'Chart',
    h(
      'div',
      { class: 'row' },
      select(
        CHART_STYLES.map((c) => ({ value: c, label: labels[c] })),
        q.style,
        (v) => app.update((s) => (s.query.style = v as ChartStyle)),
        { 'data-testid': 'chart-style', 'aria-label': 'Chart' },
      ),
      h(
        'label',
        { class: 'check' },
        h('input', { type: 'checkbox', checked: q.total, 'data-testid': 'chart-total', onchange: (e: Event) => app.update((s) => (s.query.total = (e.target as HTMLInputElement).checked)) }),
        ' total',
      ),
    ),
  );
}

function heatmapSection(app: App, columns: Column[]): HTMLElement {
  const numeric = columns.filter((c) => isNumeric(c.type));
  const keep = app.state.query.heatmap;
  const choices = [{ value: '', label: 'none' }, ...numeric.map((c) => ({ value: c.name, label: c.name }))];
  if (keep && !numeric.some((c) => c.name === keep)) choices.push({ value: keep, label: `${keep} (missing)` });
  return section(
    'Heatmap',
    select(choices, keep, (v) => app.update((s) => (s.query.heatmap = v)), { 'data-testid': 'heatmap-column', 'aria-label': 'Heatmap' }),
  );
}

function orderSection(app: App): HTMLElement {
  const q = app.state.query;
  const labels = [...q.aggs.map(aggLabel), ...q.groupBy];
  return section(
    'Order and limit',
    h(
      'div',
      { class: 'row' },
      select([{ value: '', label: `${aggLabel(q.aggs[0])} (default)` }, ...labels.map((l) => ({ value: l, label: l }))], q.orderBy, (v) => app.update((s) => (s.query.orderBy = v)), {
        'aria-label': 'order by',
      }),
      select(
        [
          { value: 'desc', label: 'desc' },
          { value: 'asc', label: 'asc' },
        ],
        q.orderDesc ? 'desc' : 'asc',
        (v) => app.update((s) => (s.query.orderDesc = v === 'desc')),
        { 'aria-label': 'order direction' },
      ),
      h('input', {
        type: 'number',
        min: '1',
        max: '10000',
        value: String(q.limit),
        class: 'limit',
        'aria-label': 'limit',
        onchange: (e: Event) => app.update((s) => (s.query.limit = Number((e.target as HTMLInputElement).value) || 100), false),
      }),
    ),
  );
}

function builder(app: App): HTMLElement {
  const q = app.state.query;
  const columns = columnsOf(app);
  const tableChoices = [{ value: '', label: '— table —' }, ...app.tables.map((t) => ({ value: t.name, label: t.name }))];
  return h(
    'aside',
    { class: 'builder' },
    section(
      'Table',
      select(tableChoices, q.table, (v) => app.update((s) => (s.query = { ...s.query, table: v, filters: [], groupBy: [], aggs: [{ fn: 'count' }], orderBy: '' })), {
        'data-testid': 'table',
      }),
    ),
    timeSection(app),
    section('Filters', ...q.filters.map((f, i) => filterRow(app, f, i, columns)), h('button', { class: 'add', onclick: () => app.update((s) => s.query.filters.push({ column: '', op: '=', value: '' })) }, '+ filter')),
    section('Group by', ...q.groupBy.map((g, i) => groupRow(app, g, i, columns)), h('button', { class: 'add', onclick: () => app.update((s) => s.query.groupBy.push('')) }, '+ group')),
    section(
      'Aggregates',
      ...q.aggs.map((a, i) => aggRow(app, a, i, columns)),
      h('button', { class: 'add', onclick: () => app.update((s) => s.query.aggs.push({ fn: 'avg', column: '' })) }, '+ aggregate'),
      sampleWeight(columns) ? h('p', { class: 'hint', 'data-testid': 'sampled' }, `Weighted by ${SAMPLE_RATE}: counts, sums, averages and percentiles stand for the events the samples represent.`) : null,
    ),
    section(
      'HAVING',
      ...q.having.map((c, i) => havingRow(app, c, i)),
      h('button', { class: 'add', 'data-testid': 'add-having', onclick: () => app.update((s) => s.query.having.push({ agg: aggLabel(s.query.aggs[0]), op: '>', value: '' })) }, '+ HAVING'),
    ),
    compareSection(app),
    chartSection(app),
    heatmapSection(app, columns),
    differenceSection(app, columns),
    orderSection(app),
    h(
      'div',
      { class: 'actions' },
      h('button', { class: 'primary', 'data-testid': 'run', onclick: () => runExplore(app) }, 'Run'),
      h(
        'label',
        { class: 'check', title: 'Follow events as they arrive' },
        h('input', {
          type: 'checkbox',
          checked: q.live,
          'data-testid': 'live',
          onchange: (e: Event) => {
            const on = (e.target as HTMLInputElement).checked;
            app.update((s) => (s.query.live = on), false);
            if (on) void runExplore(app);
            else {
              stopFollowing();
              liveState.replaceChildren();
            }
          },
        }),
        ' Live',
      ),
      h('button', { class: 'link', onclick: () => openInSql(app) }, 'Edit as SQL'),
    ),
    saveControl(app),
    builderError,
  );
}

function openInSql(app: App) {
  try {
    const sql = tableSql(app.state.query, columnsOf(app), new Date());
    app.update((s) => {
      s.view = 'sql';
      s.sql = sql;
    });
  } catch (e) {
    builderError.textContent = (e as Error).message;
  }
}

export function exploreView(app: App): HTMLElement {
  if (app.tables.length === 0) return firstEvent();
  return h('div', { class: 'explore' }, builder(app), h('section', { class: 'main' }, status.el, results));
}

/** A brand-new node: how to send it a first event, with its own address. */
function firstEvent(): HTMLElement {
  const curl = `curl -s ${location.origin}/v1/tables/events/events -H 'Content-Type: application/json' \\
  -d '[{"service": "api", "endpoint": "/login", "status": 200, "duration_ms": 42}]'`;
  return h(
    'div',
    { class: 'empty', 'data-testid': 'first-event' },
    h('h2', {}, 'No events yet'),
    h('p', {}, 'This node has no tables. Send it an event (the table is made on the way), then reload:'),
    h('pre', {}, curl),
    h('p', { class: 'muted' }, 'With API keys on, add -H "Authorization: Bearer KEY" with an ingest key. Honeycomb and OpenTelemetry clients can send here too (see the README).'),
  );
}

/** Esc cancels a running query; in Explore, `/` puts the cursor in the first filter (adding one). */
export function exploreKeys(app: App, e: KeyboardEvent) {
  if (e.key === 'Escape') return QueryStatus.cancelRunning();
  if (app.state.view !== 'explore') return;
  const typing = e.target instanceof HTMLElement && (e.target.closest('input, textarea, select, .cm-editor') !== null || e.target.isContentEditable);
  if (e.key !== '/' || typing || e.ctrlKey || e.metaKey || e.altKey) return;
  e.preventDefault();
  if (app.state.query.filters.length === 0) app.update((s) => s.query.filters.push({ column: '', op: '=', value: '' }));
  document.querySelector<HTMLElement>('[data-testid=filter] input, [data-testid=filter] select')?.focus();
}

/** The group values of the table's first rows: the groups the chart draws. */
export function groupValues(groups: number, result: api.QueryResult): unknown[][] {
  return result.rows.slice(0, MAX_SERIES).map((r) => r.slice(0, groups));
}

/** Runs the table query, then the chart's series (for the top groups) and the samples. */
export async function runExplore(app: App) {
  stopFollowing();
  builderError.textContent = '';
  const columns = columnsOf(app);
  const q = app.state.query;
  const now = new Date();
  let sql: string;
  try {
    sql = tableSql(q, columns, now);
    if (q.selection.length) selectionSql(q, columns);
  } catch (e) {
    if (e instanceof BuilderError) return void (builderError.textContent = e.message);
    throw e;
  }
  const signal = status.begin();
  const started = performance.now();
  const before = comparedState(q, now);
  try {
    const table = await api.query(sql, signal);
    const top = q.groupBy.length ? groupValues(q.groupBy.length, table) : [];
    const [series, samples, then, heat, bubble] = await Promise.all([
      api.query(seriesSql(q, columns, now, top), signal),
      api.query(samplesSql(q, columns, now), signal),
      before ? Promise.all([api.query(tableSql(before, columns, now), signal), api.query(seriesSql(before, columns, now, top), signal)]) : null,
      q.heatmap ? api.query(heatmapSql(q, columns, now), signal) : null,
      q.selection.length ? differences(q, columns, now, signal).catch((e) => failedDifferences(e, signal)) : null,
    ]);
    const stats = [table.stats, series.stats, samples.stats, ...(then ? then.map((t) => t.stats) : []), ...(heat ? [heat.stats] : []), ...(bubble ? bubble.stats : [])];
    status.done(signal, table.rows.length, stats, performance.now() - started);
    const span = resolveRange(q.range, now);
    results.dataset.from = span.from.toISOString();
    results.dataset.to = span.to.toISOString();
    const column = q.heatmap;
    const heatView = heat && column ? heatmap(toHeat(heat, column, span.from, span.to, bucketSeconds(q.range, now)), (box) => selectBox(app, box, column), boxOf(q.selection, column)) : null;
    const slots = renderResults(app, table, series, samples, then && q.compare ? { table: then[0], series: then[1], shift: q.compare } : null, heatView, bubble?.view ?? null);
    if (q.live) follow(q, columns, { series, samples, drawn: top, status: liveState, ...slots });
  } catch (e) {
    status.failed(signal, (e as Error).message);
    if (!signal.aborted) results.replaceChildren();
  }
  // New tables and columns arrive with events: offer them from now on.
  void app.refreshTables();
}

/** A box dragged on the heatmap becomes the selection, and the run compares it with the rest. */
function selectBox(app: App, box: HeatBox, column: string) {
  app.update((s) => (s.query.selection = boxFilters(box, column)));
  void runExplore(app);
}

/** "What is different": the selection's size and the columns' shapes, then their top values (two queries). */
async function differences(q: QueryState, columns: Column[], now: Date, signal: AbortSignal): Promise<{ view: HTMLElement; stats: api.QueryStats[] }> {
  const shape = await api.query(shapeSql(q, columns, now), signal);
  const plan = planOf(shape, q, columns);
  const said = q.selection.map((f) => `${f.column} ${OPS.find((o) => o.op === f.op)?.label ?? f.op} ${f.value}`.trim()).join(' and ');
  if (plan.inside === 0 || plan.outside === 0 || plan.compared.length === 0) return { view: bubbleUp(plan, [], said), stats: [shape.stats] };
  const values = await api.query(valuesSql(q, columns, now, plan), signal);
  return { view: bubbleUp(plan, ranked(values, plan), said), stats: [shape.stats, values.stats] };
}

/** A failed comparison says why in its place, without taking the rest of the run with it. */
function failedDifferences(e: unknown, signal: AbortSignal): { view: HTMLElement; stats: api.QueryStats[] } {
  if (signal.aborted) throw e;
  const view = h('div', { class: 'chart bubbleup', 'data-view': 'bubbleup' }, h('div', { class: 'error', 'data-testid': 'bubble-error' }, `What is different: ${(e as Error).message}`));
  return { view, stats: [] };
}

interface Then {
  table: api.QueryResult;
  series: api.QueryResult;
  shift: CompareShift;
}

/** Draws a run; answers how to redraw its chart and its samples (for Live). */
function renderResults(app: App, table: api.QueryResult, series: api.QueryResult, samples: api.QueryResult, then: Then | null, heat: HTMLElement | null, bubble: HTMLElement | null) {
  const groups = app.state.query.groupBy.length;
  const style = { style: app.state.query.style, total: app.state.query.total };
  const earlier = then ? { result: then.series, shiftSeconds: SHIFT_SECONDS[then.shift], shift: then.shift } : undefined;
  const chartSlot = h('div', {}, chartOf(series, earlier, style));
  const samplesSlot = h('div', {}, resultsTable(samples, null, () => {}, 'samples-table'));
  const summary = h('summary', {}, `Samples (newest ${samples.rows.length})`);
  liveState.replaceChildren();
  results.replaceChildren(
    app.state.query.live ? liveState : '',
    chartSlot,
    heat ?? '',
    bubble ?? '',
    h('h3', {}, app.state.query.live ? 'Results (as of the run; the chart and samples are live)' : 'Results'),
    urlSortedTable(app, then ? withThen(table, then.table, groups, then.shift) : table),
    h('details', { open: true, 'data-testid': 'samples' }, summary, samplesSlot),
  );
  return {
    chart: (s: api.QueryResult) => chartSlot.replaceChildren(chartOf(s, earlier, style)),
    samplesTable: (s: api.QueryResult) => {
      summary.textContent = `Samples (newest ${s.rows.length})`;
      samplesSlot.replaceChildren(resultsTable(s, null, () => {}, 'samples-table'));
    },
  };
}
