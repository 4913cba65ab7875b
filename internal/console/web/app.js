// Yagura web console. Signs in with a session cookie (HttpOnly: this
// script never sees it) and calls the public API with the session's CSRF
// token on every change. No inline script: the page's CSP forbids it.

const state = { user: null, role: null, csrf: null, lang: "en", messages: {} };

const $ = (id) => document.getElementById(id);

// t looks a message up in the current catalogue and fills {name} slots.
function t(key, vars = {}) {
  const msg = state.messages[key] ?? key;
  return msg.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

async function loadLanguage(lang) {
  const res = await fetch(`i18n/${lang}.json`, { credentials: "same-origin" });
  if (!res.ok) throw new Error(`i18n/${lang}.json: ${res.status}`);
  state.messages = await res.json();
  state.lang = lang;
  document.documentElement.lang = lang;
  $("lang").value = lang;
  for (const el of document.querySelectorAll("[data-i18n]")) {
    el.textContent = t(el.dataset.i18n);
  }
  renderWho();
}

function preferredLanguage(user) {
  const saved = user && localStorage.getItem(`yagura.lang.${user}`);
  if (saved === "en" || saved === "ja") return saved;
  return (navigator.language || "").toLowerCase().startsWith("ja") ? "ja" : "en";
}

function renderWho() {
  if (!state.user) return;
  $("who").textContent = t("who.signedIn", { user: state.user, role: t(`role.${state.role}`) });
}

// api calls the public API; changes carry the CSRF token.
async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = state.csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401) {
    showLogin();
    throw new Error("signed out");
  }
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) throw new Error((data && (data.detail || data.error)) || `${res.status}`);
  return data;
}

function show(id) {
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== id;
}

function showLogin() {
  state.user = state.role = state.csrf = null;
  $("nav").hidden = $("who").hidden = $("logout").hidden = true;
  show("login");
  document.querySelector("#login-form input[name=username]").focus();
}

async function signedIn(session) {
  state.user = session.user;
  state.role = session.role;
  state.csrf = session.csrf_token;
  $("nav").hidden = $("who").hidden = $("logout").hidden = false;
  await loadLanguage(preferredLanguage(state.user));
  route();
}

function fill(dl, counts, prefix, order) {
  dl.replaceChildren();
  const nf = new Intl.NumberFormat(state.lang);
  for (const key of order) {
    const dt = document.createElement("dt");
    dt.textContent = t(`${prefix}.${key}`);
    const dd = document.createElement("dd");
    dd.textContent = nf.format(counts[key] || 0);
    dd.dataset.key = key;
    dl.append(dt, dd);
  }
}

async function dashboard() {
  show("dashboard");
  $("dashboard-error").hidden = true;
  try {
    const [computers, alerts] = await Promise.all([
      api("GET", "/api/v1/computers?limit=10000"),
      api("GET", "/api/v1/alerts?state=open&limit=10000"),
    ]);
    const byStatus = {};
    for (const c of computers.items || []) byStatus[c.status] = (byStatus[c.status] || 0) + 1;
    fill($("computers-by-status"), byStatus, "status", ["online", "warning", "offline", "pending", "deactivated"]);
    const bySeverity = {};
    for (const a of alerts.items || []) bySeverity[a.severity] = (bySeverity[a.severity] || 0) + 1;
    fill($("alerts-by-severity"), bySeverity, "severity", ["critical", "error", "warning", "info"]);
    const now = new Date();
    $("updated").dateTime = now.toISOString();
    $("updated").textContent = new Intl.DateTimeFormat(state.lang, { dateStyle: "medium", timeStyle: "medium" }).format(now);
  } catch (err) {
    if (!state.user) return;
    $("dashboard-error").textContent = t("dashboard.failed", { reason: err.message });
    $("dashboard-error").hidden = false;
  }
}

// The computers page: a page of the list at a time (cursor from the API),
// filtered by the API itself.
const computersPage = { cursor: "", next: "" };

function cell(tr, text, cls) {
  const td = document.createElement("td");
  if (cls) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text;
    td.append(span);
  } else {
    td.textContent = text;
  }
  tr.append(td);
}

async function computers() {
  show("computers");
  $("computers-error").hidden = true;
  const q = new URLSearchParams({ limit: "50", sort: "hostname" });
  if ($("computers-q").value.trim()) q.set("q", $("computers-q").value.trim());
  if ($("computers-status").value) q.set("status", $("computers-status").value);
  if (computersPage.cursor) q.set("cursor", computersPage.cursor);
  try {
    const page = await api("GET", `/api/v1/computers?${q}`);
    const rows = $("computers-rows");
    rows.replaceChildren();
    const df = new Intl.DateTimeFormat(state.lang, { dateStyle: "medium", timeStyle: "short" });
    for (const c of page.items || []) {
      const tr = document.createElement("tr");
      tr.dataset.id = c.id;
      cell(tr, c.hostname);
      cell(tr, t(`status.${c.status}`) + (c.isolated ? ` · ${t("computers.isolated")}` : ""), `badge ${c.status}`);
      cell(tr, t(`policy.${c.policy_status}`));
      cell(tr, (c.ips || []).join(", "));
      cell(tr, [c.os, c.os_version].filter(Boolean).join(" "));
      cell(tr, c.last_seen ? df.format(new Date(c.last_seen)) : t("computers.never"));
      rows.append(tr);
    }
    $("computers-none").hidden = (page.items || []).length > 0;
    computersPage.next = page.next_cursor || "";
    $("computers-next").disabled = !computersPage.next;
    $("computers-first").disabled = !computersPage.cursor;
  } catch (err) {
    if (!state.user) return;
    $("computers-error").textContent = t("computers.failed", { reason: err.message });
    $("computers-error").hidden = false;
  }
}

// canChange reports whether the user's role may change things: an
// auditor's console shows no controls that the API would refuse.
const canChange = () => state.role === "admin" || state.role === "operator";

async function alerts() {
  show("alerts");
  $("alerts-error").hidden = true;
  try {
    const page = await api("GET", `/api/v1/alerts?state=${encodeURIComponent($("alerts-state").value)}&limit=500`);
    const rows = $("alerts-rows");
    rows.replaceChildren();
    const df = new Intl.DateTimeFormat(state.lang, { dateStyle: "medium", timeStyle: "short" });
    for (const a of page.items || []) {
      const tr = document.createElement("tr");
      tr.dataset.id = a.id;
      cell(tr, t(`severity.${a.severity}`), `badge ${a.severity}`);
      cell(tr, a.type);
      cell(tr, a.computer_id || "");
      cell(tr, a.message);
      cell(tr, df.format(new Date(a.raised_at)));
      cell(tr, a.acked_at ? t("alerts.ackedBy", { who: a.acked_by, when: df.format(new Date(a.acked_at)) }) : "");
      const td = document.createElement("td");
      if (canChange() && a.open) {
        if (!a.acked_at) td.append(alertButton(a, "ack"));
        td.append(alertButton(a, "clear"));
      }
      tr.append(td);
      rows.append(tr);
    }
    $("alerts-none").hidden = (page.items || []).length > 0;
  } catch (err) {
    if (!state.user) return;
    $("alerts-error").textContent = t("alerts.failed", { reason: err.message });
    $("alerts-error").hidden = false;
  }
}

function alertButton(a, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = `alert-${action}`;
  b.textContent = t(`alerts.${action}`);
  b.addEventListener("click", async () => {
    b.disabled = true;
    try {
      await api("POST", `/api/v1/alerts/${encodeURIComponent(a.id)}/${action}`);
      await alerts();
    } catch (err) {
      $("alerts-error").textContent = t("alerts.actionFailed", { reason: err.message });
      $("alerts-error").hidden = false;
      b.disabled = false;
    }
  });
  return b;
}

function route() {
  if (!state.user) return showLogin();
  switch (location.hash) {
    case "#/computers":
      return computers();
    case "#/alerts":
      return alerts();
    default:
      return dashboard();
  }
}

async function signIn(ev) {
  ev.preventDefault();
  const form = ev.target;
  const err = $("login-error");
  err.hidden = true;
  try {
    const res = await fetch("/console/session", {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-Yagura-Console": "1", "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(new FormData(form)),
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) {
      err.textContent = t("login.failed", { reason: data.error || res.status });
      err.hidden = false;
      return;
    }
    form.reset();
    await signedIn(data);
  } catch {
    err.textContent = t("login.unreachable");
    err.hidden = false;
  }
}

async function signOut() {
  await fetch("/console/session", { method: "DELETE", credentials: "same-origin", headers: { "X-CSRF-Token": state.csrf || "" } });
  showLogin();
}

async function start() {
  $("login-form").addEventListener("submit", signIn);
  $("logout").addEventListener("click", signOut);
  $("lang").addEventListener("change", async (ev) => {
    if (state.user) localStorage.setItem(`yagura.lang.${state.user}`, ev.target.value);
    await loadLanguage(ev.target.value);
    route();
  });
  window.addEventListener("hashchange", route);
  $("computers-filter").addEventListener("submit", (ev) => {
    ev.preventDefault();
    computersPage.cursor = "";
    computers();
  });
  $("alerts-filter").addEventListener("submit", (ev) => {
    ev.preventDefault();
    alerts();
  });
  $("computers-next").addEventListener("click", () => {
    computersPage.cursor = computersPage.next;
    computers();
  });
  $("computers-first").addEventListener("click", () => {
    computersPage.cursor = "";
    computers();
  });
  const res = await fetch("/console/session", { credentials: "same-origin" });
  if (res.ok) {
    await signedIn(await res.json());
  } else {
    await loadLanguage(preferredLanguage(null));
    showLogin();
  }
}

start();
