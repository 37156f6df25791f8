"use strict";
// One function scope: the /app coordinator page loads app.js beside this file.
(() => {
const POLL_MS = 2000;
const KEY = "zorgpot.token";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
// The page's language is its <html lang> (i18n.js, loaded before this file: LANG and _("text") from the gettext
// catalogue): Dutch by default, English with ?lang=en or Accept-Language (amounts as € 1.234,56 in Dutch).
const NL = LANG !== "en";
const EURO = new Intl.NumberFormat("nl-NL", {style: "currency", currency: "EUR"});
// English: the services' own displays (EUR 1,234.56); Dutch: € 1.234,56 from the cents.
const money = (cents, display) => NL ? (cents === null || cents === undefined ? _("n/a") : EURO.format(cents / 100)) :
  (display || _("n/a"));
const num = (x, digits) => NL ? x.toFixed(digits).replace(".", ",") : x.toFixed(digits);
const pct = (x, digits = 1) => x === null || x === undefined ? _("n/a") : num(100 * x, digits) + "%";
const STATUS_TEXT = {ok: _("within budget"), warning: _("warning"), exceeded: _("cap exceeded")};
let timer = null;
let generation = 0;  // each login/logout starts a new one; older polls stop when they notice

function takeFragmentToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function show(view, message) {
  $("login").hidden = view !== "login";
  $("board").hidden = view !== "board";
  $("notice").hidden = !message;
  $("notice").textContent = message || "";
}

function logout(message) {
  sessionStorage.removeItem(KEY);
  clearTimeout(timer);
  generation += 1;
  show("login", message);
}

function restart() {
  clearTimeout(timer);
  generation += 1;
  poll(generation);
}

async function poll(gen) {
  const token = sessionStorage.getItem(KEY);
  if (!token) { show("login"); return; }
  let reply;
  try {
    reply = await fetch("/api/v1/pots", {headers: {"Authorization": "Bearer " + token}, cache: "no-store",
                                         signal: AbortSignal.timeout(10000)});
  } catch (err) {
    if (gen !== generation) return;
    $("state").textContent = _("connection lost, retrying");
    $("state").className = "state stale";
    timer = setTimeout(() => poll(gen), POLL_MS);
    return;
  }
  if (gen !== generation) return;  // logged out, or in again, meanwhile
  if (reply.status === 401) { logout(_("That token is not valid (or it was revoked). Enter a coordinator token.")); return; }
  if (reply.status === 403) {
    logout(_("This dashboard is for the coordinating municipality. A municipality token reads its settlement statements instead."));
    return;
  }
  const body = reply.ok ? await reply.json().catch(() => null) : null;
  if (gen !== generation) return;
  if (!body) {
    $("state").textContent = _("the budget figures are unavailable ({status}), retrying", {status: reply.status});
    $("state").className = "state stale";
    timer = setTimeout(() => poll(gen), POLL_MS);
    return;
  }
  if (body.viewer.role !== "coordinator") {
    logout(_("This dashboard is for the coordinating municipality. This is a {role} token ({subject}): a school reads its own pots at /api/v1/pots.",
                 {role: body.viewer.role, subject: body.viewer.subject}));
    return;
  }
  render(body.pots);
  show("board");
  $("state").textContent = _("live, updated {time}", {time: new Date().toLocaleTimeString(LOCALE)});
  $("state").className = "state live";
  timer = setTimeout(() => poll(gen), POLL_MS);
}

function chart(pot) {
  const W = 300, H = 96, P = 4;
  const weeks = pot.weekly;
  const top = Math.max(pot.cap_cents, ...weeks.map((w) => w.cumulative_cents || 0), 1);
  const weeklyTop = Math.max(...weeks.map((w) => w.spent_cents || 0), 1);
  const x = (i) => P + (W - 2 * P) * (weeks.length > 1 ? i / (weeks.length - 1) : 0);
  const y = (c) => H - P - (H - 2 * P) * c / top;
  const bw = Math.max(1, (W - 2 * P) / Math.max(weeks.length, 1) - 1);
  let bars = "", line = [], straight = [];
  weeks.forEach((w, i) => {
    straight.push(x(i).toFixed(1) + "," + y(w.straight_line_cents).toFixed(1));
    if (w.cumulative_cents !== null) line.push(x(i).toFixed(1) + "," + y(w.cumulative_cents).toFixed(1));
    if (w.spent_cents) {
      const h = (H - 2 * P) * 0.35 * w.spent_cents / weeklyTop;
      bars += '<rect class="wk" x="' + (x(i) - bw / 2).toFixed(1) + '" y="' + (H - P - h).toFixed(1) + '" width="' +
              bw.toFixed(1) + '" height="' + h.toFixed(1) + '"><title>' + esc(w.week) + ": " + esc(money(w.spent_cents, "EUR " +
              (w.spent_cents / 100).toFixed(2))) + "</title></rect>";
    }
  });
  const now = weeks.map((w) => w.cumulative_cents !== null).lastIndexOf(true);
  const today = now >= 0 && now < weeks.length - 1 ?
    '<line class="today" x1="' + x(now) + '" x2="' + x(now) + '" y1="' + P + '" y2="' + (H - P) + '"/>' : "";
  return '<svg class="chart" viewBox="0 0 ' + W + " " + H + '" role="img" aria-label="' + esc(_("spending per week against the straight line to the cap")) + '">' +
    '<line class="cap" x1="' + P + '" x2="' + (W - P) + '" y1="' + y(pot.cap_cents) + '" y2="' + y(pot.cap_cents) + '"/>' +
    bars + today +
    '<polyline class="straight" points="' + straight.join(" ") + '"/>' +
    '<polyline class="cum ' + esc(pot.status) + '" points="' + line.join(" ") + '"/>' +
    "</svg>";
}

function groups(pot) {
  const shown = (pot.by_group || []).filter((g) => g.planned_minutes_to_date > 0 || g.delivered_minutes > 0);
  if (!shown.length) return '<span class="meta">' + esc(_("no plan")) + '</span>';
  const hours = (m) => _("{hours} h", {hours: num(m / 60, 1)});
  return shown.map((g) => {
    const ratio = g.delivery_ratio;
    const low = ratio !== null && ratio < pot.capacity_alert_ratio;
    const fig = ratio === null ? _("{delivered} delivered, nothing planned to date", {delivered: hours(g.delivered_minutes)}) :
      _("{delivered} of {planned} planned ({percent})", {delivered: hours(g.delivered_minutes), planned: hours(g.planned_minutes_to_date),
                                                         percent: pct(ratio, 0)});
    return '<div class="grp" data-group="' + esc(g.group_id) + '"><b>' + esc(g.group_id) + "</b> " +
      '<span class="gfig' + (low ? " hot" : "") + '">' + fig + "</span>" +
      '<div class="gbar"><div class="gfill' + (low ? " low" : "") + '" style="width:' +
      (100 * Math.min(1, ratio || 0)).toFixed(1) + '%"></div></div></div>';
  }).join("") + (pot.planned_cents > 0 ? '<div class="meta">' + esc(_("planned to date {to_date} of {planned}", {
    to_date: money(pot.planned_to_date_cents, pot.planned_to_date_display), planned: money(pot.planned_cents, pot.planned_display)})) +
    "</div>" : '<div class="meta">' + esc(_("no plan")) + "</div>");
}

function row(pot) {
  const share = pot.cap_cents > 0 ? Math.min(1, pot.spent_cents / pot.cap_cents) : (pot.spent_cents > 0 ? 1 : 0);
  const over = pot.forecast_cents !== null && pot.forecast_cents > pot.cap_cents;
  const burn = pot.burn_ratio === null ? _("n/a") : num(pot.burn_ratio, 2);
  return '<tr class="pot" data-arrangement="' + esc(pot.arrangement_id) + '" data-status="' + esc(pot.status) + '">' +
    '<td><div class="school">' + esc(pot.school_name || pot.school_id) + "</div>" +
    '<div class="meta">' + esc(pot.arrangement_id) + " &middot; " + esc(_("{start} to {end}", {start: pot.start, end: pot.end})) +
    " &middot; " + esc(_("host {municipality}", {municipality: pot.host_municipality})) + "</div>" +
    '<span class="chip ' + esc(pot.status) + '">' + esc(STATUS_TEXT[pot.status] || pot.status) + "</span>" +
    (over ? ' <span class="chip pace">' + esc(_("forecast over the cap")) + "</span>" : "") + "</td>" +
    '<td class="spend"><div class="bar"><div class="fill ' + esc(pot.status) + '" style="width:' + (100 * share).toFixed(2) + '%"></div>' +
    '<div class="elapsed" style="left:' + (100 * pot.elapsed_fraction).toFixed(2) + '%" title="' + esc(_("time elapsed")) + '"></div></div>' +
    '<div class="figs"><b class="spent">' + esc(money(pot.spent_cents, pot.spent_display)) + "</b>" + esc(_(" of {cap}", {cap: money(pot.cap_cents, pot.cap_display)})) +
    " (" + pct(pot.cap_cents ? pot.spent_cents / pot.cap_cents : null) + ")</div>" +
    '<div class="meta">' + esc(_("{remaining} left", {remaining: money(pot.remaining_cents, pot.remaining_display)})) + " &middot; " +
    esc(_("{hours} h in {n} registrations", {hours: num(pot.minutes / 60, 1), n: pot.registrations})) + " &middot; " +
    esc(pot.elapsed_basis === "school_days" ? _("{percent} of the school days", {percent: pct(pot.elapsed_fraction)}) :
      _("{percent} of the time", {percent: pct(pot.elapsed_fraction)})) + "</div></td>" +
    '<td class="num burn' + (pot.burn_ratio > 1 ? " hot" : "") + '">' + burn + "</td>" +
    '<td class="num forecast' + (over ? " hot" : "") + '">' + esc(money(pot.forecast_cents, pot.forecast_display)) + "</td>" +
    '<td class="num savings">' + esc(money(pot.savings_cents, pot.savings_display)) + "</td>" +
    '<td class="num nonres">' + pct(pot.non_resident_share) + '<div class="meta">' +
    esc(_("{n} of {total} pupils", {n: pot.non_resident_pupils, total: pot.pupils_with_care})) + "</div></td>" +
    '<td class="groups">' + groups(pot) + "</td>" +
    "<td>" + chart(pot) + "</td></tr>";
}

function render(pots) {
  const sum = (k) => pots.reduce((a, p) => a + (p[k] || 0), 0);
  const euro = (c) => NL ? EURO.format(c / 100) :
    "EUR " + (c / 100).toLocaleString("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2});
  $("total-cap").textContent = euro(sum("cap_cents"));
  $("total-spent").textContent = euro(sum("spent_cents"));
  $("total-savings").textContent = euro(sum("savings_cents"));
  const attention = (p) => p.status !== "ok" || (p.forecast_cents !== null && p.forecast_cents > p.cap_cents);
  $("attention").textContent = _("{n} of {total}", {n: pots.filter(attention).length, total: pots.length});
  $("rows").innerHTML = pots.length ? pots.map(row).join("") :
    '<tr><td colspan="8" class="empty">' + esc(_("No pots yet: the coordinator creates arrangements with PUT /api/v1/arrangements/{id}.")) + "</td></tr>";
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(KEY, token);
  $("token").value = "";
  restart();
});
$("logout").addEventListener("click", () => logout());
takeFragmentToken();
restart();
})();
