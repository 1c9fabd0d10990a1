// The waterfall of one trace: its spans from every span table, as bars on
// the trace's time axis, nested by parent; a click shows the span's row.

import * as api from '../api';
import { type App } from '../app';
import { h } from '../dom';
import { formatMs, plural } from '../format';
import { type Span, type Trace, MAX_SPANS, spanSql, toTrace, traceSql, traceTables } from '../trace';
import { resultsTable } from './resultsTable';
import { QueryStatus } from './status';

const status = new QueryStatus();

export function traceView(app: App): HTMLElement {
  const input = h('input', { value: app.state.trace, placeholder: 'trace id', 'aria-label': 'trace id', class: 'trace-input', onkeydown: (e: KeyboardEvent) => e.key === 'Enter' && open() });
  const open = () => app.update((s) => (s.trace = input.value.trim()));
  const body = h('div', { class: 'trace-body' });
  const el = h('div', { class: 'trace-view' }, h('div', { class: 'row' }, input, h('button', { class: 'primary', onclick: open }, 'Open')), status.el, body);
  if (app.state.trace) void load(app, app.state.trace, body);
  else body.replaceChildren(h('p', { class: 'muted' }, `Paste a trace id, or click one (a ${'trace.trace_id'} cell) in Explore's samples or results.`));
  return el;
}

async function load(app: App, id: string, body: HTMLElement) {
  const tables = traceTables(app.tables);
  if (tables.length === 0) return void body.replaceChildren(h('p', { class: 'muted' }, 'No table has the columns trace.trace_id and trace.span_id.'));
  const signal = status.begin();
  const started = performance.now();
  try {
    const result = await api.query(traceSql(tables, id), signal);
    status.done(signal, result.rows.length, [result.stats], performance.now() - started);
    body.replaceChildren(waterfall(toTrace(id, result), tables.map((t) => t.name)));
  } catch (e) {
    status.failed(signal, (e as Error).message);
  }
}

function waterfall(trace: Trace, tables: string[]): HTMLElement {
  const services = [...new Set(trace.spans.map((s) => s.service))];
  const attrs = h('div', { class: 'span-attributes', 'data-testid': 'span-attributes' });
  const el = h(
    'div',
    { class: 'chart waterfall', 'data-view': 'trace', 'data-trace': trace.id, 'data-spans': String(trace.spans.length) },
    h(
      'div',
      { class: 'heat-title' },
      trace.spans.length
        ? `Trace ${trace.id} · ${plural(trace.spans.length, 'span')} · ${formatMs(trace.durationMs)} · ${plural(services.length, 'service')} (${services.join(', ')}) · from ${tables.join(', ')}`
        : `No spans of trace ${trace.id} in ${tables.join(', ')}.`,
      trace.truncated ? h('strong', {}, ` · the first ${MAX_SPANS} spans`) : '',
    ),
  );
  const total = Math.max(trace.durationMs, 0.001);
  const rows = trace.spans.map((s) => {
    const row: HTMLElement = spanRow(s, trace, total, () => showAttributes(trace.id, s, attrs, row));
    return row;
  });
  el.append(h('div', { class: 'spans' }, ...rows), attrs);
  return el;
}

function spanRow(s: Span, trace: Trace, total: number, onclick: () => void): HTMLElement {
  const left = (((s.start - trace.start) * 1000) / total) * 100;
  const width = s.durationMs === null ? 0 : (s.durationMs / total) * 100;
  return h(
    'div',
    {
      class: `span-row${s.error ? ' error' : ''}`,
      'data-testid': 'span',
      'data-span-id': s.spanId,
      'data-parent-id': s.parentId ?? '',
      'data-depth': String(s.depth),
      'data-service': s.service,
      'data-error': String(s.error),
      title: s.orphan ? `parent ${s.parentId} is not in the trace` : '',
      onclick,
    },
    h('div', { class: 'span-name', style: `padding-left: ${s.depth * 14}px` }, s.error ? h('span', { class: 'span-error' }, '!') : '', s.name, h('span', { class: 'muted' }, ` ${s.service}`)),
    h(
      'div',
      { class: 'span-track' },
      h('div', { class: 'span-bar', style: `left: ${Math.min(left, 100)}%; width: max(2px, ${Math.min(width, 100 - left)}%)` }),
      // Beside the bar's end, or inside it when the bar reaches the right edge.
      h('span', { class: 'span-ms', style: left + width > 88 ? `right: ${Math.max(0, 100 - left - width)}%; color: #fff; padding-right: 4px` : `left: ${left + width}%` }, s.durationMs === null ? '' : formatMs(s.durationMs)),
    ),
  );
}

async function showAttributes(traceId: string, s: Span, attrs: HTMLElement, row: HTMLElement) {
  row.parentElement?.querySelectorAll('.span-row.chosen').forEach((r) => r.classList.remove('chosen'));
  row.classList.add('chosen');
  attrs.replaceChildren(h('p', { class: 'muted' }, `Loading ${s.name}…`));
  try {
    const row = await api.query(spanSql(s.table, traceId, s.spanId));
    const pairs = row.rows[0] ? row.columns.map((c, i) => [c.name, row.rows[0][i]]).filter(([, v]) => v !== null) : [];
    const table = { columns: [{ name: 'attribute', type: 'Utf8' }, { name: 'value', type: 'Utf8' }], rows: pairs, stats: row.stats };
    attrs.dataset.span = s.spanId;
    attrs.replaceChildren(h('h4', {}, `${s.name} · ${s.service} · table ${s.table}`), resultsTable(table, null, () => {}, 'span-attributes-table'));
  } catch (e) {
    attrs.replaceChildren(h('div', { class: 'error' }, (e as Error).message));
  }
}
