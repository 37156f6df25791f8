"use strict";
// Shared by the /app pages: the token (sessionStorage: this tab only), calls to the JSON API with it, formatting.
const KEY = "zorgpot.token";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
// i18n.js before this file: LANG, _("text") and LOCALE (amounts € 1.234,56 in Dutch, €1,234.56 in English).
const EUR = new Intl.NumberFormat(LOCALE, {style: "currency", currency: "EUR"});
const euro = (cents) => cents === null || cents === undefined ? _("n/a") : EUR.format(cents / 100);
const ROLE_TEXT = {coordinator: _("coordinator"), school: _("school"), municipality: _("municipality"), funder: _("funder"),
                   board: _("school board")};

function token() { return sessionStorage.getItem(KEY); }

function leave(message) {
  sessionStorage.removeItem(KEY);
  location.replace(pageUrl("/app") + (message ? "#message=" + encodeURIComponent(message) : ""));
}

// fetch under /api/v1 with the token; 401 sends the user back to the login form.
async function api(path, options = {}) {
  const headers = Object.assign({"Authorization": "Bearer " + token()}, options.headers || {});
  const reply = await fetch("/api/v1" + path, Object.assign({cache: "no-store"}, options, {headers}));
  if (reply.status === 401) leave(_("This token is not valid (any more). Log in again."));
  return reply;
}

async function json(path, options) {
  const reply = await api(path, options);
  const body = await reply.json().catch(() => null);
  if (!reply.ok) throw new Error(detail(reply.status, body));
  return body;
}

function detail(status, body) {
  const d = body && body.detail;
  if (Array.isArray(d)) return status + ": " + d.map((e) => (e.field ? e.field + ": " : "") + (e.msg || e.message)).join("; ");
  return status + ": " + (typeof d === "string" ? d : _("the server could not handle this"));
}

// A document (PDF, CSV) in the page's language, fetched with the token and saved under the server's file name.
async function download(path, fallbackName) {
  const reply = await api(withLang(path));
  if (!reply.ok) throw new Error(detail(reply.status, await reply.json().catch(() => null)));
  const name = (/filename="([^"]+)"/.exec(reply.headers.get("content-disposition") || "") || [])[1] || fallbackName;
  const url = URL.createObjectURL(await reply.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  return name;
}

// The page's message line (#message): an error, or with `good` a confirmation.
function notice(message, good) {
  $("message").hidden = !message;
  $("message").textContent = message || "";
  $("message").className = "notice" + (good ? " good" : "");
}

// A download button: <button data-path="/statements/ID?format=pdf" data-name="fallback file name">.
function downloadButton(kind, format, path, name) {
  return '<button class="link" type="button" ' + kind + '="' + format + '" data-path="' + esc(path) + '" data-name="' +
    esc(name) + '">' + format.toUpperCase() + "</button>";
}

document.addEventListener("click", (e) => {
  const button = e.target.closest("[data-path]");
  if (!button) return;
  download(button.dataset.path, button.dataset.name)
    .then((name) => notice(_("{name} has been downloaded.", {name}), true))
    .catch((err) => notice(_("The download failed: {error}", {error: err.message})));
});

function chip(status, text) { return '<span class="chip ' + esc(status) + '">' + esc(text || status) + "</span>"; }

function potRow(pot) {
  const share = pot.cap_cents > 0 ? Math.min(1, pot.spent_cents / pot.cap_cents) : 0;
  const status = {ok: _("within budget"), warning: _("warning"), exceeded: _("cap exceeded")}[pot.status] || pot.status;
  return '<tr class="pot" data-arrangement="' + esc(pot.arrangement_id) + '"><td><b>' + esc(pot.arrangement_id) +
    '</b><div class="meta">' + esc(_("{start} to {end}", {start: pot.start, end: pot.end})) + "</div></td>" +
    "<td>" + chip(pot.status, status) + "</td>" +
    '<td><div class="bar"><div class="fill ' + esc(pot.status) + '" style="width:' + (100 * share).toFixed(1) +
    '%"></div></div></td><td class="num">' + euro(pot.spent_cents) + '</td><td class="num">' + euro(pot.cap_cents) +
    '</td><td class="num">' + euro(pot.remaining_cents) + '</td><td class="num">' + pot.registrations + "</td></tr>";
}

// Every page but /app itself: without a token, back to the login form; the header's log-out button.
function page() {
  if (!token()) { leave(); return false; }
  $("logout").addEventListener("click", () => leave());
  return true;
}
