// fleetbus dashboard script: async forms (feedback boxes, logs viewer), live updates over
// Server-Sent Events, and the job console. No inline script anywhere (CSP script-src 'self');
// text from the bus is only ever inserted with textContent, fragments come escaped from the server.
'use strict';
(function () {
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || '';
  const liveStatus = (text) => {
    const el = document.getElementById('live-status');
    if (el) { el.hidden = false; el.textContent = text; el.dataset.state = text; }
  };

  // Forms with data-async post in the background and put the answer into their target box.
  document.addEventListener('submit', async (ev) => {
    const form = ev.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute('data-async')) return;
    ev.preventDefault();
    const target = document.getElementById(form.dataset.target || '');
    const method = (form.getAttribute('method') || 'get').toUpperCase();
    const data = new URLSearchParams(new FormData(form));
    if (ev.submitter && ev.submitter.name) data.set(ev.submitter.name, ev.submitter.value);
    let url = form.getAttribute('action') || location.pathname;
    const opts = { method, credentials: 'same-origin', headers: { 'X-Requested-With': 'fetch', 'X-CSRF-Token': csrf() } };
    if (method === 'GET') url += (url.includes('?') ? '&' : '?') + data.toString(); else opts.body = data;
    if (target) { target.textContent = 'working…'; target.dataset.state = 'pending'; }
    try {
      const res = await fetch(url, opts);
      const html = await res.text();
      if (target) { target.innerHTML = html; target.dataset.state = res.ok ? 'ok' : 'error'; }
    } catch (e) {
      if (target) { target.textContent = 'request failed: ' + e; target.dataset.state = 'error'; }
    }
  });

  // Fetches a server-rendered fragment and returns its first element.
  async function fragment(url) {
    const res = await fetch(url, { credentials: 'same-origin' });
    if (!res.ok) return null;
    const t = document.createElement('template');
    t.innerHTML = (await res.text()).trim();
    return t.content.firstElementChild;
  }

  const pending = new Map();
  function debounce(key, fn, ms) {
    if (pending.has(key)) return;
    pending.set(key, setTimeout(() => { pending.delete(key); fn(); }, ms));
  }

  async function refreshRow(host) {
    const row = document.querySelector('tr[data-host="' + CSS.escape(host) + '"]');
    if (!row) return;
    const fresh = await fragment(row.dataset.fragment);
    if (!fresh) return;
    // A host whose agent was just blocked leaves an overview that hides blocked hosts.
    if ('hideBlocked' in document.body.dataset && fresh.classList.contains('state-blocked')) row.remove();
    else row.replaceWith(fresh);
  }

  // Panels keep their feedback box and logs: only the header (dot, state, since) is replaced.
  async function refreshPanels() {
    for (const panel of document.querySelectorAll('article.panel[data-fragment]')) {
      const fresh = await fragment(panel.dataset.fragment);
      if (!fresh) continue;
      const head = panel.querySelector('header'), freshHead = fresh.querySelector('header');
      if (head && freshHead) head.replaceWith(freshHead);
    }
  }

  async function refreshJobs() {
    const res = await fetch(location.href, { credentials: 'same-origin' });
    if (!res.ok) return;
    const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
    const fresh = doc.querySelector('table.jobs tbody'), old = document.querySelector('table.jobs tbody');
    if (fresh && old) old.replaceWith(fresh);
  }

  function openStream(url, handlers) {
    const es = new EventSource(url);
    es.onopen = () => liveStatus('live');
    es.onerror = () => liveStatus('reconnecting');
    for (const [name, fn] of Object.entries(handlers)) {
      es.addEventListener(name, (m) => { try { fn(JSON.parse(m.data)); } catch (e) { console.warn(e); } });
    }
    return es;
  }

  const body = document.body;
  const live = body.dataset.live;
  if (live === 'overview') {
    openStream('/live', { event: (e) => { if (e.host) debounce('row:' + e.host, () => refreshRow(e.host), 200); } });
  } else if (live === 'host') {
    openStream('/live?host=' + encodeURIComponent(body.dataset.host), { event: () => debounce('panels', refreshPanels, 200) });
  } else if (live === 'jobs') {
    openStream('/live', { event: (e) => { if (e.domain === 'job') debounce('jobs', refreshJobs, 300); } });
  } else if (live === 'job') {
    startConsole(body.dataset.job);
  }

  // ANSI SGR colours become classes on spans; every other escape sequence is dropped.
  const SGR = /\x1b\[([0-9;]*)m|\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07/g;
  let sgr = [];
  function appendAnsi(con, text, stream) {
    let last = 0, m;
    const put = (s) => {
      if (!s) return;
      const span = document.createElement('span');
      span.textContent = s;
      span.className = sgr.concat(stream === 'stderr' ? ['stderr'] : []).join(' ');
      con.appendChild(span);
    };
    SGR.lastIndex = 0;
    while ((m = SGR.exec(text)) !== null) {
      put(text.slice(last, m.index));
      last = SGR.lastIndex;
      if (m[1] === undefined) continue;
      for (const p of (m[1] || '0').split(';')) {
        const n = parseInt(p || '0', 10);
        if (n === 0) sgr = [];
        else if (n === 1) sgr.push('ansi-bold');
        else if ((n >= 30 && n <= 37) || (n >= 90 && n <= 97)) sgr.push('ansi-fg-' + n);
        else if (n >= 40 && n <= 47) sgr.push('ansi-bg-' + n);
      }
    }
    put(text.slice(last));
  }

  function startConsole(job) {
    const con = document.getElementById('console');
    const set = (id, text) => { const el = document.getElementById(id); if (el) el.textContent = text; };
    const es = openStream('/jobs/' + encodeURIComponent(job) + '/live', {
      chunk: (c) => {
        const atBottom = con.scrollTop + con.clientHeight >= con.scrollHeight - 4;
        appendAnsi(con, c.data, c.stream);
        if (atBottom) con.scrollTop = con.scrollHeight;
      },
      job: (e) => {
        const d = e.data || {};
        if (e.type === 'started') set('job-state', 'running');
        if (e.type === 'progress') { set('job-step', 'STEP ' + d.step + '/' + d.total); set('job-step-msg', d.message || ''); }
        if (['succeeded', 'failed', 'cancelled'].includes(e.type)) {
          const o = d.outcome || {};
          set('job-state', e.type);
          const st = document.getElementById('job-state');
          if (st) st.className = 'jobstate ' + e.type;
          set('job-exit', o.exit_code === undefined || o.exit_code === null ? '' : String(o.exit_code));
          set('job-duration', o.duration_ms === undefined ? '' : (o.duration_ms / 1000).toFixed(1) + ' s');
          const cancel = document.getElementById('cancel');
          if (cancel) cancel.disabled = true;
          setTimeout(() => es.close(), 1500);
          liveStatus('finished');
        }
      },
    });
  }
})();
