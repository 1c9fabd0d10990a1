// The cluster's saved views and boards: open, delete, and make a board of
// views.

import * as api from '../api';
import { type App } from '../app';
import { h } from '../dom';
import { savedHref } from './save';

/** Why a `?saved=NAME` did not open, said the next time this view shows. */
let missing = '';

export function missingSaved(why: string) {
  missing = why;
}

/** `?view=board&board=NAME`: the address of a board. */
export function boardHref(name: string): string {
  return `?${new URLSearchParams({ view: 'board', board: name })}`;
}

function remove(kind: api.SavedKind, name: string, again: () => void) {
  return h(
    'button',
    {
      class: 'icon',
      title: `delete ${name}`,
      'aria-label': `delete ${name}`,
      onclick: async () => {
        await api.unsave(kind, name).catch((e) => alert((e as Error).message));
        again();
      },
    },
    '×',
  );
}

function viewList(saved: api.Saved, again: () => void): HTMLElement {
  if (saved.views.length === 0) return h('p', { class: 'muted' }, 'No saved views yet: build one in Explore or SQL and press Save.');
  return h(
    'ul',
    { class: 'saved-list', 'data-testid': 'saved-views' },
    ...saved.views.map((v) =>
      h('li', { 'data-name': v.name }, h('a', { href: savedHref(v.name) }, v.name), h('span', { class: 'muted' }, ` saved ${v.updated.slice(0, 19).replace('T', ' ')} on ${v.by} `), remove('views', v.name, again)),
    ),
  );
}

function boardList(saved: api.Saved, again: () => void): HTMLElement {
  if (saved.boards.length === 0) return h('p', { class: 'muted' }, 'No boards yet.');
  return h(
    'ul',
    { class: 'saved-list', 'data-testid': 'saved-boards' },
    ...saved.boards.map((b) => h('li', { 'data-name': b.name }, h('a', { href: boardHref(b.name) }, b.name), h('span', { class: 'muted' }, ` ${b.views.length} views `), remove('boards', b.name, again))),
  );
}

/** A board's name and the views it shows, ticked in the order wanted. */
function newBoard(saved: api.Saved, again: () => void): HTMLElement {
  const name = h('input', { placeholder: 'name of the board', 'aria-label': 'board name', 'data-testid': 'board-name' });
  const said = h('span', { class: 'error' });
  const boxes = saved.views.map((v) => ({ name: v.name, box: h('input', { type: 'checkbox', 'data-view-name': v.name }) }));
  const make = async () => {
    try {
      await api.save('boards', name.value.trim(), { views: boxes.filter((b) => b.box.checked).map((b) => b.name) });
      again();
    } catch (e) {
      said.textContent = (e as Error).message;
    }
  };
  return h(
    'fieldset',
    { class: 'new-board', 'data-testid': 'new-board' },
    h('legend', {}, 'New board'),
    name,
    ...boxes.map((b) => h('label', { class: 'check' }, b.box, ` ${b.name}`)),
    h('button', { class: 'primary', 'data-testid': 'make-board', onclick: make }, 'Save board'),
    said,
  );
}

export function savedView(_app: App): HTMLElement {
  const el = h('div', { class: 'saved-view' }, h('p', { class: 'muted' }, 'Loading…'));
  const said = missing;
  missing = '';
  const draw = () =>
    api
      .saved()
      .then((saved) =>
        el.replaceChildren(
          said ? h('p', { class: 'error', 'data-testid': 'saved-missing' }, said) : '',
          h('h3', {}, 'Saved views'),
          viewList(saved, draw),
          h('h3', {}, 'Boards'),
          boardList(saved, draw),
          saved.views.length ? newBoard(saved, draw) : '',
          h('p', { class: 'muted' }, 'Saved views and boards are the cluster\'s: every node lists them, and they stay with --data-dir.'),
        ),
      )
      .catch((e) => el.replaceChildren(h('div', { class: 'error' }, (e as Error).message)));
  void draw();
  return el;
}
