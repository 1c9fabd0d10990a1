// Each table's columns, types, rows and memory, from GET /v1/tables.

import * as api from '../api';
import { h } from '../dom';
import { formatBytes, formatNumber } from '../format';
import { type App } from '../app';
import { defaultState } from '../model';

function card(app: App, t: api.TableInfo): HTMLElement {
  const explore = () =>
    app.update((s) => {
      s.view = 'explore';
      s.query = { ...defaultState(t.name), range: s.query.range };
    });
  const settings = Object.entries(t.settings ?? {});
  return h(
    'div',
    { class: 'card', 'data-testid': 'table-card' },
    h('h3', {}, t.name, ' ', h('button', { class: 'link', onclick: explore }, 'explore')),
    h('p', { class: 'muted' }, `${formatNumber(t.rows)} rows · ${formatBytes(t.memory_bytes)} in memory on this node's share`, settings.length ? ` · ${settings.map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ')}` : ''),
    h('table', { class: 'results' }, h('thead', {}, h('tr', {}, h('th', {}, 'column'), h('th', {}, 'type'))), h('tbody', {}, ...t.columns.map((c) => h('tr', {}, h('td', {}, c.name), h('td', {}, c.type))))),
  );
}

export function tablesView(app: App): HTMLElement {
  const el = h('div', { class: 'tables-view' }, h('p', { class: 'muted' }, 'Loading…'));
  api
    .tables()
    .then((tables) => {
      app.tables = tables;
      el.replaceChildren(...(tables.length ? tables.map((t) => card(app, t)) : [h('p', {}, 'No tables yet: send events to POST /v1/tables/{table}/events.')]));
    })
    .catch((e) => el.replaceChildren(h('div', { class: 'error' }, (e as Error).message)));
  return el;
}
