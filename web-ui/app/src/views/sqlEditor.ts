// The SQL editor (CodeMirror 6): highlighting, completion of table and
// column names, Ctrl/Cmd-Enter runs, errors shown under the editor and,
// where the message gives a position, marked in the text.

import { EditorView, basicSetup } from 'codemirror';
import { keymap } from '@codemirror/view';
import { Compartment, Prec } from '@codemirror/state';
import { sql, PostgreSQL } from '@codemirror/lang-sql';
import { type Diagnostic, setDiagnostics } from '@codemirror/lint';
import * as api from '../api';
import { h } from '../dom';
import { errorPosition, tableSql, tokenEnd } from '../sql';
import { type App } from '../app';
import { chartOf } from './chart';
import { urlSortedTable } from './resultsTable';
import { QueryStatus } from './status';
import { saveControl } from './save';

const status = new QueryStatus();
const results = h('div', { class: 'results-area' });
const errorBox = h('div', { class: 'error sql-error', 'data-testid': 'sql-error' });
let editor: EditorView | null = null;
let current: App | null = null;

const language = new Compartment();

/** SQL with completion of every table, and of the explored table's columns without a prefix. */
function sqlLanguage(app: App) {
  const schema = Object.fromEntries(app.tables.map((t) => [t.name, t.columns.map((c) => c.name)]));
  const defaultTable = app.tables.some((t) => t.name === app.state.query.table) ? app.state.query.table : undefined;
  return sql({ dialect: PostgreSQL, schema, defaultTable, upperCaseKeywords: true });
}

function makeEditor(app: App, doc: string): EditorView {
  const run = () => {
    if (current) void runSql(current);
    return true;
  };
  return new EditorView({
    doc,
    extensions: [
      Prec.highest(keymap.of([{ key: 'Mod-Enter', run }])),
      basicSetup,
      language.of(sqlLanguage(app)),
      EditorView.lineWrapping,
    ],
  });
}

/** The builder's SQL, or a plain sample query when the builder is incomplete. */
function builderSql(app: App): string {
  const t = app.tables.find((t) => t.name === app.state.query.table);
  try {
    return tableSql(app.state.query, t?.columns ?? [], new Date());
  } catch {
    return t ? `SELECT * FROM "${t.name.replace(/"/g, '""')}" ORDER BY "time" DESC LIMIT 100` : 'SELECT 1';
  }
}

export function sqlView(app: App): HTMLElement {
  current = app;
  const doc = app.state.sql || builderSql(app);
  if (!editor) editor = makeEditor(app, doc);
  else editor.dispatch({ effects: language.reconfigure(sqlLanguage(app)) });
  if (editor.state.doc.toString() !== doc) editor.dispatch({ changes: { from: 0, to: editor.state.doc.length, insert: doc } });
  return h(
    'div',
    { class: 'sql-view' },
    h('div', { class: 'editor', 'data-testid': 'sql-editor' }, editor.dom),
    h(
      'div',
      { class: 'actions' },
      h('button', { class: 'primary', 'data-testid': 'run-sql', onclick: () => runSql(app) }, 'Run'),
      h('span', { class: 'muted' }, ' Ctrl/Cmd-Enter runs the query'),
      // The text in the editor, run or not, is what gets saved.
      saveControl(app, () => editor && app.update((s) => (s.sql = editor!.state.doc.toString()), false)),
    ),
    errorBox,
    status.el,
    results,
  );
}

function showError(message: string) {
  errorBox.textContent = message;
  if (!editor) return;
  const doc = editor.state.doc.toString();
  const at = errorPosition(message, doc);
  const diagnostics: Diagnostic[] = at === null ? [] : [{ from: at, to: tokenEnd(doc, at), severity: 'error', message }];
  editor.dispatch(setDiagnostics(editor.state, diagnostics));
}

export async function runSql(app: App) {
  if (!editor) return;
  const text = editor.state.doc.toString();
  app.update((s) => (s.sql = text), false);
  showError('');
  const signal = status.begin();
  const started = performance.now();
  try {
    const result = await api.query(text, signal);
    status.done(signal, result.rows.length, [result.stats], performance.now() - started);
    results.replaceChildren(chartOf(result), urlSortedTable(app, result));
  } catch (e) {
    status.failed(signal, signal.aborted ? '' : 'The query failed.');
    if (!signal.aborted) {
      // The old answer would read as this query's.
      results.replaceChildren();
      showError((e as Error).message);
    }
  }
}
