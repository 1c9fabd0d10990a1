// A small element builder: the dashboard renders plain DOM, no framework.

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, unknown>;

/**
 * `h('button', {class: 'primary', onclick: run}, 'Run')`. Keys starting with
 * `on` add listeners; `class`, `value`, `checked`, `selected`, `disabled`
 * set properties; `dataset` sets data attributes; other keys are attributes.
 */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v as EventListener);
    else if (k === 'class') el.className = String(v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value' || k === 'checked' || k === 'selected' || k === 'disabled') (el as unknown as Record<string, unknown>)[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

export function append(el: Element, children: Child[]) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === 'number' ? String(c) : c);
  }
}

/** A `<select>` of options, `selected` chosen. */
export function select(options: { value: string; label: string }[], selected: string, onchange: (v: string) => void, attrs: Attrs = {}): HTMLSelectElement {
  const s = h('select', { ...attrs, onchange: () => onchange(s.value) }, ...options.map((o) => h('option', { value: o.value, selected: o.value === selected }, o.label)));
  s.value = selected;
  return s;
}
