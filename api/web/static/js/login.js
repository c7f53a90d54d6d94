// The login view: a modal asking for an access token (`baton tokens create`),
// exchanged for the session cookie. Shown by request() on a 401; resolves
// once a token was accepted, so the request that met the 401 is retried.

import { login } from './api.js';
import { h, describeError } from './dom.js';

let open = null;

/** Show the login dialog (once, however many requests met a 401); resolves after a login. */
export function showLogin() {
  if (open) return open;
  open = new Promise((resolve) => {
    const token = h('input', { id: 'login-token', name: 'token', type: 'password', autocomplete: 'current-password', required: true, spellcheck: 'false' });
    const error = h('p', { class: 'error', id: 'login-error', role: 'alert', hidden: true });
    const submit = h('button', { type: 'submit', class: 'primary' }, 'Log in');
    const form = h('form', { class: 'login', method: 'dialog' },
      h('h1', { text: 'Log in to baton' }),
      h('p', { class: 'hint' }, 'Paste an access token. ', h('code', { text: 'baton tokens create NAME --role operator' }),
        ' makes one; the first ', h('code', { text: 'baton serve' }), ' wrote an admin token to the file it named.'),
      h('label', { for: 'login-token', text: 'Access token' }), token, error, submit);
    const dialog = h('dialog', { class: 'login-dialog', 'aria-labelledby': 'login-title' }, form);
    form.querySelector('h1').id = 'login-title';
    dialog.addEventListener('cancel', (e) => e.preventDefault()); // nothing works until logged in
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      submit.disabled = true;
      error.hidden = true;
      try {
        if (await login(token.value.trim())) {
          dialog.close();
          dialog.remove();
          open = null;
          resolve();
          return;
        }
        error.textContent = 'That token was not accepted: check it, or ask an admin for a new one.';
      } catch (err) {
        error.textContent = describeError(err);
      }
      error.hidden = false;
      submit.disabled = false;
      token.select();
    });
    document.body.append(dialog);
    dialog.showModal();
    token.focus();
  });
  return open;
}
