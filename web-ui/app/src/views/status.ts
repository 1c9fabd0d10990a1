// What happened to the last query: running (elapsed, cancel), done
// (rows, server time, rows scanned) or failed, and a warning when the
// answer is partial.

import type { QueryStats } from '../api';
import { h } from '../dom';
import { formatMs, plural } from '../format';

export class QueryStatus {
  readonly el = h('div', { class: 'status', 'data-testid': 'status' });
  private timer = 0;
  private controller: AbortController | null = null;
  private static all: QueryStatus[] = [];

  constructor() {
    QueryStatus.all.push(this);
  }

  /** Cancels whatever query runs, in any view (Esc). */
  static cancelRunning() {
    for (const s of QueryStatus.all) s.controller?.abort();
  }

  /** Starts a run; the signal aborts when the user cancels or a new run starts. */
  begin(): AbortSignal {
    this.controller?.abort();
    clearInterval(this.timer);
    const controller = new AbortController();
    this.controller = controller;
    const started = performance.now();
    const elapsed = h('span', { class: 'elapsed' }, '0.0 s');
    const cancel = h('button', { class: 'link', 'data-testid': 'cancel', onclick: () => controller.abort() }, 'Cancel');
    this.el.replaceChildren(h('span', { class: 'spinner' }), h('span', { 'data-testid': 'running' }, 'Running… '), elapsed, ' ', cancel);
    this.timer = window.setInterval(() => (elapsed.textContent = `${((performance.now() - started) / 1000).toFixed(1)} s`), 100);
    return controller.signal;
  }

  private end(controller: AbortSignal): boolean {
    if (this.controller?.signal !== controller) return false;
    clearInterval(this.timer);
    this.controller = null;
    return true;
  }

  done(signal: AbortSignal, rows: number, stats: QueryStats[], wallMs: number) {
    if (!this.end(signal)) return;
    const server = stats.reduce((a, s) => a + s.elapsed_ms, 0);
    const scanned = stats.reduce((a, s) => a + s.rows_scanned, 0);
    const truncated = stats.some((s) => s.truncated);
    const parts = [`${plural(rows, 'row')}${truncated ? ' (truncated)' : ''}`, `${formatMs(server)} on the server`, `${formatMs(wallMs)} in all`, `${plural(scanned, 'row')} scanned${stats.length > 1 ? ` by ${stats.length} queries` : ''}`];
    this.el.replaceChildren(h('span', { 'data-testid': 'done' }, parts.join(' · ')));
    const partial = stats.filter((s) => s.coverage !== undefined && s.coverage < 1);
    if (partial.length) {
      const cov = Math.min(...partial.map((s) => s.coverage!));
      const missing = Math.max(...partial.map((s) => s.missing_partitions?.length ?? 0));
      this.el.append(
        h('div', { class: 'warning', 'data-testid': 'partial-warning' }, `Partial results: ${missing} partition${missing === 1 ? '' : 's'} had no reachable replica, coverage ${(cov * 100).toFixed(1)}%. Counts and sums are low.`),
      );
    }
  }

  failed(signal: AbortSignal, message: string) {
    if (!this.end(signal)) return;
    const text = signal.aborted ? 'Cancelled.' : message;
    this.el.replaceChildren(h('div', { class: signal.aborted ? 'muted' : 'error', 'data-testid': signal.aborted ? 'cancelled' : 'query-error' }, text));
  }
}
