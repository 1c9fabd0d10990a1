// The dialog that asks for an API key when the node requires one.

import { h } from '../dom';

let open: Promise<string | null> | null = null;

/** Shows one dialog at a time (calls made meanwhile wait for the same answer). */
export function keyPrompt(why: string): Promise<string | null> {
  open ??= ask(why).finally(() => {
    open = null;
  });
  return open;
}

function ask(why: string): Promise<string | null> {
  return new Promise((resolve) => {
    const input = h('input', { type: 'password', name: 'key', autocomplete: 'off', placeholder: 'atoll_…', 'aria-label': 'API key' });
    const dialog = h(
      'dialog',
      { class: 'key-prompt' },
      h(
        'form',
        { method: 'dialog' },
        h('h2', {}, 'API key'),
        h('p', { class: 'why' }, why),
        h('p', {}, 'Paste a query or admin key. It is kept in this tab only (session storage).'),
        input,
        h('menu', {}, h('button', { value: 'cancel', type: 'submit' }, 'Cancel'), h('button', { value: 'ok', type: 'submit', class: 'primary' }, 'Use key')),
      ),
    );
    dialog.addEventListener('close', () => {
      const key = dialog.returnValue === 'ok' ? input.value.trim() : '';
      dialog.remove();
      resolve(key || null);
    });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
}
