// Live mode on the page: follows the run's view over `POST /v1/live`,
// redrawing the chart and the samples as updates come, and querying again
// what cannot be followed (and when the node says the page fell behind).

import * as api from '../api';
import { h } from '../dom';
import { type LiveUpdate, REQUERY_SECONDS, applyUpdate, liveSpec, requeried, withRequeried, withSamples } from '../live';
import type { Column, QueryState } from '../model';
import { BuilderError, seriesSql } from '../sql';

export interface Followed {
  series: api.QueryResult;
  samples: api.QueryResult;
  /** The group values the chart draws. */
  drawn: unknown[][];
  chart: (series: api.QueryResult) => void;
  samplesTable: (samples: api.QueryResult) => void;
  status: HTMLElement;
}

let running: AbortController | null = null;

/** Stops following (a new run, Live off, another view). */
export function stopFollowing() {
  running?.abort();
  running = null;
}

function say(status: HTMLElement, state: string, text: string) {
  status.dataset.state = state;
  status.textContent = text;
}

export function follow(q: QueryState, columns: Column[], f: Followed) {
  stopFollowing();
  const controller = new AbortController();
  running = controller;
  const { signal } = controller;
  let spec;
  try {
    spec = liveSpec(q, columns, new Date());
  } catch (e) {
    if (e instanceof BuilderError) return say(f.status, 'off', e.message);
    throw e;
  }
  let series = f.series;
  let samples = f.samples;
  let updates = 0;
  const others = requeried(q, columns);
  const note = others.length ? ` · ${others.join(', ')} refreshed by query every ${REQUERY_SECONDS} s` : '';
  /** A fresh chart query: all of it when events were lost, else only the aggregates not followed. */
  const requery = async (all: boolean) => {
    const now = new Date();
    const fresh = await api.query(seriesSql(q, columns, now, f.drawn), signal).catch(() => null);
    if (fresh && !signal.aborted) {
      series = all ? fresh : withRequeried(series, fresh, q, columns);
      f.chart(series);
    }
  };
  const timer = others.length ? window.setInterval(() => requery(false), REQUERY_SECONDS * 1000) : 0;
  let lastRequery = 0;
  signal.addEventListener('abort', () => clearInterval(timer));
  say(f.status, 'connecting', 'Live: connecting…');
  const onUpdate = (u: LiveUpdate) => {
    if (signal.aborted) return;
    // The page moved to another view: stop.
    if (!f.status.isConnected) return stopFollowing();
    updates += 1;
    f.status.dataset.updates = String(updates);
    series = applyUpdate(series, u, q, columns, new Date(), f.drawn);
    f.chart(series);
    if (u.samples.length) {
      samples = withSamples(samples, u);
      f.samplesTable(samples);
    }
    const coverage = u.coverage < 1 ? ` · coverage ${(u.coverage * 100).toFixed(1)}% (${u.missing_partitions} partitions not followed)` : '';
    const behind = u.lost || u.overflow ? ' · events were dropped on the way: counts refreshed by query' : u.lagging ? ' · the page fell behind (counts kept)' : '';
    say(f.status, u.coverage < 1 ? 'partial' : 'on', `Live${coverage}${note}${behind}`);
    f.status.dataset.coverage = String(u.coverage);
    // Counts that missed events: ask again, at most every few seconds.
    if ((u.lost || u.overflow) && Date.now() - lastRequery > REQUERY_SECONDS * 1000) {
      lastRequery = Date.now();
      void requery(true);
    }
  };
  api
    .live<LiveUpdate>(spec, signal, onUpdate)
    .then(() => !signal.aborted && say(f.status, 'off', 'Live: the node ended the stream; Run to follow again.'))
    .catch((e) => !signal.aborted && say(f.status, 'off', `Live: ${(e as Error).message}`));
}

export function liveStatus(): HTMLElement {
  return h('div', { class: 'live-status', 'data-testid': 'live-status', 'data-state': 'off' });
}
