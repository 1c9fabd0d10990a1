// A results table, sortable by clicking a header (client-side).

import type { QueryResult } from '../api';
import type { App } from '../app';
import { h } from '../dom';
import { formatCell } from '../format';
import { isNumericType } from '../series';
import { TRACE_ID, traceHref } from '../trace';

/** A cell's content: a trace id links to its waterfall. */
function cell(v: unknown, column: string): Node | string {
  if (column === TRACE_ID && typeof v === 'string' && v) return h('a', { href: traceHref(v), class: 'trace-link', 'data-testid': 'trace-link' }, v);
  return formatCell(v, column);
}

export type Sort = { column: string; desc: boolean } | null;

function compare(a: unknown, b: unknown): number {
  if (a === b) return 0;
  if (a === null || a === undefined) return 1;
  if (b === null || b === undefined) return -1;
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  return String(a).localeCompare(String(b));
}

export function resultsTable(result: QueryResult, sort: Sort, onSort: (s: Sort) => void, testid = 'results'): HTMLElement {
  const rows = [...result.rows];
  const si = sort ? result.columns.findIndex((c) => c.name === sort.column) : -1;
  if (sort && si >= 0) rows.sort((x, y) => (sort.desc ? -1 : 1) * compare(x[si], y[si]));
  const head = h(
    'tr',
    {},
    ...result.columns.map((c, i) => {
      const mark = i === si ? (sort!.desc ? ' ▼' : ' ▲') : '';
      const next: Sort = i === si ? (sort!.desc ? { column: c.name, desc: false } : null) : { column: c.name, desc: true };
      return h('th', { title: `${c.type} — click to sort`, class: isNumericType(c.type) ? 'num' : '', onclick: () => onSort(next) }, c.name + mark);
    }),
  );
  const body = rows.map((r) =>
    h(
      'tr',
      {},
      ...r.map((v, i) => {
        const col = result.columns[i];
        return h('td', { class: isNumericType(col.type) ? 'num' : '', title: v === null ? 'NULL' : typeof v === 'object' ? JSON.stringify(v) : String(v) }, cell(v, col.name));
      }),
    ),
  );
  return h('div', { class: 'table-wrap' }, h('table', { class: 'results', 'data-testid': testid }, h('thead', {}, head), h('tbody', {}, ...body)));
}

/** A results table whose sort lives in the URL (`sort`), redrawn in place when a header is clicked. */
export function urlSortedTable(app: App, result: QueryResult): HTMLElement {
  const slot = h('div', {});
  const draw = () =>
    slot.replaceChildren(
      resultsTable(result, app.state.sort, (s) => {
        app.update((st) => (st.sort = s), false);
        draw();
      }),
    );
  draw();
  return slot;
}
