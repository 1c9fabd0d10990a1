// Calls to the node's HTTP API (same origin as the dashboard).

import type { Column } from './model';
import type { ResultColumn } from './series';

export interface QueryStats {
  elapsed_ms: number;
  rows_scanned: number;
  partitions_scanned?: number;
  partitions_total?: number;
  truncated?: boolean;
  coverage?: number;
  missing_partitions?: number[];
}

export interface QueryResult {
  columns: ResultColumn[];
  rows: unknown[][];
  stats: QueryStats;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const KEY = 'atoll-api-key';

/** Asks the user for an API key; resolves with it, or null if they gave up. */
export type KeyPrompt = (why: string) => Promise<string | null>;
let prompt: KeyPrompt = async () => null;

/** Sets how the dashboard asks for a key when the node wants one. */
export function onKeyNeeded(p: KeyPrompt) {
  prompt = p;
}

/**
 * A call to the node with the API key of this browser tab (kept in session
 * storage): a 401 asks for a key and tries again with it.
 */
async function call(path: string, init: RequestInit = {}): Promise<Response> {
  for (;;) {
    const key = sessionStorage.getItem(KEY);
    const headers = new Headers(init.headers);
    if (key) headers.set('Authorization', `Bearer ${key}`);
    const res = await fetch(path, { ...init, headers });
    if (res.status !== 401) return res;
    const why = ((await res.clone().json().catch(() => ({}))) as { error?: string }).error ?? 'this node needs an API key';
    const given = await prompt(key ? `The key was refused: ${why}` : why);
    if (!given) return res;
    sessionStorage.setItem(KEY, given.trim());
  }
}

async function json<T>(res: Response): Promise<T> {
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new ApiError(res.status, text || res.statusText);
  }
  if (!res.ok) {
    const msg = (body as { error?: string })?.error ?? res.statusText;
    throw new ApiError(res.status, msg);
  }
  return body as T;
}

/**
 * Runs SQL. The dashboard always allows partial answers: a down node
 * should leave a warning on the chart, not an empty page.
 */
export async function query(sql: string, signal?: AbortSignal): Promise<QueryResult> {
  const res = await call('/v1/query', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ sql, allow_partial: true }),
    signal,
  });
  return json<QueryResult>(res);
}

/**
 * Follows a live view: the node's Server-Sent Events, read with fetch so
 * that the key goes in `Authorization`. Resolves when the stream ends
 * (the signal aborts it); each update goes to `onUpdate`.
 */
export async function live<T>(spec: object, signal: AbortSignal, onUpdate: (u: T) => void): Promise<void> {
  const res = await call('/v1/live', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(spec), signal });
  if (!res.ok || !res.body) {
    await json(res);
    throw new ApiError(res.status, res.statusText);
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    await readEvents(reader, onUpdate);
  } finally {
    // However it ended (an unreadable event, a throwing handler), the
    // node must see the stream closed.
    await reader.cancel().catch(() => {});
  }
}

async function readEvents<T>(reader: ReadableStreamDefaultReader<string>, onUpdate: (u: T) => void) {
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end = buffer.indexOf('\n\n');
    while (end >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event
        .split('\n')
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).trimStart())
        .join('\n');
      if (data) onUpdate(JSON.parse(data) as T);
      end = buffer.indexOf('\n\n');
    }
  }
}

export interface TableInfo {
  name: string;
  rows: number;
  memory_bytes: number;
  columns: Column[];
  settings: Record<string, unknown>;
}

export interface SavedView {
  name: string;
  /** The dashboard's state, as its URL's query string. */
  state: string;
  updated: string;
  by: string;
}

export interface Board {
  name: string;
  views: string[];
  updated: string;
  by: string;
}

export interface Saved {
  views: SavedView[];
  boards: Board[];
}

export type SavedKind = 'views' | 'boards';

/** The cluster's saved views and boards. */
export async function saved(): Promise<Saved> {
  return json<Saved>(await call('/v1/saved'));
}

function savedPath(kind: SavedKind, name: string): string {
  return `/v1/saved/${kind}/${encodeURIComponent(name)}`;
}

/** Saves (or replaces) a view or a board under `name`. */
export async function save(kind: 'views', name: string, body: { state: string }): Promise<SavedView>;
export async function save(kind: 'boards', name: string, body: { views: string[] }): Promise<Board>;
export async function save(kind: SavedKind, name: string, body: object): Promise<unknown> {
  return json(await call(savedPath(kind, name), { method: 'PUT', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) }));
}

export async function unsave(kind: SavedKind, name: string): Promise<void> {
  await json(await call(savedPath(kind, name), { method: 'DELETE' }));
}

export async function tables(): Promise<TableInfo[]> {
  const body = await json<{ tables: TableInfo[] }>(await call('/v1/tables'));
  return body.tables;
}

export interface NodeInfo {
  name: string;
  status: string;
  http_addr: string;
  flight_addr: string;
  gossip_addr: string;
  in_ring: boolean;
  rows: number;
  memory_bytes: number;
  hint_rows: number;
  owned_partitions: number;
  primary_partitions: number;
  pending_partitions: number;
  incomplete_partitions: number[];
}

export interface PartitionInfo {
  partition: number;
  owner: string;
  primaries: string[];
  fallbacks: string[];
  pending_owner: string | null;
  pending_replicas: string[];
}

export interface ClusterInfo {
  node: string;
  epoch: number;
  partitions: number;
  replicas: number;
  write_quorum: number;
  moving_partitions: number;
  nodes: NodeInfo[];
  ring: PartitionInfo[];
}

export async function cluster(): Promise<ClusterInfo> {
  return json<ClusterInfo>(await call('/v1/cluster'));
}
