import './style.css';
import { onKeyNeeded } from './api';
import { startApp } from './app';
import { keyPrompt } from './views/keyPrompt';
import { clusterView } from './views/cluster';
import { exploreKeys, exploreView, runExplore } from './views/explore';
import { runSql, sqlView } from './views/sqlEditor';
import { tablesView } from './views/tables';
import { traceView } from './views/trace';

onKeyNeeded(keyPrompt);
startApp(document.getElementById('app')!, { explore: exploreView, sql: sqlView, tables: tablesView, cluster: clusterView, trace: traceView }, (app) => {
  document.addEventListener('keydown', (e) => exploreKeys(app, e));
  // A shared URL reproduces its view: run what it describes.
  if (app.state.view === 'explore' && app.state.query.table && app.tables.some((t) => t.name === app.state.query.table)) void runExplore(app);
  if (app.state.view === 'sql' && app.state.sql) void runSql(app);
});
