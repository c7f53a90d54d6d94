// A small markdown renderer for reports, building DOM nodes (never HTML
// strings): whatever a model wrote stays text. It knows what baton's reports
// use: headings, paragraphs, lists, block quotes, fenced code, pipe tables,
// `code`, **bold**, *emphasis* and [links](http...). Anything else is shown as
// the text it is.

import { h } from './dom.js';

const INLINE = /(`[^`]+`)|(\*\*[^*]+\*\*)|(\*[^*\s][^*]*\*)|(\[[^\]]+\]\((?:https?:\/\/|#|\/)[^)\s]*\))/;

/** Inline markdown of one line as nodes. */
export function inline(text) {
  const out = [];
  let rest = text;
  while (rest) {
    const m = INLINE.exec(rest);
    if (!m) {
      out.push(rest);
      break;
    }
    if (m.index) out.push(rest.slice(0, m.index));
    const token = m[0];
    if (m[1]) out.push(h('code', { text: token.slice(1, -1) }));
    else if (m[2]) out.push(h('strong', {}, inline(token.slice(2, -2))));
    else if (m[3]) out.push(h('em', {}, inline(token.slice(1, -1))));
    else {
      const close = token.indexOf('](');
      out.push(h('a', { href: token.slice(close + 2, -1), rel: 'noopener noreferrer' }, token.slice(1, close)));
    }
    rest = rest.slice(m.index + token.length);
  }
  return out;
}

function cells(line) {
  let row = line.trim();
  if (row.startsWith('|')) row = row.slice(1);
  if (row.endsWith('|')) row = row.slice(0, -1);
  return row.split('|').map((c) => c.trim());
}

const isRule = (line) => /^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$/.test(line);

/** A markdown document as a DocumentFragment. */
export function render(markdown) {
  const frag = document.createDocumentFragment();
  const lines = (markdown || '').replace(/\r\n?/g, '\n').split('\n');
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i += 1;
      continue;
    }
    const fence = /^\s*(```|~~~)/.exec(line);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i += 1;
      frag.append(h('pre', { class: 'code' }, h('code', { text: body.join('\n') })));
      continue;
    }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    if (heading) {
      const level = Math.min(6, heading[1].length + 1); // the page has the h1
      frag.append(h(`h${level}`, {}, inline(heading[2])));
      i += 1;
      continue;
    }
    if (line.trim().startsWith('|') && i + 1 < lines.length && isRule(lines[i + 1])) {
      const head = cells(line);
      i += 2;
      const rows = [];
      while (i < lines.length && lines[i].trim().startsWith('|')) rows.push(cells(lines[i++]));
      frag.append(h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, head.map((c) => h('th', { scope: 'col' }, inline(c))))),
        h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c) => h('td', {}, inline(c)))))))));
      continue;
    }
    if (/^\s*>/.test(line)) {
      const quote = [];
      while (i < lines.length && /^\s*>/.test(lines[i])) quote.push(lines[i++].replace(/^\s*>\s?/, ''));
      frag.append(h('blockquote', {}, render(quote.join('\n'))));
      continue;
    }
    const bullet = /^\s*([-*+]|\d+[.)])\s+/;
    if (bullet.test(line)) {
      const ordered = /^\s*\d/.test(line);
      const items = [];
      while (i < lines.length && (bullet.test(lines[i]) || (/^\s{2,}\S/.test(lines[i]) && items.length))) {
        if (bullet.test(lines[i])) items.push(lines[i].replace(bullet, ''));
        else items[items.length - 1] += ` ${lines[i].trim()}`;
        i += 1;
      }
      frag.append(h(ordered ? 'ol' : 'ul', {}, items.map((t) => h('li', {}, inline(t)))));
      continue;
    }
    const para = [];
    while (i < lines.length && lines[i].trim() && !/^(#{1,6}\s|\s*```|\s*~~~|\s*>|\s*([-*+]|\d+[.)])\s)/.test(lines[i])
      && !(lines[i].trim().startsWith('|') && i + 1 < lines.length && isRule(lines[i + 1]))) {
      para.push(lines[i++]);
    }
    if (!para.length) para.push(lines[i++]);
    frag.append(h('p', {}, inline(para.join(' '))));
  }
  return frag;
}
