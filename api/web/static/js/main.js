// The console's entry point: the session, the live feed, the router.
//
// Pages are addressed by the URL's fragment (#/runs, #/runs/ID, #/launch,
// #/plan), so the server serves one page at / and reloads keep the page.
// A view is a function mount(main, params) returning its unmount function.

import { get, loadSession, logout, session, setLoginHandler } from './api.js';
import { h, replace, describeError } from './dom.js';
import { feed } from './feed.js';
import { mountHistory } from './history.js';
import { mountLauncher } from './launcher.js';
import { showLogin } from './login.js';
import { mountPlan } from './plan.js';
import { mountRun } from './run.js';
import { perf } from './perf.js';

const ROUTES = [
  [/^#\/runs\/([^/?]+)$/, 'runs', (m) => ({ runId: decodeURIComponent(m[1]) }), mountRun],
  [/^#\/launch$/, 'launch', () => ({}), mountLauncher],
  [/^#\/plan$/, 'plan', () => ({}), mountPlan],
  [/^#\/runs(?:\?(.*))?$/, 'runs', (m) => ({ query: new URLSearchParams(m[1] || '') }), mountHistory],
];

let unmount = null;

function route() {
  const main = document.getElementById('main');
  const hash = location.hash || '#/runs';
  const found = ROUTES.map(([re, nav, params, mount]) => [re.exec(hash), nav, params, mount]).find(([m]) => m);
  if (unmount) {
    try {
      unmount();
    } catch (err) {
      console.error(err);
    }
  }
  unmount = null;
  if (!found) {
    replace(main, h('h1', { tabindex: '-1', text: 'Not found' }), h('p', {}, 'No page here. ', h('a', { href: '#/runs', text: 'See the runs' }), '.'));
    return;
  }
  const [m, nav, params, mount] = found;
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  replace(main);
  unmount = mount(main, params(m)) || null;
}

function showConnection(state) {
  const el = document.getElementById('conn');
  const words = { live: ['●', 'live'], reconnecting: ['◌', 'reconnecting…'], connecting: ['◌', 'connecting'] };
  const [icon, word] = words[state] || ['?', state];
  el.dataset.state = state;
  replace(el, h('span', { 'aria-hidden': 'true', text: icon }), ` ${word}`);
}

function showWho() {
  const el = document.getElementById('who');
  if (session.auth !== 'on' || !session.principal) {
    replace(el);
    return;
  }
  const name = session.principal.name || session.principal.principal || 'signed in';
  replace(el, h('span', { text: `${name}${session.principal.role ? ` (${session.principal.role})` : ''}` }), ' ',
    h('button', { type: 'button', class: 'link', onclick: async () => { await logout(); location.reload(); } }, 'Log out'));
}

async function start() {
  setLoginHandler(async () => {
    await showLogin();
    showWho();
  });
  feed.onState(showConnection);
  window.batonConsole = { feed, perf }; // for the browser tests and bench/web.py
  try {
    await loadSession();
    showWho();
    const health = await get('/api/health');
    feed.open(health.head);
  } catch (err) {
    replace(document.getElementById('main'), h('h1', { tabindex: '-1', text: 'The console could not start' }),
      h('p', { class: 'error', text: describeError(err) }));
    return;
  }
  window.addEventListener('hashchange', route);
  route();
}

start();
