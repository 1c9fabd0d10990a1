// The application shell: state (mirrored in the URL), navigation, and the
// table list every view reads.

import * as api from './api';
import { h } from './dom';
import { type AppState, type View, decode, encode } from './url';

export interface App {
  state: AppState;
  tables: api.TableInfo[];
  /** Changes the state, writes it to the URL, and (by default) renders again. */
  update(change: (s: AppState) => unknown, rerender?: boolean): void;
  /** Fetches the table list again; renders again if tables or columns changed. */
  refreshTables(): Promise<void>;
}

export type ViewRenderer = (app: App) => HTMLElement;

const TITLES: Record<View, string> = { explore: 'Explore', sql: 'SQL', tables: 'Tables', cluster: 'Cluster', trace: 'Trace', saved: 'Saved', board: 'Board' };

export function startApp(root: HTMLElement, views: Record<View, ViewRenderer>, onLoad: (app: App) => void) {
  let shown: View | null = null;
  const content = h('div', { class: 'content' });
  const nav = h('nav', {});
  const app: App = {
    state: decode(location.search),
    tables: [],
    update(change, rerender = true) {
      change(app.state);
      history.replaceState(null, '', `?${encode(app.state)}`);
      if (rerender) render();
    },
    async refreshTables() {
      const fresh = await api.tables().catch(() => app.tables);
      if (JSON.stringify(fresh.map((t) => [t.name, t.columns])) === JSON.stringify(app.tables.map((t) => [t.name, t.columns]))) return;
      app.tables = fresh;
      if (app.state.view === 'explore') render();
    },
  };
  const render = () => {
    nav.replaceChildren(
      // A board is reached from Saved (or its URL): listed only while shown.
      ...(Object.keys(TITLES) as View[]).filter((v) => v !== 'board' || app.state.view === 'board').map((v) =>
        h('a', { href: '#', class: v === app.state.view ? 'active' : '', 'data-testid': `nav-${v}`, onclick: (e: Event) => (e.preventDefault(), app.update((s) => (s.view = v))) }, TITLES[v]),
      ),
    );
    content.replaceChildren(views[app.state.view](app));
    shown = app.state.view;
  };
  root.replaceChildren(h('header', {}, h('h1', {}, 'Atoll'), nav), content);
  api
    .tables()
    .then((t) => (app.tables = t))
    .catch(() => (app.tables = []))
    .finally(() => {
      if (!app.state.query.table && app.tables.length) app.state.query.table = app.tables[0].name;
      app.update(() => {});
      onLoad(app);
    });
  return { app, shownView: () => shown };
}
