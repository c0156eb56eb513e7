// fleetpatch dashboard: plain ES module, no build. Data comes from the API with the token the
// person gave (sessionStorage of this tab only); live updates come as server-sent events read
// through fetch (EventSource cannot send the Authorization header).

const STATES = {
  idle: 'idle', patching: 'patching', patched: 'patched', already: 'already patched', failed: 'failed',
  incompatible: 'incompatible', 'rolled-back': 'rolled back', 'not-restored': 'NOT restored', drift: 'drift', unknown: 'no record',
};
const FINAL = ['succeeded', 'failed', 'rolled-back', 'rollback-incomplete', 'aborted'];
const STATUS_COLOUR = { succeeded: 'patched', running: 'patching', baking: 'patching', preflight: 'patching', 'awaiting-approval': 'drift', paused: 'drift', 'rolling-back': 'rolled-back', 'rolled-back': 'rolled-back', failed: 'failed', 'rollback-incomplete': 'not-restored', aborted: 'failed' };

const $ = (sel) => document.querySelector(sel);
const state = { token: null, me: null, hosts: new Map(), groupBy: '', filter: '', rollouts: [], rolloutId: null, rollout: null, stream: null, hostOpen: null };

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'style') e.style.cssText = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c !== undefined && c !== null && c !== false) e.append(c instanceof Node ? c : String(c));
  return e;
}
const short = (id) => (id && id.length > 12 ? `${id.slice(0, 12)}…` : id ?? '-');
const when = (iso) => (iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-');
const colour = (s) => `--c: var(--${s})`;

function announce(text) {
  $('#announce').textContent = text;
}

// ---- API -----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.reason ? `${body.code}: ${body.reason}` : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, opts = {}) {
  const headers = { authorization: `Bearer ${state.token}` };
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(path, { method: opts.method ?? 'GET', headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
  const text = await r.text();
  const body = text ? JSON.parse(text) : null;
  if (r.status === 401) signOut('The token is unknown or revoked; sign in again.');
  if (!r.ok) throw new ApiError(r.status, body);
  return body;
}

// ---- sign in -------------------------------------------------------------------------------

function signOut(message) {
  sessionStorage.removeItem('fleetpatch-token');
  state.token = null;
  state.stream?.abort();
  $('#main').hidden = true;
  $('#login').hidden = false;
  $('#login-error').textContent = message ?? '';
  $('#token').focus();
}

async function signIn(token) {
  state.token = token;
  try {
    state.me = await api('/api/whoami');
  } catch (e) {
    if (e.status !== 401) signOut(e.message);
    return;
  }
  sessionStorage.setItem('fleetpatch-token', token);
  $('#login').hidden = true;
  $('#main').hidden = false;
  $('#who').textContent = `signed in as ${state.me.name} (${state.me.role})`;
  if (state.me.temporalUi) $('#who').append(' · ', el('a', { href: state.me.temporalUi, target: '_blank', rel: 'noopener' }, 'Temporal UI'));
  await loadFleet();
  await loadRollouts();
  connect();
}

// ---- fleet grid ----------------------------------------------------------------------------

async function loadFleet() {
  const fleet = await api('/api/fleet');
  state.hosts = new Map(fleet.hosts.map((h) => [h.id, h]));
  const sel = $('#group-by');
  const keep = sel.value;
  sel.replaceChildren(el('option', { value: '' }, '(none)'), ...fleet.labels.map((l) => el('option', { value: l }, l)));
  sel.value = keep || (fleet.labels.includes('region') ? 'region' : '');
  state.groupBy = sel.value;
  const filter = $('#state-filter');
  filter.replaceChildren(el('option', { value: '' }, 'every state'), ...Object.entries(STATES).map(([k, v]) => el('option', { value: k }, v)));
  filter.value = state.filter;
  $('#legend').replaceChildren(...Object.entries(STATES).map(([k, v]) => el('li', { style: colour(k) }, v)));
  renderEvents(fleet.recent, true);
  renderGrid();
}

function renderGrid() {
  const hosts = [...state.hosts.values()].filter((h) => !state.filter || h.state === state.filter);
  const groups = new Map();
  for (const h of hosts) {
    const g = state.groupBy ? (h.labels[state.groupBy] ?? '(no label)') : '';
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(h);
  }
  const counts = {};
  for (const h of state.hosts.values()) counts[h.state] = (counts[h.state] ?? 0) + 1;
  $('#fleet-count').textContent = `${state.hosts.size} hosts: ${Object.entries(counts).map(([s, n]) => `${n} ${STATES[s] ?? s}`).join(', ')}`;
  const grid = $('#grid');
  grid.replaceChildren(
    ...[...groups.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([g, list]) =>
      el('div', { class: 'group', role: 'group', 'aria-label': g ? `${state.groupBy} ${g}` : 'hosts' },
        g ? el('h3', {}, `${state.groupBy} = ${g} (${list.length})`) : null,
        el('div', { class: 'cells' }, ...list.map(cell)),
      ),
    ),
  );
}

function cell(h) {
  const label = `${h.id}: ${STATES[h.state] ?? h.state}${h.reason ? ` (${h.reason})` : ''}${h.stack.length ? `; stack ${h.stack.join(' > ')}` : ''}`;
  return el('button', { type: 'button', class: 'cell', style: colour(h.state), 'data-host': h.id, 'data-state': h.state, title: label, 'aria-label': label, onclick: () => openHost(h.id) }, h.id.replace(/^host-0*(?=\d)/, ''));
}

function updateHosts(list) {
  let failed = 0;
  for (const h of list) {
    const before = state.hosts.get(h.id);
    state.hosts.set(h.id, h);
    if (h.state === 'failed' && before?.state !== 'failed') failed++;
  }
  renderGrid();
  if (failed) announce(`${failed} host(s) failed`);
  if (state.hostOpen && list.some((h) => h.id === state.hostOpen)) openHost(state.hostOpen, true);
}

// ---- one host ------------------------------------------------------------------------------

async function openHost(id, quiet) {
  state.hostOpen = id;
  const panel = $('#host');
  panel.hidden = false;
  $('#host-title').textContent = `Host ${id}`;
  let h;
  try {
    h = await api(`/api/hosts/${encodeURIComponent(id)}`);
  } catch (e) {
    $('#host-body').replaceChildren(el('p', { class: 'error' }, e.message));
    return;
  }
  const stackTable = (rows, caption) =>
    el('table', {}, el('caption', {}, caption), el('thead', {}, el('tr', {}, el('th', {}, '#'), el('th', {}, 'payload'), el('th', {}, 'build-id'))),
      el('tbody', {}, rows.length ? rows.map((p, i) => el('tr', {}, el('td', {}, `${i + 1}${i === rows.length - 1 ? ' (top)' : ''}`), el('td', {}, p.name), el('td', { class: 'mono' }, short(p.buildId)))) : el('tr', {}, el('td', { colspan: 3 }, 'empty'))));
  const view = h.host;
  $('#host-body').replaceChildren(
    el('p', {}, 'State: ', el('span', { class: 'status', style: colour(view?.state ?? 'unknown'), 'data-testid': 'host-state' }, STATES[view?.state] ?? 'no record'),
      view?.rolloutId ? ` in rollout ${view.rolloutId}` : '', view?.reason ? ` — ${view.reason}` : ''),
    el('p', {}, 'Labels: ', Object.entries(view?.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(', ') || '-'),
    h.live.ok ? stackTable(h.live.applied, `Live stack (asked the host now; hypervisor ${short(h.live.hypervisorBuildId)})`) : el('p', { class: 'error' }, `Live host: ${h.live.code}: ${h.live.reason}`),
    stackTable(h.replayed.applied, `Replayed stack (from ${h.replayed.streamPosition} events)`),
    h.differences.length
      ? el('div', { role: 'alert' }, el('p', { class: 'error' }, `DRIFT: ${h.differences.length} difference(s)`), el('ul', {}, h.differences.map((d) => el('li', {}, d.description))))
      : el('p', {}, h.live.ok ? 'The live host runs exactly what its events say.' : ''),
    el('h3', {}, `Dependency checks (${h.checks.length})`),
    el('table', { 'data-testid': 'checks' },
      el('thead', {}, el('tr', {}, ['when', 'phase', 'payload', 'on', 'expected', 'found', 'against', 'outcome', 'rollout'].map((c) => el('th', {}, c)))),
      el('tbody', {}, h.checks.map(({ event: c, recordedAt }) => el('tr', {},
        el('td', {}, when(recordedAt)), el('td', {}, c.phase), el('td', {}, c.payload.name), el('td', {}, c.on),
        el('td', { class: 'mono', title: c.expected }, short(c.expected)), el('td', { class: 'mono', title: c.found ?? '' }, short(c.found)),
        el('td', {}, c.against.kind === 'hypervisor' ? 'the hypervisor' : `${c.against.name} (${short(c.against.buildId)})`),
        el('td', {}, c.outcome === 'match' ? 'match' : el('strong', {}, `${c.outcome.toUpperCase()}${c.errno ? ` ${c.errno}` : ''}`)),
        el('td', {}, c.correlation?.rolloutId ?? '-'))))),
    el('h3', {}, 'Timeline'),
    el('ol', { class: 'events' }, h.timeline.slice(-100).map((e) => el('li', {}, `${when(e.recordedAt)} ${e.event.type}: ${e.description}`))),
  );
  if (!quiet) $('#host-title').focus?.();
}

// ---- rollouts ------------------------------------------------------------------------------

async function loadRollouts(selectNewest) {
  state.rollouts = await api('/api/rollouts');
  const sel = $('#rollout-select');
  sel.replaceChildren(...state.rollouts.map((r) => el('option', { value: r.rolloutId }, `${r.rolloutId} — ${r.status}`)));
  const wanted = new URLSearchParams(location.hash.slice(1)).get('rollout');
  if (!state.rolloutId || selectNewest) state.rolloutId = wanted && state.rollouts.some((r) => r.rolloutId === wanted) ? wanted : state.rollouts[0]?.rolloutId ?? null;
  if (state.rolloutId) {
    sel.value = state.rolloutId;
    await showRollout(state.rolloutId);
  }
}

async function showRollout(id) {
  const changed = state.rolloutId !== id || !state.rollout;
  state.rolloutId = id;
  try {
    renderRollout(await api(`/api/rollouts/${encodeURIComponent(id)}`));
  } catch (e) {
    $('#rollout-body').replaceChildren(el('p', { class: 'error' }, e.message));
  }
  if (changed) connect();
}

function may(role) {
  const rank = { viewer: 0, operator: 1, admin: 2 };
  return rank[state.me?.role] >= rank[role];
}

function renderRollout(r) {
  state.rollout = r;
  const body = $('#rollout-body');
  if (!r.progress) {
    const s = r.recorded;
    body.replaceChildren(
      el('p', {}, el('span', { class: 'status', style: colour(STATUS_COLOUR[s?.status] ?? 'idle'), 'data-testid': 'rollout-status' }, s?.status ?? 'unknown'), ` ${r.rolloutId} (from the event store: ${r.unavailable ?? 'the workflow did not answer'})`),
      s ? el('p', {}, `${s.hosts.patched} patched, ${s.hosts.already} already, ${s.hosts.failed} failed`) : null,
    );
    return;
  }
  const p = r.progress;
  const b = r.budgets;
  const parts = [
    el('p', {}, el('span', { class: 'status', style: colour(STATUS_COLOUR[p.status] ?? 'idle'), 'data-testid': 'rollout-status' }, p.status), ` ${p.planName} · ${p.rolloutId}`, p.stopReason ? el('div', { class: 'error' }, p.stopReason) : null, p.waiting ? el('div', { class: 'muted' }, `waiting: ${p.waiting}`) : null),
    r.startedBy ? el('p', { class: 'muted' }, `started ${when(p.startedAt)} by ${r.startedBy.id}${p.finishedAt ? `, ended ${when(p.finishedAt)}` : ''}`) : null,
    p.preflight ? el('p', { class: 'muted' }, `preflight: ${p.preflight.selected} selected, ${p.preflight.targets} to patch, ${p.preflight.alreadyPatched} already, ${p.preflight.incompatible} incompatible, ${p.preflight.unreachable} unreachable`) : null,
    el('table', { 'data-testid': 'waves' },
      el('caption', {}, 'Waves and failure budgets'),
      el('thead', {}, el('tr', {}, el('th', {}, 'wave'), el('th', {}, 'status'), ...['planned', 'done', 'patched', 'already', 'failed'].map((c) => el('th', { class: 'num' }, c)), el('th', {}, 'budget used'))),
      el('tbody', {}, p.waves.map((w, i) => {
        const wb = b?.waves?.[i];
        return el('tr', { 'data-wave': w.name },
          el('td', {}, w.name), el('td', {}, w.status), ...[w.planned, w.done, w.patched, w.already, w.failed].map((n) => el('td', { class: 'num' }, n)),
          el('td', { class: 'budget' }, wb ? [el('meter', { min: 0, max: Math.max(1, wb.allowed + 1), value: w.failed, 'aria-label': `wave ${w.name}: ${w.failed} failures of ${wb.allowed} allowed` }), ` ${w.failed}/${wb.allowed}`] : '-'));
      })),
    ),
    b?.total ? el('p', { class: 'budget' }, `Total budget: ${b.total.failed} failure(s) of ${b.total.allowed} allowed (${b.total.text})`) : null,
  ];
  if (p.status === 'awaiting-approval' && p.awaitingApprovalAfter) {
    const gate = r.gates?.find((g) => g.after === p.awaitingApprovalAfter);
    const reason = el('input', { id: 'approve-reason', type: 'text', required: true, placeholder: 'why it is safe to go on (recorded)', 'aria-label': 'approval reason' });
    const msg = el('p', { role: 'alert', class: 'error' });
    parts.push(
      el('div', { class: 'gate', role: 'region', 'aria-label': 'approval gate', 'data-testid': 'gate' },
        el('p', {}, el('strong', {}, `Waiting for approval after wave "${p.awaitingApprovalAfter}"`), gate?.requireDifferentApprover ? ` — must be approved by someone other than ${r.startedBy?.id ?? 'who started it'}` : ''),
        may('operator')
          ? el('form', { class: 'actions', onsubmit: async (ev) => {
              ev.preventDefault();
              msg.textContent = '';
              try {
                renderRollout({ ...state.rollout, progress: await api(`/api/rollouts/${encodeURIComponent(p.rolloutId)}/approve`, { method: 'POST', body: { reason: reason.value || 'approved from the dashboard', wave: p.awaitingApprovalAfter } }) });
                announce(`approved going on after ${p.awaitingApprovalAfter}`);
              } catch (e) {
                msg.textContent = e.message;
              }
            } }, reason, el('button', { type: 'submit', class: 'primary', id: 'approve' }, `Approve as ${state.me.name}`))
          : el('p', { class: 'muted' }, 'An operator token can approve it.'),
        msg,
      ),
    );
  }
  if (may('operator') && !FINAL.includes(p.status)) {
    const reason = el('input', { id: 'steer-reason', type: 'text', placeholder: 'reason (recorded)', 'aria-label': 'reason for pause, resume or abort' });
    const msg = el('p', { role: 'alert', class: 'error' });
    const act = (action, extra = {}) => async () => {
      msg.textContent = '';
      if (!reason.value.trim()) return void (msg.textContent = 'say why: the reason is recorded');
      try {
        renderRollout({ ...state.rollout, progress: await api(`/api/rollouts/${encodeURIComponent(p.rolloutId)}/${action}`, { method: 'POST', body: { reason: reason.value, ...extra } }) });
      } catch (e) {
        msg.textContent = e.message;
      }
    };
    parts.push(el('div', { class: 'actions' }, reason,
      p.status === 'paused' ? el('button', { type: 'button', onclick: act('resume') }, 'Resume') : el('button', { type: 'button', onclick: act('pause') }, 'Pause'),
      el('button', { type: 'button', class: 'danger', onclick: act('abort') }, 'Abort'),
      el('button', { type: 'button', class: 'danger', onclick: act('abort', { rollback: true }) }, 'Abort and roll back')), msg);
  }
  if (p.failures.length) {
    parts.push(el('h3', {}, `Failures (${p.failures.length})`), el('table', { 'data-testid': 'failures' },
      el('thead', {}, el('tr', {}, ['host', 'wave', 'stage', 'code', 'reason'].map((c) => el('th', {}, c)))),
      el('tbody', {}, p.failures.map((f) => el('tr', {}, el('td', {}, el('button', { type: 'button', class: 'link', onclick: () => openHost(f.hostId) }, f.hostId)), el('td', {}, f.wave), el('td', {}, f.stage), el('td', {}, f.code), el('td', {}, `${f.reason}${f.restore ? `; ${f.restore}` : ''}`))))));
  }
  const recorded = r.rollback;
  if (!p.rollback && recorded) {
    // A rollback asked for after the rollout ended runs in its own workflow: the event store has it.
    const notBack = recorded.stackGrew + recorded.unrecoverable + recorded.failed;
    parts.push(el('section', { 'data-testid': 'rollback', 'aria-label': 'rollback' },
      el('h3', {}, `Rollback ${recorded.status}${recorded.status === 'finished' ? (notBack ? ' — INCOMPLETE' : ' — every host is back') : ''}`),
      el('p', {}, `asked by ${recorded.requestedBy?.id ?? '?'}: ${recorded.reason}`),
      el('p', {}, `${recorded.rolledBack + recorded.nothingToDo} of ${recorded.hosts} touched host(s) back (${recorded.rolledBack} restored, ${recorded.nothingToDo} had nothing to undo)${notBack ? `; NOT back: ${notBack}` : ''}`),
      recorded.notBack.length ? el('table', {}, el('thead', {}, el('tr', {}, ['host', 'outcome', 'why'].map((c) => el('th', {}, c)))),
        el('tbody', {}, recorded.notBack.map((x) => el('tr', {}, el('td', {}, x.hostId), el('td', {}, x.outcome), el('td', {}, x.reason ?? '-'))))) : null));
  }
  if (p.rollback) {
    const rb = p.rollback;
    const notBack = rb.stackGrew + rb.unrecoverable + rb.failed;
    parts.push(el('section', { 'data-testid': 'rollback', 'aria-label': 'rollback' },
      el('h3', {}, `Rollback ${rb.status}${rb.status === 'finished' ? (notBack ? ' — INCOMPLETE' : ' — every host is back') : ''}`),
      el('p', {}, `asked by ${rb.requestedBy.id}: ${rb.reason}`),
      el('p', {}, `${rb.rolledBack + rb.nothingToDo} of ${rb.hosts} touched host(s) back (${rb.rolledBack} restored, ${rb.nothingToDo} had nothing to undo)${notBack ? `; NOT back: ${notBack}` : ''}`),
      rb.problems.length ? el('table', {}, el('thead', {}, el('tr', {}, ['host', 'outcome', 'stack now', 'should be', 'why'].map((c) => el('th', {}, c)))),
        el('tbody', {}, rb.problems.map((x) => el('tr', {}, el('td', {}, x.hostId), el('td', {}, x.outcome), el('td', {}, x.stackNow.map((s) => s.name).join(' > ') || 'empty'), el('td', {}, x.formerStack.map((s) => s.name).join(' > ') || 'empty'), el('td', {}, x.reason))))) : null));
  }
  if (FINAL.includes(p.status) && may('operator') && !p.rollback && !recorded && p.waves.some((w) => w.patched > 0)) {
    const reason = el('input', { id: 'rollback-reason', type: 'text', placeholder: 'why roll back (recorded)', 'aria-label': 'rollback reason' });
    const msg = el('p', { role: 'alert', class: 'error' });
    parts.push(el('form', { class: 'actions', onsubmit: async (ev) => {
      ev.preventDefault();
      if (!reason.value.trim()) return void (msg.textContent = 'say why: the reason is recorded');
      try {
        const rb = await api(`/api/rollouts/${encodeURIComponent(p.rolloutId)}/rollback`, { method: 'POST', body: { reason: reason.value } });
        msg.textContent = `rolling back (workflow ${rb.workflowId}); the grid shows each host as it is restored`;
      } catch (e) {
        msg.textContent = e.message;
      }
    } }, reason, el('button', { type: 'submit', class: 'danger' }, 'Roll back every host it patched')), msg);
  }
  if (p.decisions.length) {
    parts.push(el('h3', {}, 'Decisions'), el('ul', {}, p.decisions.map((d) => el('li', {}, `${when(d.at)} ${d.action}${d.wave ? ` (wave ${d.wave})` : ''} by ${d.by.id}: ${d.reason}`))));
  }
  const focused = document.activeElement?.id;
  const typed = focused && document.getElementById(focused)?.value;
  body.replaceChildren(...parts.filter(Boolean));
  // Keep what a person is typing across live re-renders.
  if (focused && document.getElementById(focused)) {
    const f = document.getElementById(focused);
    if (typed !== undefined && 'value' in f) f.value = typed;
    f.focus();
  }
}

// ---- events and the live stream ------------------------------------------------------------

function renderEvents(lines, reset) {
  const list = $('#event-list');
  if (reset) list.replaceChildren();
  for (const l of lines) list.prepend(el('li', {}, `${when(l.recordedAt)} `, el('span', { class: 'mono' }, `${l.streamId}#${l.streamPosition}`), ` ${l.actor}: ${l.description}`));
  while (list.children.length > 200) list.lastChild.remove();
}

function connect() {
  state.stream?.abort();
  const controller = new AbortController();
  state.stream = controller;
  const url = `/api/stream${state.rolloutId ? `?rollout=${encodeURIComponent(state.rolloutId)}` : ''}`;
  let delay = 500;
  const run = async () => {
    while (!controller.signal.aborted) {
      try {
        const r = await fetch(url, { headers: { authorization: `Bearer ${state.token}`, accept: 'text/event-stream' }, signal: controller.signal });
        if (r.status === 401) return signOut('The token is unknown or revoked; sign in again.');
        if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
        $('#connection').textContent = 'live';
        $('#connection').classList.add('live');
        delay = 500;
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let at;
          while ((at = buffer.indexOf('\n\n')) >= 0) {
            const chunk = buffer.slice(0, at);
            buffer = buffer.slice(at + 2);
            const event = /^event: (.*)$/m.exec(chunk)?.[1];
            const data = /^data: (.*)$/m.exec(chunk)?.[1];
            if (event && data) onEvent(event, JSON.parse(data));
          }
        }
      } catch (e) {
        if (controller.signal.aborted) return;
      }
      $('#connection').textContent = 'reconnecting…';
      $('#connection').classList.remove('live');
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(10_000, delay * 2);
    }
  };
  void run();
}

function onEvent(event, data) {
  if (event === 'snapshot') {
    state.hosts = new Map(data.hosts.map((h) => [h.id, h]));
    renderGrid();
  } else if (event === 'hosts') {
    updateHosts(data);
  } else if (event === 'events') {
    renderEvents(data);
    const known = new Set(state.rollouts.map((r) => r.rolloutId));
    if (data.some((l) => l.rolloutId && !known.has(l.rolloutId) && l.type === 'RolloutStarted')) void loadRollouts(true);
    else if (data.some((l) => l.type === 'RolloutFinished' || l.type === 'RollbackFinished' || l.type === 'RollbackStarted')) {
      void api('/api/rollouts').then((list) => {
        state.rollouts = list;
        const sel = $('#rollout-select');
        for (const o of sel.options) {
          const r = list.find((x) => x.rolloutId === o.value);
          if (r) o.textContent = `${r.rolloutId} — ${r.status}`;
        }
      });
      if (state.rolloutId && data.some((l) => l.rolloutId === state.rolloutId)) void showRollout(state.rolloutId);
    }
  } else if (event === 'rollout' && data.rolloutId === state.rolloutId && state.rollout) {
    const before = state.rollout.progress?.status;
    renderRollout({ ...state.rollout, ...data, progress: data.progress ?? state.rollout.progress });
    if (data.progress && data.progress.status !== before) announce(`rollout ${data.progress.status}`);
  }
}

// ---- audit search --------------------------------------------------------------------------

async function auditSearch(ev) {
  ev.preventDefault();
  const kind = $('#audit-kind').value;
  const subject = $('#audit-subject').value.trim();
  const at = $('#audit-at').value.trim();
  const outcome = $('#audit-outcome').value;
  const out = $('#audit-results');
  const q = (o) => new URLSearchParams(Object.entries(o).filter(([, v]) => v)).toString();
  const eventsTable = (list) => el('table', {}, el('thead', {}, el('tr', {}, ['recorded', 'where', 'actor', 'type', 'what'].map((c) => el('th', {}, c)))),
    el('tbody', {}, list.map((e) => el('tr', {}, el('td', {}, when(e.recordedAt)), el('td', { class: 'mono' }, `${e.streamId}#${e.streamPosition}`), el('td', {}, e.event.actor.id), el('td', {}, e.event.type), el('td', {}, e.description)))));
  try {
    let result;
    switch (kind) {
      case 'timeline': result = eventsTable(await api(`/api/audit/timeline?${q({ host: subject })}`)); break;
      case 'checks-host': result = eventsTable(await api(`/api/audit/checks?${q({ host: subject, outcome })}`)); break;
      case 'checks-rollout': result = eventsTable(await api(`/api/audit/checks?${q({ rollout: subject, outcome })}`)); break;
      case 'checks-payload': result = eventsTable(await api(`/api/audit/checks?${q({ payload: subject, outcome })}`)); break;
      case 'stream': result = eventsTable(await api(`/api/audit/events?${q({ stream: subject })}`)); break;
      case 'where': {
        const list = await api(`/api/audit/where?${q({ payload: subject, at })}`);
        result = el('table', {}, el('thead', {}, el('tr', {}, ['host', 'name', 'state', 'stack position'].map((c) => el('th', {}, c)))),
          el('tbody', {}, list.map((p) => el('tr', {}, el('td', {}, p.hostId), el('td', {}, p.name), el('td', {}, p.state), el('td', {}, p.stackIndex === null ? '-' : `${p.stackIndex + 1} of ${p.stackHeight}`)))));
        break;
      }
      case 'stack': {
        const s = await api(`/api/audit/stack?${q({ host: subject, at })}`);
        result = el('div', {}, el('p', {}, `${subject} ${at ? `as recorded by ${at}` : 'now'}: ${s.state.streamPosition} events replayed`),
          el('p', {}, `applied (bottom first): ${s.state.applied.map((p) => p.name).join(' > ') || 'empty'}`),
          el('p', {}, `loaded: ${s.state.loaded.map((p) => `${p.name} ${p.state}`).join(', ') || 'none'}`));
        break;
      }
      case 'verify': {
        const v = await api(`/api/audit/verify${subject ? `?${q({ stream: subject })}` : ''}`);
        result = el('p', { class: v.ok ? '' : 'error' }, v.ok ? `OK: ${v.events} events in ${v.streams} streams; every hash chain holds; heads digest ${v.headsDigest}` : `BROKEN: ${v.breaks.length} stream(s), ${v.payloadBreaks.length} payload(s), ${v.orderBreaks.length} order problem(s)`);
        break;
      }
    }
    out.replaceChildren(result);
  } catch (e) {
    out.replaceChildren(el('p', { class: 'error', role: 'alert' }, e.message));
  }
}

// ---- start ---------------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('#login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    void signIn($('#token').value.trim());
  });
  $('#group-by').addEventListener('change', (ev) => { state.groupBy = ev.target.value; renderGrid(); });
  $('#state-filter').addEventListener('change', (ev) => { state.filter = ev.target.value; renderGrid(); });
  $('#rollout-select').addEventListener('change', (ev) => void showRollout(ev.target.value));
  $('#host-close').addEventListener('click', () => { $('#host').hidden = true; state.hostOpen = null; });
  $('#audit-form').addEventListener('submit', (ev) => void auditSearch(ev));
  const fromFragment = new URLSearchParams(location.hash.slice(1)).get('token');
  if (fromFragment) {
    // The token came in the link the CLI printed: keep it in this tab, drop it from the address bar.
    const rest = new URLSearchParams(location.hash.slice(1));
    rest.delete('token');
    history.replaceState(null, '', `${location.pathname}${rest.toString() ? `#${rest}` : ''}`);
  }
  const token = fromFragment || sessionStorage.getItem('fleetpatch-token');
  if (token) void signIn(token);
  else signOut();
});
