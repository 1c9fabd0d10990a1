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
  const res = await fetch('/v1/query', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ sql, allow_partial: true }),
    signal,
  });
  return json<QueryResult>(res);
}

export interface TableInfo {
  name: string;
  rows: number;
  memory_bytes: number;
  columns: Column[];
  settings: Record<string, unknown>;
}

export async function tables(): Promise<TableInfo[]> {
  const body = await json<{ tables: TableInfo[] }>(await fetch('/v1/tables'));
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
  return json<ClusterInfo>(await fetch('/v1/cluster'));
}
