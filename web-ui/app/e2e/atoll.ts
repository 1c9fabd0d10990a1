// Real `atoll` processes and a real Chromium for the browser tests.

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { type Browser, chromium } from 'playwright-core';

const REPO = resolve(import.meta.dirname, '../../..');
export const ATOLL = process.env.ATOLL_BIN ?? join(REPO, 'target/debug/atoll');
export const SHOTS = join(REPO, 'target/e2e');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const GEN = join(REPO, '../shared/bench/gen_events.py');

export class Node {
  constructor(
    readonly name: string,
    readonly url: string,
    readonly proc: ChildProcess,
    readonly gossipAddr: string,
    /** The admin key the node was started with, sent on every call. */
    readonly key?: string,
    /** The flags it was started with (its name and addresses aside). */
    readonly extra: string[] = [],
  ) {}

  /** SIGTERM (the node stays in the ring), and wait until the process is gone. */
  async stop(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const gone = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill('SIGTERM');
    await gone;
  }

  /** Stops the node and starts it again with the same flags, on its gossip port. */
  async restart(): Promise<Node> {
    await this.stop();
    return startNode(this.name, [...this.extra, '--gossip-addr', this.gossipAddr]);
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return this.key ? { ...extra, Authorization: `Bearer ${this.key}` } : extra;
  }

  /** SIGKILL, and wait until the process is gone. */
  async kill(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const gone = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill('SIGKILL');
    await gone;
  }

  async sql(sql: string): Promise<{ columns: { name: string; type: string }[]; rows: unknown[][]; stats: Record<string, unknown> }> {
    const res = await fetch(`${this.url}/v1/query`, { method: 'POST', headers: this.headers({ 'Content-Type': 'application/json' }), body: JSON.stringify({ sql, allow_partial: true }) });
    const body = await res.json();
    if (!res.ok) throw new Error(`${res.status}: ${JSON.stringify(body)}`);
    return body;
  }

  /** A gauge or counter of `/metrics` (summed over its labels), or null when absent. */
  async metric(name: string): Promise<number | null> {
    const text = await (await fetch(`${this.url}/metrics`, { headers: this.headers() })).text();
    const values = text
      .split('\n')
      .filter((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`))
      .map((l) => Number(l.slice(l.lastIndexOf(' ') + 1)));
    return values.length ? values.reduce((a, b) => a + b, 0) : null;
  }

  async cluster(): Promise<{ nodes: { name: string; status: string }[] }> {
    return (await fetch(`${this.url}/v1/cluster`, { headers: this.headers() })).json();
  }

  async ingest(table: string, ndjson: string): Promise<number> {
    const res = await fetch(`${this.url}/v1/tables/${table}/events`, { method: 'POST', headers: this.headers({ 'Content-Type': 'application/x-ndjson' }), body: ndjson });
    const body = (await res.json()) as { accepted: number };
    if (!res.ok) throw new Error(`ingest: ${res.status} ${JSON.stringify(body)}`);
    return body.accepted;
  }
}

/** `atoll serve` on ports the system picks; resolves once its `--ready-file` says which. */
export async function startNode(name: string, extra: string[] = []): Promise<Node> {
  const ready = join(tmpdir(), `atoll-e2e-ready-${process.pid}-${name}-${Date.now()}.json`);
  rmSync(ready, { force: true });
  const args = ['serve', '--http-addr', '127.0.0.1:0', '--flight-addr', '127.0.0.1:0', '--gossip-addr', '127.0.0.1:0', '--log', 'warn', '--cluster-secret', 'e2e-secret', '--node-name', name, ...extra, '--ready-file', ready];
  const proc = spawn(ATOLL, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  let exited: number | null | undefined;
  proc.once('exit', (code) => (exited = code));
  const said = await waitFor(`${name} to write its ready file`, async () => {
    if (exited !== undefined) throw new Error(`${ATOLL} exited with ${exited} before it was ready`);
    return existsSync(ready) && (JSON.parse(readFileSync(ready, 'utf8')) as { http_addr: string; gossip_addr: string });
  }, 60, true);
  rmSync(ready, { force: true });
  const key = extra.includes('--admin-key') ? extra[extra.lastIndexOf('--admin-key') + 1] : undefined;
  return new Node(name, `http://${said.http_addr}`, proc, said.gossip_addr, key, extra);
}

/** Polls `probe` until it gives a value, for at most `seconds`; with `failFast`, an error it throws ends the wait. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | null | false>, seconds = 30, failFast = false): Promise<T> {
  const until = Date.now() + seconds * 1000;
  for (;;) {
    const v = await probe().catch((e) => {
      if (failFast) throw e;
      return undefined;
    });
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** `n` nodes with `replicas` replicas, seeded by the first, node i with `own(i)`'s flags too; waits until every node sees all up. */
export async function startCluster(n: number, replicas: number, own: (i: number) => string[] = () => []): Promise<Node[]> {
  const cluster = `e2e-${process.pid}-${Date.now()}`;
  const nodes: Node[] = [];
  for (let i = 0; i < n; i++) {
    const extra = ['--cluster-name', cluster, '--gossip-interval-ms', '100', '--replicas', String(replicas), ...own(i)];
    if (i > 0) extra.push('--seed', nodes[0].gossipAddr);
    nodes.push(await startNode(`n${i}`, extra));
  }
  for (const node of nodes) {
    await waitFor(`${node.name} to see ${n} nodes up`, async () => (await node.cluster()).nodes.filter((x) => x.status === 'up').length === n);
  }
  return nodes;
}

/** Generator events over the last 24 hours, as NDJSON. */
export function events(rows: number, seed = 7): string {
  const out = join(tmpdir(), `atoll-e2e-${process.pid}-${rows}-${seed}.ndjson`);
  execFileSync('python3', [GEN, '--rows', String(rows), '--seed', String(seed), '--start', 'now', '--out', out]);
  return readFileSync(out, 'utf8');
}

/** Headless Debian Chromium, with the flags a machine without internet needs. */
export async function browser(): Promise<Browser> {
  mkdirSync(SHOTS, { recursive: true });
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}
