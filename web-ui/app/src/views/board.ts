// A board: its saved views as a grid of small charts, each drawn from the
// view's own state (an Explore view's chart, or a SQL view's answer).

import * as api from '../api';
import { type App } from '../app';
import { h } from '../dom';
import { seriesSql, tableSql } from '../sql';
import { decode } from '../url';
import { chartOf } from './chart';
import { groupValues } from './explore';
import { savedHref } from './save';

/** What a saved view draws: its chart's series, or its SQL's answer. */
async function answer(app: App, state: string): Promise<api.QueryResult> {
  const s = decode(state);
  if (s.view === 'sql' && s.sql) return api.query(s.sql);
  const q = s.query;
  const columns = app.tables.find((t) => t.name === q.table)?.columns ?? [];
  const now = new Date();
  const top = q.groupBy.length ? groupValues(q.groupBy.length, await api.query(tableSql(q, columns, now))) : [];
  return api.query(seriesSql(q, columns, now, top));
}

/** At most this many of a board's views run at once, so that a large board does not fill the node's query slots. */
const AT_ONCE = 3;

/** Runs `jobs` with at most `n` running at a time. */
async function limited(jobs: (() => Promise<void>)[], n: number) {
  const queue = [...jobs];
  const worker = async () => {
    for (let job = queue.shift(); job; job = queue.shift()) await job();
  };
  await Promise.all(Array.from({ length: Math.min(n, queue.length) }, worker));
}

function cell(app: App, name: string, view: api.SavedView | undefined, jobs: (() => Promise<void>)[]): HTMLElement {
  const body = h('div', {}, h('p', { class: 'muted' }, view ? 'Running…' : 'This view was deleted.'));
  const el = h('div', { class: 'board-cell chart', 'data-testid': 'board-cell', 'data-view-name': name }, h('h4', {}, h('a', { href: savedHref(name) }, name)), body);
  if (view) {
    const s = decode(view.state).query;
    jobs.push(async () => {
      try {
        const r = await answer(app, view.state);
        el.dataset.done = 'true';
        body.replaceChildren(chartOf(r, undefined, { style: s.style, total: s.total, height: 180 }));
      } catch (e) {
        el.dataset.done = 'error';
        body.replaceChildren(h('div', { class: 'error' }, (e as Error).message));
      }
    });
  }
  return el;
}

export function boardView(app: App): HTMLElement {
  const el = h('div', { class: 'board-view', 'data-view': 'board' }, h('p', { class: 'muted' }, 'Loading…'));
  api
    .saved()
    .then((saved) => {
      const board = saved.boards.find((b) => b.name === app.state.board);
      if (!board) return void el.replaceChildren(h('p', { class: 'error' }, `No board named "${app.state.board}".`));
      const views = new Map(saved.views.map((v) => [v.name, v]));
      const jobs: (() => Promise<void>)[] = [];
      el.replaceChildren(h('h3', {}, board.name), h('div', { class: 'board-grid' }, ...board.views.map((n) => cell(app, n, views.get(n), jobs))));
      void limited(jobs, AT_ONCE);
    })
    .catch((e) => el.replaceChildren(h('div', { class: 'error' }, (e as Error).message)));
  return el;
}
