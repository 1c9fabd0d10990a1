import './style.css';
import * as api from './api';
import { onKeyNeeded } from './api';
import { type App, startApp } from './app';
import { type View, decode } from './url';
import { stopFollowing } from './views/follow';
import { keyPrompt } from './views/keyPrompt';
import { boardView } from './views/board';
import { clusterView } from './views/cluster';
import { exploreKeys, exploreView, runExplore } from './views/explore';
import { rememberSavedName } from './views/save';
import { missingSaved, savedView } from './views/saved';
import { runSql, sqlView } from './views/sqlEditor';
import { tablesView } from './views/tables';
import { traceView } from './views/trace';

/** A shared URL reproduces its view: run what it describes. */
function runShown(app: App) {
  if (app.state.view === 'explore' && app.state.query.table && app.tables.some((t) => t.name === app.state.query.table)) void runExplore(app);
  if (app.state.view === 'sql' && app.state.sql) void runSql(app);
}

/** `?saved=NAME`: the saved view's state, from the cluster's saved views. */
async function openSaved(app: App, name: string) {
  let saved: api.Saved;
  try {
    saved = await api.saved();
  } catch (e) {
    missingSaved(`Cannot open the saved view "${name}": ${(e as Error).message}`);
    return app.update((s) => (s.view = 'saved'));
  }
  const view = saved.views.find((v) => v.name === name);
  if (!view) {
    missingSaved(`No saved view named "${name}".`);
    return app.update((s) => (s.view = 'saved'));
  }
  rememberSavedName(name);
  app.update((s) => Object.assign(s, decode(view.state)));
  runShown(app);
}

onKeyNeeded(keyPrompt);
// Read before the app writes its state into the URL.
const savedName = new URLSearchParams(location.search).get('saved');
startApp(
  document.getElementById('app')!,
  {
    explore: exploreView,
    // Leaving Explore stops a live view.
    ...Object.fromEntries(Object.entries({ sql: sqlView, tables: tablesView, cluster: clusterView, trace: traceView, saved: savedView, board: boardView }).map(([k, v]) => [k, (a: App) => (stopFollowing(), v(a))])),
  } as Record<View, (a: App) => HTMLElement>,
  (app) => {
    document.addEventListener('keydown', (e) => exploreKeys(app, e));
    if (savedName) void openSaved(app, savedName);
    else runShown(app);
  },
);
