// "Save": keeps the current view (its whole state, as the URL holds it)
// under a name, cluster-wide; `?saved=NAME` opens it on any node.

import * as api from '../api';
import { type App } from '../app';
import { h } from '../dom';
import { encode } from '../url';

/** The name the view was last saved under or opened from, offered again. */
let lastName = '';

export function rememberSavedName(name: string) {
  lastName = name;
}

/** `?saved=NAME`: the address of a saved view. */
export function savedHref(name: string): string {
  return `?${new URLSearchParams({ saved: name })}`;
}

/** The Save button and its name form; `sync` first brings unsaved edits into the state. */
export function saveControl(app: App, sync?: () => unknown): HTMLElement {
  const said = h('span', { class: 'muted', 'data-testid': 'save-status' });
  const name = h('input', { value: lastName, placeholder: 'name of the view', 'aria-label': 'saved view name', 'data-testid': 'save-name', onkeydown: (e: KeyboardEvent) => e.key === 'Enter' && confirm() });
  const form = h('div', { class: 'row save-form', hidden: true }, name, h('button', { class: 'primary', 'data-testid': 'save-confirm', onclick: () => confirm() }, 'Save view'));
  const confirm = async () => {
    const n = name.value.trim();
    if (!n) return void (said.textContent = 'Give the view a name.');
    said.textContent = 'Saving…';
    sync?.();
    try {
      const v = await api.save('views', n, { state: encode(app.state) });
      lastName = v.name;
      form.hidden = true;
      said.replaceChildren('Saved as ', h('a', { href: savedHref(v.name), 'data-testid': 'saved-link' }, v.name), ' on every node.');
    } catch (e) {
      said.textContent = (e as Error).message;
    }
  };
  const open = () => {
    form.hidden = !form.hidden;
    if (!form.hidden) name.focus();
  };
  return h('div', { class: 'save' }, h('button', { 'data-testid': 'save', onclick: open }, 'Save'), form, said);
}
