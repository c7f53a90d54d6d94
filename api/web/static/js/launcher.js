// The launcher: five category tabs (Analysis, Discovery, Planning,
// Authoring, Review) over the catalogue, a flow, a size, the focus (the
// run's question), a fast toggle and a project. Defaults: Analysis, small,
// fast off. Launching opens the run pane.
//
// Later API additions are picked up when the server has them: `fast` when
// the OpenAPI LaunchRequest lists it (until then the toggle says it is not
// available here), the project picker when GET /api/projects answers 200.

import { get, request } from './api.js';
import { h, replace, describeError, randomKey } from './dom.js';
import { perf } from './perf.js';

export const CATEGORIES = ['Analysis', 'Discovery', 'Planning', 'Authoring', 'Review'];
const BANDS = ['small', 'medium', 'large'];

export function mountLauncher(main) {
  let alive = true;
  let flows = [];
  let category = CATEGORIES[0];
  let key = randomKey(); // one Idempotency-Key per launch attempt: a double click launches once
  let fastSupported = false;

  const tablist = h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Flow categories' });
  const panel = h('div', { class: 'tab-panel', role: 'tabpanel', id: 'flows-panel', tabindex: '-1' });
  const sizes = h('div', { class: 'segmented', role: 'radiogroup', 'aria-labelledby': 'size-label' },
    BANDS.map((band) => h('label', { class: 'seg' },
      h('input', { type: 'radio', name: 'band', value: band, checked: band === 'small' }), h('span', { text: band }))));
  const focus = h('textarea', { id: 'focus', name: 'question', rows: '4', required: true,
    placeholder: 'e.g. Why does the nightly build take twice as long since March?' });
  const fast = h('input', { id: 'fast', name: 'fast', type: 'checkbox', role: 'switch' });
  const fastNote = h('span', { class: 'hint', id: 'fast-note' });
  const projectField = h('div', { class: 'field', hidden: true });
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const launch = h('button', { type: 'submit', class: 'primary', id: 'launch' }, 'Launch');
  const form = h('form', { class: 'launcher', 'aria-label': 'Launch a run' },
    h('fieldset', { class: 'flow-pick' }, h('legend', { text: 'Flow' }), tablist, panel),
    h('div', { class: 'field' }, h('label', { for: 'focus', text: 'Focus' }),
      h('span', { class: 'hint', id: 'focus-hint', text: 'What the run should look at: a question, a change, a system.' }), focus),
    h('div', { class: 'row-controls' },
      h('div', { class: 'field' }, h('span', { class: 'label', id: 'size-label', text: 'Size' }), sizes),
      h('div', { class: 'field switch' }, h('label', { for: 'fast' }, fast, h('span', { text: 'Fast' })), fastNote)),
    projectField, error,
    h('div', { class: 'actions' }, launch));
  focus.setAttribute('aria-describedby', 'focus-hint');
  fast.setAttribute('aria-describedby', 'fast-note');

  replace(main, h('div', { class: 'page-head' }, h('h1', { tabindex: '-1', text: 'New run' })), form);
  main.querySelector('h1').focus();

  function flowsOf(cat) {
    return flows.filter((f) => (f.category || 'Other') === cat);
  }

  function categories() {
    const extra = [...new Set(flows.map((f) => f.category || 'Other'))].filter((c) => !CATEGORIES.includes(c));
    return CATEGORIES.concat(extra);
  }

  function drawTabs() {
    replace(tablist, categories().map((cat) => {
      const selected = cat === category;
      return h('button', {
        type: 'button', role: 'tab', id: `tab-${cat}`, 'aria-selected': String(selected), 'aria-controls': 'flows-panel',
        tabindex: selected ? '0' : '-1', dataset: { category: cat },
        onclick: () => selectCategory(cat, false),
      }, cat, h('span', { class: 'count', text: ` ${flowsOf(cat).length}` }));
    }));
    panel.setAttribute('aria-labelledby', `tab-${category}`);
  }

  function selectCategory(cat, focusTab) {
    category = cat;
    drawTabs();
    drawFlows();
    if (focusTab) tablist.querySelector(`[data-category="${CSS.escape(cat)}"]`).focus();
  }

  tablist.addEventListener('keydown', (e) => {
    const cats = categories();
    const i = cats.indexOf(category);
    const moves = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: cats.length - 1 };
    if (!(e.key in moves)) return;
    e.preventDefault();
    selectCategory(cats[(moves[e.key] + cats.length) % cats.length], true);
  });

  function drawFlows() {
    const list = flowsOf(category);
    if (!list.length) {
      replace(panel, h('p', { class: 'hint', text: `No ${category.toLowerCase()} flows in this catalogue.` }));
      syncBands();
      return;
    }
    replace(panel, h('div', { class: 'flow-list' }, list.map((f, i) => h('label', { class: 'flow-card' },
      h('input', { type: 'radio', name: 'flow', value: f.name, checked: i === 0, onchange: syncBands }),
      h('span', { class: 'flow-text' },
        h('strong', { text: f.name }), h('span', { class: 'steps', text: ` · ${f.steps.length} steps` }),
        h('span', { class: 'desc', text: f.description || '' }))))));
    syncBands();
  }

  function chosenFlow() {
    const picked = form.querySelector('input[name="flow"]:checked');
    return picked ? flows.find((f) => f.name === picked.value) : null;
  }

  function syncBands() {
    const f = chosenFlow();
    const allowed = new Set(f && f.bands && f.bands.length ? f.bands : BANDS);
    for (const input of sizes.querySelectorAll('input')) input.disabled = !allowed.has(input.value);
    const checked = sizes.querySelector('input:checked');
    if (!checked || checked.disabled) {
      const first = [...sizes.querySelectorAll('input')].find((i) => !i.disabled);
      if (first) first.checked = true;
    }
    launch.disabled = !f;
  }

  focus.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener('input', (e) => {
    if (e.target !== fast) key = randomKey(); // a changed form is a new launch
  });

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    perf.mark('launchClick');
    error.hidden = true;
    const f = chosenFlow();
    const question = focus.value.trim();
    if (!question) {
      error.textContent = 'Say what the run should look at (Focus).';
      error.hidden = false;
      focus.focus();
      return;
    }
    const body = { flow: f.name, question, band: sizes.querySelector('input:checked').value };
    if (fastSupported && fast.checked) body.fast = true;
    const projectSelect = projectField.querySelector('select');
    if (projectSelect && projectSelect.value) body.project_id = projectSelect.value;
    launch.disabled = true;
    launch.textContent = 'Launching…';
    try {
      const answer = await request('POST', '/api/runs', { json: body, headers: { 'Idempotency-Key': key } });
      key = randomKey();
      location.hash = `#/runs/${encodeURIComponent(answer.run_id)}`;
    } catch (err) {
      error.textContent = describeError(err);
      error.hidden = false;
      const field = err.problem && err.problem.field;
      if (field === 'question') focus.focus();
    } finally {
      if (alive) {
        launch.disabled = false;
        launch.textContent = 'Launch';
      }
    }
  });

  get('/api/flows').then((answer) => {
    if (!alive) return;
    flows = answer;
    drawTabs();
    drawFlows();
  }).catch((err) => {
    replace(panel, h('p', { class: 'error', text: `The catalogue could not be read: ${describeError(err)}` }));
  });

  get('/api/openapi.json').then((doc) => {
    const props = (((doc.components || {}).schemas || {}).LaunchRequest || {}).properties || {};
    fastSupported = 'fast' in props;
  }).catch(() => {}).finally(() => {
    if (!alive) return;
    fast.disabled = !fastSupported;
    fastNote.textContent = fastSupported ? 'Fewer, quicker steps.' : 'Not available on this server yet.';
  });

  get('/api/projects').then((answer) => {
    if (!alive) return;
    const projects = Array.isArray(answer) ? answer : (answer && answer.projects) || [];
    const select = h('select', { id: 'project', name: 'project' }, h('option', { value: '', text: 'No project' }),
      projects.map((p) => h('option', { value: p.project_id || p.id, text: p.name || p.project_id || p.id })));
    replace(projectField, h('label', { for: 'project', text: 'Project' }), select);
    projectField.hidden = false;
  }).catch(() => {}); // no projects on this server: the picker stays hidden

  return () => {
    alive = false;
  };
}
