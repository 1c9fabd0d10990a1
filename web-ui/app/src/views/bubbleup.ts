// "What is different": the compared columns, most different first, each
// with its top values as bar pairs (share of the selection, share of the
// rest) and its score.

import { type BubbleColumn, MAX_COLUMNS, type Plan, TOP_VALUES } from '../bubble';
import { h } from '../dom';
import { formatNumber, plural } from '../format';
import { stepLabel } from './heatmap';

function percent(x: number): string {
  return `${(x * 100).toFixed(x > 0 && x < 0.01 ? 1 : 0)}%`;
}

function valueLabel(c: BubbleColumn, value: string | null): string {
  if (value === null) return '(none)';
  return c.binned ? stepLabel(Number(value), c.column) : value;
}

function bar(side: 'inside' | 'outside', share: number): HTMLElement {
  return h('div', { class: `bubble-bar ${side}` }, h('span', { style: `width: ${Math.max(share * 100, share > 0 ? 0.5 : 0)}%` }), h('em', {}, percent(share)));
}

function columnCard(c: BubbleColumn): HTMLElement {
  return h(
    'div',
    { class: 'bubble-column', 'data-testid': 'bubble-column', 'data-column': c.column, 'data-score': c.score.toFixed(4) },
    h('h4', {}, c.column, h('span', { class: 'muted' }, ` score ${c.score.toFixed(2)}`)),
    ...c.values.map((v) =>
      h(
        'div',
        { class: 'bubble-value', 'data-testid': 'bubble-value', 'data-value': v.value ?? '', 'data-inside': String(v.inside), 'data-outside': String(v.outside) },
        h('span', { class: 'bubble-label', title: valueLabel(c, v.value) }, valueLabel(c, v.value)),
        bar('inside', v.inside),
        bar('outside', v.outside),
      ),
    ),
  );
}

export function bubbleUp(plan: Plan, columns: BubbleColumn[], selection: string): HTMLElement {
  const el = h('div', { class: 'chart bubbleup', 'data-view': 'bubbleup', 'data-inside': String(plan.inside), 'data-outside': String(plan.outside) });
  const head = h(
    'div',
    { class: 'heat-title' },
    `What is different: ${plural(plan.inside, 'event')} where ${selection} `,
    h('span', { class: 'bubble-key inside' }, 'selection'),
    ` against the other ${formatNumber(plan.outside)} `,
    h('span', { class: 'bubble-key outside' }, 'rest'),
    `. Columns ranked by score: half the sum of |share in the selection − share in the rest| over the top ${TOP_VALUES} values and all others (0: alike, 1: nothing in common).`,
  );
  if (plan.inside === 0 || plan.outside === 0) {
    el.replaceChildren(head, h('p', { class: 'muted' }, plan.inside === 0 ? 'The selection holds no events in this time range.' : 'Every event of the time range is in the selection: there is nothing to compare it with.'));
    return el;
  }
  const many = plan.skipped.filter((s) => s.distinct !== undefined);
  const beyond = plan.skipped.filter((s) => s.distinct === undefined);
  const skipped = h(
    'div',
    { 'data-testid': 'bubble-skipped' },
    many.length ? h('p', { class: 'muted' }, `Not compared (too many distinct values): ${many.map((s) => `${s.column} (~${formatNumber(s.distinct!)})`).join(', ')}.`) : '',
    beyond.length ? h('p', { class: 'muted' }, `Not compared (beyond the first ${MAX_COLUMNS} columns): ${beyond.map((s) => s.column).join(', ')}.`) : '',
  );
  el.replaceChildren(head, h('div', { class: 'bubble-grid' }, ...columns.map(columnCard)), skipped);
  return el;
}
