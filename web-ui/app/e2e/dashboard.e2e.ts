// The dashboard in a real Chromium against real atoll processes.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { formatNumber } from '../src/format';
import { type Node, SHOTS, browser, events, startCluster, startNode, waitFor } from './atoll';

const Q2 = 'SELECT status, count(*) AS n FROM events GROUP BY status ORDER BY n DESC, status';

/** Generator events of the last 24 h, less their first hour, so that a "last 24 h" window holds all of them while the test runs. */
function recentEvents(rows: number, seed = 7): string {
  const cut = new Date(Date.now() - 23 * 3600_000).toISOString();
  return events(rows, seed)
    .split('\n')
    .filter((l) => l && JSON.parse(l).time > cut)
    .join('\n');
}

async function open(b: Browser, url: string): Promise<Page> {
  const page = await b.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on('pageerror', (e) => console.error('page error:', e));
  await page.goto(url);
  return page;
}

/** Presses Run and waits for the run to finish. */
async function runBuilder(page: Page) {
  await page.locator('[data-testid=run]').click();
  await page.locator('[data-testid=done]').waitFor();
}

/** The events table over the last 24 h, on a fresh page of the node. */
async function events24h(page: Page, url: string) {
  await page.goto(url);
  await page.locator('[data-testid=table]').selectOption('events');
  await page.locator('[data-testid=range]').selectOption('24h');
}

/** Count by region over the last 24 h, built with the builder's controls. */
async function buildCountByRegion(page: Page) {
  await page.locator('[data-testid=table]').selectOption('events');
  await page.locator('[data-testid=range]').selectOption('24h');
  await page.getByRole('button', { name: '+ group' }).click();
  await page.locator('[data-testid=group] select').selectOption('region');
  await runBuilder(page);
}

/** Series names in the chart's legend (uPlot's first row is the x axis). */
async function legend(page: Page): Promise<string[]> {
  const labels = await page.locator('.u-legend .u-series .u-label').allTextContents();
  return labels.slice(1);
}

/** The raw values (cell titles) of a results table, row by row. */
async function tableCells(page: Page, testid = 'results'): Promise<string[][]> {
  return page
    .locator(`[data-testid=${testid}] tbody tr`)
    .evaluateAll((rows) => rows.map((r) => [...r.querySelectorAll('td')].map((td) => td.getAttribute('title') ?? '')));
}

/**
 * `count(*)` through `/v1/query` over the window the last run used (the
 * results area says it), moved back by `backMs`, with more conditions.
 */
async function countInRunWindow(page: Page, node: Node, backMs = 0, and = ''): Promise<number> {
  const area = page.locator('.results-area');
  const at = async (edge: string) => new Date(new Date((await area.getAttribute(`data-${edge}`))!).getTime() - backMs).toISOString();
  const [[n]] = (await node.sql(`SELECT count(*) FROM events WHERE time >= TIMESTAMP '${await at('from')}' AND time < TIMESTAMP '${await at('to')}'${and}`)).rows;
  return Number(n);
}

async function setEditor(page: Page, text: string) {
  await page.locator('.cm-content').click();
  await page.keyboard.press('ControlOrMeta+a');
  await page.keyboard.press('Delete');
  await page.keyboard.insertText(text);
}

describe('one node', () => {
  let node: Node;
  let b: Browser;
  let page: Page;

  beforeAll(async () => {
    node = await startNode('e2e');
    await node.ingest('events', recentEvents(20000));
    b = await browser();
    page = await open(b, node.url);
  });
  afterAll(async () => {
    await b?.close();
    await node?.kill();
  });

  it('draws count by region over the last 24 h as one series per region', async () => {
    await buildCountByRegion(page);
    const expected = await node.sql('SELECT region, count(*) AS n FROM events GROUP BY region ORDER BY n DESC, region');
    const regions = expected.rows.map((r) => String(r[0]));
    expect(regions.length).toBeGreaterThan(1);
    expect(await page.locator('[data-testid=chart]').getAttribute('data-series')).toBe(String(regions.length));
    expect(await page.locator('[data-testid=chart]').getAttribute('data-axes')).toBe('count');
    expect((await legend(page)).sort()).toEqual([...regions].sort());
    expect(await tableCells(page)).toEqual(expected.rows.map((r) => r.map(String)));
    await expect.poll(() => page.locator('[data-testid=samples-table] tbody tr').count()).toBe(50);
    await page.screenshot({ path: join(SHOTS, 'explore-count-by-region.png'), fullPage: true });
    await page.screenshot({ path: join(SHOTS, 'docs-explore.png') });
  });

  it('reproduces the view from its URL', async () => {
    const url = page.url();
    expect(url).toContain('group=region');
    const again = await open(b, url);
    await again.locator('[data-testid=done]').waitFor();
    expect(await again.locator('[data-testid=range]').inputValue()).toBe('24h');
    expect(await again.locator('[data-testid=group] select').inputValue()).toBe('region');
    expect((await legend(again)).sort()).toEqual((await legend(page)).sort());
    expect(await tableCells(again)).toEqual(await tableCells(page));
    await again.close();
  });

  it('keeps builder values inside literals', async () => {
    await page.getByRole('button', { name: '+ filter' }).click();
    await page.locator('[data-testid=filter] select[aria-label="filter column"]').selectOption('region');
    await page.locator('[data-testid=filter] input').fill("x' OR '1'='1");
    await runBuilder(page);
    expect(await tableCells(page)).toEqual([]);
    await page.locator('[data-testid=filter] button').click();
  });

  it('runs Q2 from the SQL editor and shows errors inline', async () => {
    await page.locator('[data-testid=nav-sql]').click();
    await setEditor(page, Q2);
    await page.keyboard.press('ControlOrMeta+Enter');
    await page.locator('[data-testid=done]').waitFor();
    const expected = await node.sql(Q2);
    expect(await tableCells(page)).toEqual(expected.rows.map((r) => r.map(String)));
    await page.screenshot({ path: join(SHOTS, 'sql-q2.png'), fullPage: true });

    // The URL holds the SQL: a reload runs it again.
    await page.reload();
    await page.locator('[data-testid=done]').waitFor();
    expect(await page.locator('.cm-content').textContent()).toBe(Q2);
    expect(await tableCells(page)).toEqual(expected.rows.map((r) => r.map(String)));

    // Completion offers the explored table's columns.
    await setEditor(page, 'SELECT durat');
    await page.keyboard.press('Control+Space');
    const options = page.locator('.cm-tooltip-autocomplete li');
    await expect.poll(() => options.allTextContents()).toContain('duration_ms');

    await setEditor(page, 'SELECT status FROM events WHER status > 1');
    await page.locator('[data-testid=run-sql]').click();
    await expect.poll(() => page.locator('[data-testid=sql-error]').textContent()).toMatch(/found: status at Line: 1, Column: 32/);
    await page.locator('.cm-lintRange-error').first().waitFor();
    expect(await page.locator('.cm-lintRange-error').first().textContent()).toBe('status');
    expect(await page.locator('[data-testid=results] tbody tr').count()).toBe(0);
    await page.screenshot({ path: join(SHOTS, 'sql-error.png') });
  });

  it('cancels a running query', async () => {
    await setEditor(page, 'SELECT count(*) FROM events a, events b WHERE a.duration_ms < b.duration_ms AND a.bytes <> b.bytes');
    await page.locator('[data-testid=run-sql]').click();
    await page.locator('[data-testid=running]').waitFor();
    await page.locator('[data-testid=cancel]').click();
    await page.locator('[data-testid=cancelled]').waitFor();
    // Esc does the same.
    await page.locator('[data-testid=run-sql]').click();
    await page.locator('[data-testid=running]').waitFor();
    await page.keyboard.press('Escape');
    await page.locator('[data-testid=cancelled]').waitFor();
  });

  it('keeps groups by an aggregate with HAVING', async () => {
    await page.goto(node.url);
    await buildCountByRegion(page);
    const all = await node.sql('SELECT region, count(*) AS n FROM events GROUP BY region ORDER BY n DESC, region');
    const threshold = Number(all.rows[Math.min(2, all.rows.length - 1)][1]);
    await page.locator('[data-testid=add-having]').click();
    await page.locator('[data-testid=having] select[aria-label="having aggregate"]').selectOption('count');
    await page.locator('[data-testid=having] select[aria-label="having operator"]').selectOption('>');
    await page.locator('[data-testid=having] input').fill(String(threshold));
    await runBuilder(page);
    const expected = await node.sql(`SELECT region, count(*) AS n FROM events GROUP BY region HAVING count(*) > ${threshold} ORDER BY n DESC, region`);
    expect(expected.rows.length).toBeLessThan(all.rows.length);
    expect(await tableCells(page)).toEqual(expected.rows.map((r) => r.map(String)));
    expect(page.url()).toContain('having=');
  });

  it('compares to an hour before: a dashed series and columns then and change', async () => {
    await events24h(page, node.url);
    await page.getByLabel('Compare to').selectOption('1h');
    await runBuilder(page);
    const now = await countInRunWindow(page, node);
    const then = await countInRunWindow(page, node, 3600_000);
    expect(then).toBeGreaterThan(0);
    expect(then).not.toBe(now);
    const chart = page.locator('[data-testid=chart]');
    expect(await chart.getAttribute('data-series')).toBe('2');
    expect(await legend(page)).toEqual(['count', 'count (1h before)']);
    expect(JSON.parse((await chart.getAttribute('data-sums'))!)).toEqual({ count: now, 'count (1h before)': then });
    const head = await page.locator('[data-testid=results] thead th').allTextContents();
    expect(head).toEqual(['count', 'count (1h before)', 'count change %']);
    const change = Math.round(((now - then) / then) * 1000) / 10;
    expect(await tableCells(page)).toEqual([[String(now), String(then), String(change)]]);
    await page.screenshot({ path: join(SHOTS, 'explore-compare-to.png'), fullPage: true });
    await chart.screenshot({ path: join(SHOTS, 'docs-compare-to.png') });
  });

  it('draws a heatmap of duration_ms whose cells add up to the events in the range', async () => {
    await events24h(page, node.url);
    await page.getByLabel('Heatmap').selectOption('duration_ms');
    await runBuilder(page);
    const n = await countInRunWindow(page, node, 0, ' AND duration_ms IS NOT NULL');
    const heat = page.locator('[data-view=heatmap]');
    expect(Number(await heat.getAttribute('data-total'))).toBe(n);
    expect(Number(await heat.getAttribute('data-cells'))).toBeGreaterThan(10);
    // Hovering a cell says its time, value range and count.
    const box = (await heat.locator('canvas').boundingBox())!;
    const tip = page.locator('[data-testid=heatmap-tip]');
    for (let y = box.y + box.height - 30; y > box.y && !(await tip.textContent()); y -= 8) {
      await page.mouse.move(box.x + box.width / 2, y);
    }
    expect(await tip.textContent()).toMatch(/Z \+ \d+ s · duration_ms .+ – .+ · \d[\d.kM]* events?/);
    expect(page.url()).toContain('heatmap=duration_ms');
    await page.screenshot({ path: join(SHOTS, 'explore-heatmap.png'), fullPage: true });
    await heat.screenshot({ path: join(SHOTS, 'docs-heatmap.png') });
  });

  it('stacks the counts by region with a total line equal to the events in the range', async () => {
    await page.goto(node.url);
    await buildCountByRegion(page);
    await page.getByLabel('Chart').selectOption('stacked');
    await page.locator('[data-testid=chart-total]').check();
    await runBuilder(page);
    const n = await countInRunWindow(page, node);
    const regions = (await node.sql('SELECT DISTINCT region FROM events')).rows.length;
    const chart = page.locator('[data-testid=chart]');
    expect(await chart.getAttribute('data-style')).toBe('stacked');
    expect(await chart.getAttribute('data-series')).toBe(String(regions + 1));
    const sums = JSON.parse((await chart.getAttribute('data-sums'))!);
    expect(sums.total).toBe(n);
    expect(Object.entries(sums).filter(([k]) => k !== 'total').reduce((a, [, v]) => a + Number(v), 0)).toBe(n);
    expect(await legend(page)).toContain('total');
    await page.screenshot({ path: join(SHOTS, 'explore-stacked-total.png'), fullPage: true });
    await chart.screenshot({ path: join(SHOTS, 'docs-stacked-total.png') });
    await page.getByLabel('Chart').selectOption('bars');
    await runBuilder(page);
    expect(await chart.getAttribute('data-style')).toBe('bars');
    expect(page.url()).toContain('chart=bars');
    expect(page.url()).toContain('total=1');
  });

  it('says "1 row", labels the y axis, has an icon, and focuses the filter on /', async () => {
    const fresh = await b.newPage({ viewport: { width: 1400, height: 1000 } });
    const missing: string[] = [];
    fresh.on('response', (r) => r.status() === 404 && missing.push(r.url()));
    await fresh.goto(`${node.url}/?view=explore&table=events&range=24h`);
    await fresh.locator('[data-testid=done]').waitFor();
    expect(await fresh.locator('[data-testid=done]').textContent()).toMatch(/^1 row · /);
    expect(JSON.parse((await fresh.locator('[data-testid=chart]').getAttribute('data-axis-labels'))!)).toEqual(['count']);
    const icon = await fetch(`${node.url}/favicon.ico`);
    expect(icon.status).toBe(200);
    expect(missing).toEqual([]);
    await fresh.locator('body').click({ position: { x: 5, y: 5 } });
    await fresh.keyboard.press('/');
    expect(await fresh.evaluate(() => document.activeElement?.closest('[data-testid=filter]') !== null)).toBe(true);
    await fresh.close();
  });

  it('weights counts by the sample rate of sampled events', async () => {
    const now = Date.now();
    const rates = [1, 10, 100, null, 5];
    const body = rates.map((r, i) => JSON.stringify({ time: new Date(now - (i + 1) * 60_000).toISOString(), ms: i, ...(r === null ? {} : { samplerate: r }) })).join('\n');
    await node.ingest('sampled', body);
    await page.goto(node.url);
    await page.locator('[data-testid=table]').selectOption('sampled');
    await page.locator('[data-testid=range]').selectOption('1h');
    await page.locator('[data-testid=sampled]').waitFor();
    await runBuilder(page);
    expect(await tableCells(page)).toEqual([['117']]);
  });

  it('lists tables with their columns', async () => {
    await page.locator('[data-testid=nav-tables]').click();
    const card = page.locator('[data-testid=table-card]').first();
    await card.waitFor();
    expect(await card.textContent()).toContain('duration_ms');
    const [[rows]] = (await node.sql('SELECT count(*) FROM events')).rows;
    expect(await card.textContent()).toContain(`${formatNumber(Number(rows))} rows`);
  });
});

describe('a brand-new node', () => {
  it('explains how to send a first event, with its own address', async () => {
    const node = await startNode('e2e-empty');
    const b = await browser();
    try {
      const page = await open(b, node.url);
      const hint = page.locator('[data-testid=first-event]');
      await hint.waitFor();
      expect(await hint.textContent()).toContain(`curl -s ${node.url}/v1/tables/events/events`);
      await page.screenshot({ path: join(SHOTS, 'first-event.png') });
    } finally {
      await b.close();
      await node.kill();
    }
  });
});

const ENDPOINTS = ['/home', '/search', '/cart', '/login', '/checkout', '/profile'];
const REGIONS = ['us-east-1', 'us-west-2', 'eu-west-1', 'eu-central-1', 'ap-south-1'];

/**
 * Web requests of the last 50 minutes where one endpoint (/checkout) is
 * slow and errors (503) come from one region (ap-south-1) only; endpoint,
 * region and errors are otherwise independent.
 */
function webEvents(n = 600): string {
  const now = Date.now();
  return Array.from({ length: n }, (_, i) => {
    const endpoint = ENDPOINTS[i % 6];
    const region = REGIONS[Math.floor(i / 6) % 5];
    const slow = endpoint === '/checkout';
    const failed = region === 'ap-south-1' && Math.floor(i / 30) % 2 === 0;
    return JSON.stringify({
      time: new Date(now - 60_000 - Math.floor((i * 49 * 60_000) / n)).toISOString(),
      endpoint,
      region,
      status: failed ? 503 : 200,
      duration_ms: slow ? 900 + (i % 7) * 80 : 5 + ((i * 13) % 45),
    });
  }).join('\n');
}

/** The "what is different" columns in their order, with their first value's shares. */
async function differences(page: Page): Promise<{ column: string; value: string; inside: number; outside: number }[]> {
  return page.locator('[data-testid=bubble-column]').evaluateAll((cards) =>
    cards.map((c) => {
      const v = c.querySelector('[data-testid=bubble-value]') as HTMLElement;
      return { column: (c as HTMLElement).dataset.column!, value: v.dataset.value!, inside: Number(v.dataset.inside), outside: Number(v.dataset.outside) };
    }),
  );
}

const TRACE = '5b8efff798038103d269b633813fc60c';

/** A checkout trace: the frontend's spans over OTLP/JSON, the database's as native events with the trace columns. */
async function sendTrace(otlpNode: Node, nativeNode: Node) {
  const t0 = BigInt(Date.now() - 120_000) * 1_000_000n;
  const at = (ms: number) => String(t0 + BigInt(ms * 1_000_000));
  const span = (id: string, parent: string, name: string, from: number, to: number, extra: object = {}) => ({
    traceId: TRACE,
    spanId: id,
    parentSpanId: parent,
    name,
    kind: 2,
    startTimeUnixNano: at(from),
    endTimeUnixNano: at(to),
    attributes: [{ key: 'http.route', value: { stringValue: '/checkout' } }],
    ...extra,
  });
  const body = {
    resourceSpans: [
      {
        resource: { attributes: [{ key: 'service.name', value: { stringValue: 'frontend' } }] },
        scopeSpans: [
          {
            spans: [
              span('00000000000000a1', '', 'GET /checkout', 0, 120),
              span('00000000000000a2', '00000000000000a1', 'charge card', 10, 70, { status: { code: 2, message: 'card declined' } }),
              span('00000000000000a3', '00000000000000a1', 'render', 80, 110),
            ],
          },
        ],
      },
    ],
  };
  const res = await fetch(`${otlpNode.url}/v1/traces`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  expect(res.status).toBe(200);
  const db = (id: string, parent: string, name: string, from: number, ms: number) =>
    JSON.stringify({ time: new Date(Number((t0 + BigInt(from * 1_000_000)) / 1_000_000n)).toISOString(), 'trace.trace_id': TRACE, 'trace.span_id': id, 'trace.parent_id': parent, name, service: 'db', duration_ms: ms, 'db.statement': 'SELECT * FROM orders' });
  await nativeNode.ingest('db', [db('00000000000000b1', '00000000000000a2', 'SELECT orders', 20, 25), db('00000000000000b2', '00000000000000a2', 'UPDATE orders', 50, 10)].join('\n'));
}

describe('a 3-node cluster with N=1', () => {
  let nodes: Node[];
  let b: Browser;

  beforeAll(async () => {
    nodes = await startCluster(3, 1);
    await nodes[0].ingest('events', recentEvents(20000, 8));
    await nodes[1].ingest('web', webEvents());
    await sendTrace(nodes[1], nodes[2]);
    b = await browser();
  });
  afterAll(async () => {
    await b?.close();
    await Promise.all((nodes ?? []).map((n) => n.kill()));
  });

  it('compares, stacks, totals, filters groups with HAVING and draws the heatmap across the ring', async () => {
    const having = encodeURIComponent(JSON.stringify(['count', '>', '0']));
    const page = await open(b, `${nodes[1].url}/?view=explore&table=events&range=24h&group=region&having=${having}&compare=1h&heatmap=duration_ms&chart=stacked&total=1`);
    await page.locator('[data-testid=done]').waitFor();
    const n = await countInRunWindow(page, nodes[2]);
    const then = await countInRunWindow(page, nodes[0], 3600_000);
    const sums = JSON.parse((await page.locator('[data-testid=chart]').getAttribute('data-sums'))!);
    expect(sums.total).toBe(n);
    const regions = await nodes[0].sql('SELECT DISTINCT region FROM events');
    const earlier = Object.entries(sums).filter(([k]) => k.endsWith('(1h before)'));
    expect(earlier).toHaveLength(regions.rows.length);
    expect(earlier.reduce((a, [, v]) => a + Number(v), 0)).toBe(then);
    expect(Number(await page.locator('[data-view=heatmap]').getAttribute('data-total'))).toBe(await countInRunWindow(page, nodes[0], 0, ' AND duration_ms IS NOT NULL'));
    expect(await page.locator('[data-testid=results] tbody tr').count()).toBe(regions.rows.length);
    await page.close();
  });

  it('finds what is different about a box dragged on the heatmap: the slow endpoint first', async () => {
    const page = await open(b, `${nodes[0].url}/?view=explore&table=web&range=1h&heatmap=duration_ms`);
    await page.locator('[data-testid=done]').waitFor();
    const queries: string[] = [];
    page.on('request', (r) => r.url().endsWith('/v1/query') && queries.push(r.postData() ?? ''));
    // The heatmap's rows are the value steps present: five fast ones, two slow ones on top.
    const canvas = page.locator('[data-view=heatmap] canvas');
    const box = (await canvas.boundingBox())!;
    const rowHeight = (box.height - 24) / 7;
    await page.mouse.move(box.x + 92, box.y + 3);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width / 2, box.y + rowHeight * 1.5, { steps: 4 });
    await page.mouse.move(box.x + box.width - 2, box.y + rowHeight * 1.5, { steps: 4 });
    await page.mouse.up();
    await page.locator('[data-testid=done]').waitFor();
    const bubble = page.locator('[data-view=bubbleup]');
    await bubble.waitFor();
    expect(page.url()).toContain('sel=');
    const [[slow]] = (await nodes[2].sql(`SELECT count(*) FROM web WHERE endpoint = '/checkout'`)).rows;
    expect(Number(await bubble.getAttribute('data-inside'))).toBe(Number(slow));
    const [first, ...rest] = await differences(page);
    expect(first).toEqual({ column: 'endpoint', value: '/checkout', inside: 1, outside: 0 });
    expect(Number(await page.locator('[data-testid=bubble-column]').first().getAttribute('data-score'))).toBe(1);
    expect(rest.map((c) => c.column).sort()).toEqual(['region', 'status']);
    // A bounded number of queries, whatever the number of columns: the run's four, and two for the comparison.
    expect(queries.length).toBe(6);
    await page.screenshot({ path: join(SHOTS, 'explore-what-is-different.png'), fullPage: true });
    await page.locator('[data-view=heatmap]').screenshot({ path: join(SHOTS, 'docs-heatmap-box.png') });
    await bubble.screenshot({ path: join(SHOTS, 'docs-what-is-different.png') });
    await page.close();
  });

  it('finds what is different about status >= 500: the failing region first', async () => {
    const page = await open(b, `${nodes[1].url}/?view=explore&table=web&range=1h`);
    await page.locator('[data-testid=done]').waitFor();
    await page.locator('[data-testid=add-selection]').click();
    await page.locator('[data-testid=selection] select[aria-label="filter column"]').selectOption('status');
    await page.locator('[data-testid=selection] select[aria-label="filter operator"]').selectOption('>=');
    await page.locator('[data-testid=selection] input').fill('500');
    await runBuilder(page);
    const bubble = page.locator('[data-view=bubbleup]');
    await bubble.waitFor();
    const [[failed, others]] = (await nodes[0].sql(`SELECT sum(CASE WHEN status >= 500 THEN 1 ELSE 0 END), sum(CASE WHEN status >= 500 THEN 0 ELSE 1 END) FROM web`)).rows;
    expect(Number(await bubble.getAttribute('data-inside'))).toBe(Number(failed));
    expect(Number(await bubble.getAttribute('data-outside'))).toBe(Number(others));
    const [first] = await differences(page);
    expect(first.column).toBe('region');
    expect(first.value).toBe('ap-south-1');
    expect(first.inside).toBe(1);
    const [[rest]] = (await nodes[0].sql(`SELECT count(*) FROM web WHERE region = 'ap-south-1' AND status < 500`)).rows;
    expect(first.outside).toBeCloseTo(Number(rest) / Number(others), 9);
    await page.close();
  });

  it('opens a trace from a sample as a waterfall gathered from two tables', async () => {
    const page = await open(b, `${nodes[0].url}/?view=explore&table=frontend&range=1h`);
    await page.locator('[data-testid=done]').waitFor();
    await page.locator('[data-testid=samples-table] [data-testid=trace-link]').first().click();
    const trace = page.locator('[data-view=trace]');
    await trace.waitFor();
    expect(page.url()).toContain(`trace=${TRACE}`);
    const spans = await page.locator('[data-testid=span]').evaluateAll((rows) =>
      rows.map((r) => {
        const d = (r as HTMLElement).dataset;
        return [d.spanId, d.depth, d.service, d.error];
      }),
    );
    expect(spans).toEqual([
      ['00000000000000a1', '0', 'frontend', 'false'],
      ['00000000000000a2', '1', 'frontend', 'true'],
      ['00000000000000b1', '2', 'db', 'false'],
      ['00000000000000b2', '2', 'db', 'false'],
      ['00000000000000a3', '1', 'frontend', 'false'],
    ]);
    expect(await trace.locator('.heat-title').textContent()).toContain('5 spans · 120 ms · 2 services');
    expect(await page.locator('[data-testid=span][data-span-id="00000000000000b1"] .span-ms').textContent()).toBe('25 ms');
    // A click shows the span's row: here the database's own attribute.
    await page.locator('[data-testid=span][data-span-id="00000000000000b1"]').click();
    const attrs = page.locator('[data-testid=span-attributes-table]');
    await attrs.waitFor();
    expect(await attrs.textContent()).toContain('SELECT * FROM orders');
    await page.locator('[data-testid=span][data-span-id="00000000000000a2"]').click();
    await expect.poll(() => attrs.textContent()).toContain('card declined');
    await page.screenshot({ path: join(SHOTS, 'trace-waterfall.png'), fullPage: true });
    await page.locator('.trace-view').screenshot({ path: join(SHOTS, 'docs-trace.png') });
    await page.close();
  });

  it('warns that results are partial and shows the down node', async () => {
    await nodes[2].kill();
    await waitFor('n0 to see n2 down', async () => (await nodes[0].cluster()).nodes.find((n) => n.name === 'n2')?.status === 'down');
    const page = await open(b, nodes[0].url);
    await buildCountByRegion(page);
    const warning = page.locator('[data-testid=partial-warning]');
    await warning.waitFor();
    expect(await warning.textContent()).toMatch(/Partial results: \d+ partitions had no reachable replica, coverage \d+\.\d%/);
    await page.screenshot({ path: join(SHOTS, 'explore-partial.png'), fullPage: true });

    await page.locator('[data-testid=nav-cluster]').click();
    const down = page.locator('[data-testid=nodes] tr[data-node=n2]');
    await down.waitFor();
    expect(await down.getAttribute('data-status')).toBe('down');
    expect(await page.locator('[data-testid=nodes] tr[data-status=up]').count()).toBe(2);
    expect(await page.locator('[data-testid=ring] path.arc.down').count()).toBeGreaterThan(0);
    expect(await page.locator('[data-testid=cluster-summary]').textContent()).toContain('3 nodes, 1 down');
    await page.screenshot({ path: join(SHOTS, 'cluster-node-down.png'), fullPage: true });
  });
});

const HOURLY = `SELECT date_bin(INTERVAL '1 hour', "time", TIMESTAMP '1970-01-01T00:00:00Z') AS "hour", count(*) AS n FROM events GROUP BY 1 ORDER BY 1`;

/** Saves the page's current view under `name` with the Save control. */
async function saveAs(page: Page, name: string) {
  await page.getByRole('button', { name: 'Save', exact: true }).click();
  await page.locator('[data-testid=save-name]').fill(name);
  await page.locator('[data-testid=save-confirm]').click();
  await expect.poll(() => page.locator('[data-testid=save-status]').textContent()).toContain(`Saved as ${name}`);
}

describe('saved views and boards on a 3-node cluster with data dirs', () => {
  let nodes: Node[];
  let b: Browser;
  let dirs: string;

  beforeAll(async () => {
    dirs = mkdtempSync(join(tmpdir(), 'atoll-e2e-saved-'));
    nodes = await startCluster(3, 1, (i) => ['--data-dir', join(dirs, `n${i}`)]);
    await nodes[0].ingest('events', recentEvents(5000, 9));
    b = await browser();
  });
  afterAll(async () => {
    await b?.close();
    await Promise.all((nodes ?? []).map((n) => n.kill()));
    if (dirs) rmSync(dirs, { recursive: true, force: true });
  });

  it('saves views on one node, makes a board on another, and reopens both from a third after its restart', async () => {
    const page = await open(b, nodes[0].url);
    await buildCountByRegion(page);
    await saveAs(page, 'regions, last day');
    await page.locator('[data-testid=nav-sql]').click();
    await setEditor(page, HOURLY);
    await saveAs(page, 'hourly events');
    await page.close();

    const other = await open(b, `${nodes[1].url}/?view=saved`);
    await waitFor('both views listed on n1', async () => {
      await other.reload();
      await other.locator('[data-testid=new-board]').waitFor();
      return (await other.locator('[data-testid=saved-views] li').count()) === 2;
    });
    await other.locator('[data-testid=board-name]').fill('overview');
    await other.locator('input[data-view-name="regions, last day"]').check();
    await other.locator('input[data-view-name="hourly events"]').check();
    await other.locator('[data-testid=make-board]').click();
    await other.locator('[data-testid=saved-boards] li[data-name=overview]').waitFor();
    await other.close();

    // n2 hears of the board, then restarts from its data dir.
    await waitFor('the board on n2', async () => {
      const res = await fetch(`${nodes[2].url}/v1/saved`);
      return ((await res.json()) as { boards: { name: string }[] }).boards.some((x) => x.name === 'overview');
    });
    nodes[2] = await nodes[2].restart();

    const view = await open(b, `${nodes[2].url}/?saved=${encodeURIComponent('regions, last day')}`);
    await view.locator('[data-testid=done]').waitFor();
    expect(await view.locator('[data-testid=range]').inputValue()).toBe('24h');
    expect(await view.locator('[data-testid=group] select').inputValue()).toBe('region');
    const regions = await nodes[0].sql('SELECT DISTINCT region FROM events');
    expect((await legend(view)).sort()).toEqual(regions.rows.map((r) => String(r[0])).sort());
    await view.close();

    const board = await open(b, `${nodes[2].url}/?view=board&board=overview`);
    const cells = board.locator('[data-testid=board-cell]');
    await expect.poll(() => cells.count()).toBe(2);
    await expect.poll(() => board.locator('[data-testid=board-cell][data-done=true]').count()).toBe(2);
    const byRegion = board.locator('[data-testid=board-cell][data-view-name="regions, last day"] [data-testid=chart]');
    expect(await byRegion.getAttribute('data-series')).toBe(String(regions.rows.length));
    const hourly = board.locator('[data-testid=board-cell][data-view-name="hourly events"] [data-testid=chart]');
    const [[total]] = (await nodes[0].sql('SELECT count(*) FROM events')).rows;
    expect(JSON.parse((await hourly.getAttribute('data-sums'))!)).toEqual({ n: Number(total) });
    await board.screenshot({ path: join(SHOTS, 'board.png'), fullPage: true });
    await board.locator('[data-view=board]').screenshot({ path: join(SHOTS, 'docs-board.png') });
    await board.close();

    // A name that is not saved says so.
    const missing = await open(b, `${nodes[1].url}/?saved=nope`);
    expect(await missing.locator('[data-testid=saved-missing]').textContent()).toBe('No saved view named "nope".');
    await missing.close();
  });
});

describe('live mode on a 3-node cluster with N=1 and API keys', () => {
  const KEY = 'e2e-live-admin-key-0123456789';
  let nodes: Node[];
  let b: Browser;

  /** Events of now through n1, each with its own id (so they spread over the partitions) and a marker. */
  async function send(marker: string, n: number) {
    const now = Date.now();
    const body = Array.from({ length: n }, (_, i) => JSON.stringify({ time: new Date(now - i).toISOString(), id: `${marker}-${i}`, marker, duration_ms: i })).join('\n');
    expect(await nodes[1].ingest('live', body)).toBe(n);
  }

  async function chartCount(page: Page): Promise<number> {
    const sums = JSON.parse((await page.locator('[data-testid=chart]').getAttribute('data-sums')) ?? '{}');
    return Number(sums.count ?? 0);
  }

  async function markers(page: Page): Promise<string[]> {
    const head = await page.locator('[data-testid=samples-table] thead th').allTextContents();
    const at = head.findIndex((h) => h.startsWith('marker'));
    return (await tableCells(page, 'samples-table')).map((r) => r[at]);
  }

  beforeAll(async () => {
    nodes = await startCluster(3, 1, () => ['--admin-key', KEY]);
    await send('seed', 20);
    b = await browser();
  });
  afterAll(async () => {
    await b?.close();
    await Promise.all((nodes ?? []).map((n) => n.kill()));
  });

  it('follows events sent to another node into the chart and the samples, and stops on every owner when the page closes', async () => {
    const page = await b.newPage({ viewport: { width: 1400, height: 1000 } });
    await page.addInitScript((key) => sessionStorage.setItem('atoll-api-key', key), KEY);
    await page.goto(`${nodes[0].url}/?view=explore&table=live&range=15m&live=1`);
    await page.locator('[data-testid=done]').waitFor();
    const status = page.locator('[data-testid=live-status]');
    await expect.poll(() => status.getAttribute('data-state'), { timeout: 15_000 }).toBe('on');
    // Every owner follows the view (N=1: each holds a third of the partitions).
    for (const n of nodes) await waitFor(`${n.name} to follow`, async () => (await n.metric('atoll_live_subscriptions')) === 1);
    const before = await chartCount(page);
    expect(before).toBe(20);

    await send('wave-1', 30);
    await expect.poll(() => chartCount(page), { timeout: 15_000 }).toBe(before + 30);
    await expect.poll(async () => (await markers(page)).filter((m) => m === 'wave-1').length, { timeout: 15_000 }).toBe(30);
    await page.screenshot({ path: join(SHOTS, 'explore-live.png'), fullPage: true });

    // A filter that excludes what is sent shows none of it.
    await page.getByRole('button', { name: '+ filter' }).click();
    await page.locator('[data-testid=filter] select[aria-label="filter column"]').selectOption('marker');
    await page.locator('[data-testid=filter] input').fill('wave-3');
    await runBuilder(page);
    await expect.poll(() => status.getAttribute('data-state'), { timeout: 15_000 }).toBe('on');
    for (const n of nodes) await waitFor(`${n.name} to follow the filtered view only`, async () => (await n.metric('atoll_live_subscriptions')) === 1);
    await send('wave-2', 20);
    await send('wave-3', 1);
    await expect.poll(async () => (await markers(page)).filter((m) => m === 'wave-3').length, { timeout: 15_000 }).toBe(1);
    expect((await markers(page)).filter((m) => m !== 'wave-3')).toEqual([]);
    expect(await chartCount(page)).toBe(1);

    await page.close();
    for (const n of nodes) await waitFor(`${n.name} to stop following`, async () => (await n.metric('atoll_live_subscriptions')) === 0);
    expect(await nodes[0].metric('atoll_live_views')).toBe(0);
  });
});

describe('a node that requires API keys', () => {
  const ADMIN = 'e2e-admin-key-0123456789';
  let node: Node;
  let b: Browser;

  beforeAll(async () => {
    node = await startNode('keyed', ['--admin-key', ADMIN]);
    await node.ingest('events', recentEvents(500));
    b = await browser();
  });
  afterAll(async () => {
    await b?.close();
    await node?.kill();
  });

  it('asks for a key, says when one is refused, and keeps it for the tab', async () => {
    const page = await open(b, node.url);
    const dialog = page.locator('dialog.key-prompt');
    await dialog.waitFor();
    expect(await dialog.locator('.why').textContent()).toContain('API key');
    await dialog.locator('input').fill('atoll_0000000000000000_wrong');
    await dialog.getByRole('button', { name: 'Use key' }).click();
    await waitFor('the refusal', async () => ((await dialog.locator('.why').textContent()) ?? '').includes('refused'));
    await dialog.locator('input').fill(ADMIN);
    await dialog.getByRole('button', { name: 'Use key' }).click();
    await waitFor('the tables to load', async () => (await page.locator('[data-testid=table] option[value=events]').count()) === 1);
    expect(await dialog.count()).toBe(0);
    await page.reload();
    await waitFor('the tables to load again', async () => (await page.locator('[data-testid=table] option[value=events]').count()) === 1);
    expect(await page.locator('dialog.key-prompt').count()).toBe(0);
    await page.screenshot({ path: join(SHOTS, 'key-prompt.png') });
  });
});
