// The live cluster: every node with its status and share, and the ring as
// a picture (one ring of arcs per replica, coloured by node; down replicas
// grey and outlined red, with the fallback taking their writes marked
// outside). Refreshes every 3 seconds while shown.

import * as api from '../api';
import { h } from '../dom';
import { formatBytes, formatNumber } from '../format';
import { color } from './chart';

const SVG = 'http://www.w3.org/2000/svg';
const REFRESH_MS = 3000;

function svg(tag: string, attrs: Record<string, string | number>, ...children: (Node | string)[]): SVGElement {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  el.append(...children);
  return el;
}

function arc(cx: number, cy: number, r: number, a0: number, a1: number): string {
  const p = (a: number) => `${(cx + r * Math.sin(a)).toFixed(2)} ${(cy - r * Math.cos(a)).toFixed(2)}`;
  return `M ${p(a0)} A ${r} ${r} 0 0 1 ${p(a1)}`;
}

function colours(info: api.ClusterInfo): Map<string, string> {
  const names = [...new Set([...info.nodes.map((n) => n.name), ...info.ring.flatMap((p) => p.primaries)])].sort();
  return new Map(names.map((n, i) => [n, color(i)]));
}

function partitionTitle(p: api.PartitionInfo, down: Set<string>, fallback: string | undefined): string {
  const reps = p.primaries.map((n) => (down.has(n) ? `${n} (down)` : n)).join(', ');
  const extra = [fallback ? `fallback ${fallback}` : '', p.pending_owner ? `moving to ${p.pending_owner}` : ''].filter(Boolean);
  return `partition ${p.partition}: ${reps}${extra.length ? ` — ${extra.join(', ')}` : ''}`;
}

function ringPicture(info: api.ClusterInfo): SVGElement {
  const size = 320;
  const c = size / 2;
  const col = colours(info);
  const down = new Set(info.nodes.filter((n) => n.status === 'down').map((n) => n.name));
  const step = (2 * Math.PI) / Math.max(1, info.ring.length);
  const gap = Math.min(0.01, step * 0.15);
  const root = svg('svg', { viewBox: `0 0 ${size} ${size}`, width: size, height: size, class: 'ring', 'data-testid': 'ring' });
  for (const p of info.ring) {
    const a0 = p.partition * step + gap;
    const a1 = (p.partition + 1) * step - gap;
    const fallback = p.primaries.some((n) => down.has(n)) ? p.fallbacks.find((n) => !down.has(n)) : undefined;
    const title = partitionTitle(p, down, fallback);
    p.primaries.forEach((n, r) => {
      const isDown = down.has(n);
      const attrs: Record<string, string | number> = {
        d: arc(c, c, 130 - r * 18, a0, a1),
        fill: 'none',
        stroke: isDown ? '#c8c8c8' : (col.get(n) ?? '#999'),
        'stroke-width': 14,
        class: isDown ? 'arc down' : 'arc',
        'data-node': n,
      };
      root.append(svg('path', attrs, svg('title', {}, title)));
      if (isDown) root.append(svg('path', { d: arc(c, c, 130 - r * 18 + 8, a0, a1), fill: 'none', stroke: '#d62828', 'stroke-width': 2 }));
    });
    if (fallback) {
      const mid = (a0 + a1) / 2;
      root.append(svg('circle', { cx: c + 150 * Math.sin(mid), cy: c - 150 * Math.cos(mid), r: 4, fill: col.get(fallback) ?? '#999', class: 'fallback' }, svg('title', {}, title)));
    }
    if (p.pending_owner) root.append(svg('path', { d: arc(c, c, 145, a0, a1), fill: 'none', stroke: col.get(p.pending_owner) ?? '#999', 'stroke-width': 3, 'stroke-dasharray': '3 2' }, svg('title', {}, title)));
  }
  root.append(svg('text', { x: c, y: c - 4, 'text-anchor': 'middle', class: 'ring-label' }, `${info.ring.length} partitions`));
  root.append(svg('text', { x: c, y: c + 14, 'text-anchor': 'middle', class: 'ring-label muted' }, `N=${info.replicas}, W=${info.write_quorum}, epoch ${info.epoch}`));
  return root;
}

function nodesTable(info: api.ClusterInfo): HTMLElement {
  const col = colours(info);
  const head = ['node', 'status', 'HTTP address', 'rows', 'memory', 'partitions (primary / held)', 'pending', 'incomplete', 'hints'];
  return h(
    'table',
    { class: 'results', 'data-testid': 'nodes' },
    h('thead', {}, h('tr', {}, ...head.map((t) => h('th', {}, t)))),
    h(
      'tbody',
      {},
      ...info.nodes.map((n) =>
        h(
          'tr',
          { 'data-node': n.name, 'data-status': n.status, class: `node-${n.status}` },
          h('td', {}, h('span', { class: 'swatch', style: `background:${col.get(n.name)}` }), n.name, n.name === info.node ? ' (this node)' : ''),
          h('td', {}, h('span', { class: `badge ${n.status}` }, n.status)),
          h('td', {}, n.status === 'up' ? h('a', { href: `http://${n.http_addr}/?view=cluster` }, n.http_addr) : n.http_addr),
          h('td', { class: 'num' }, formatNumber(n.rows)),
          h('td', { class: 'num' }, formatBytes(n.memory_bytes)),
          h('td', { class: 'num' }, `${n.primary_partitions} / ${n.owned_partitions}`),
          h('td', { class: 'num' }, n.pending_partitions),
          h('td', { class: 'num' }, n.incomplete_partitions.length),
          h('td', { class: 'num' }, formatNumber(n.hint_rows)),
        ),
      ),
    ),
  );
}

function render(el: HTMLElement, info: api.ClusterInfo) {
  const down = info.nodes.filter((n) => n.status === 'down').length;
  const summary = `${info.nodes.length} nodes, ${down} down${info.moving_partitions ? `, ${info.moving_partitions} partitions moving` : ''} — seen from ${info.node}, refreshed ${new Date().toLocaleTimeString()}`;
  const key = h(
    'p',
    { class: 'muted ring-key' },
    `Each ring of arcs is one replica of the ${info.partitions} partitions, coloured by node. Grey arcs outlined in red: the replica is down. Dots outside: the fallback node taking its writes. Dashed outer arcs: the partition is moving to that node.`,
  );
  el.replaceChildren(h('p', { class: 'muted', 'data-testid': 'cluster-summary' }, summary), h('div', { class: 'cluster' }, h('div', {}, ringPicture(info), key), nodesTable(info)));
}

export function clusterView(): HTMLElement {
  const el = h('div', { class: 'cluster-view' }, h('p', { class: 'muted' }, 'Loading…'));
  const refresh = async () => {
    try {
      render(el, await api.cluster());
    } catch (e) {
      el.replaceChildren(h('div', { class: 'error' }, `cluster state unavailable: ${(e as Error).message}`));
    }
  };
  void refresh();
  const timer = window.setInterval(() => (el.isConnected ? void refresh() : clearInterval(timer)), REFRESH_MS);
  return el;
}
