"""Gateway routes: the coordinating municipality's live budget dashboard at GET /dashboard.

One self-contained page (inline CSS and JavaScript, nothing from elsewhere: the machines have no internet).
The page itself holds no data: it asks for a coordinator token, keeps it in sessionStorage (gone when the tab
closes), and polls GET /api/v1/pots every 2 s with it. A token can also be handed over in the URL fragment
(`/dashboard#token=...`; the fragment never reaches the server, and the page removes it at once). A school
token (which may read only its own pots) or a municipality token gets a message saying the dashboard is for
the coordinator. The page is served with a Content-Security-Policy that allows only its own script.
"""
from __future__ import annotations

import base64
import hashlib

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()

POLL_MS = 2000

_SCRIPT = r"""
"use strict";
const POLL_MS = %(poll_ms)d;
const KEY = "zorgpot.token";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const pct = (x, digits = 1) => x === null || x === undefined ? "n/a" : (100 * x).toFixed(digits) + "%%";
const STATUS_TEXT = {ok: "within budget", warning: "warning", exceeded: "cap exceeded"};
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
    $("state").textContent = "connection lost, retrying";
    $("state").className = "state stale";
    timer = setTimeout(() => poll(gen), POLL_MS);
    return;
  }
  if (gen !== generation) return;  // logged out, or in again, meanwhile
  if (reply.status === 401) { logout("That token is not valid (or it was revoked). Enter a coordinator token."); return; }
  if (reply.status === 403) {
    logout("This dashboard is for the coordinating municipality. A municipality token reads its settlement statements instead.");
    return;
  }
  const body = reply.ok ? await reply.json().catch(() => null) : null;
  if (gen !== generation) return;
  if (!body) {
    $("state").textContent = "the budget figures are unavailable (" + reply.status + "), retrying";
    $("state").className = "state stale";
    timer = setTimeout(() => poll(gen), POLL_MS);
    return;
  }
  if (body.viewer.role !== "coordinator") {
    logout("This dashboard is for the coordinating municipality. This is a " + body.viewer.role + " token (" +
           body.viewer.subject + "): a school reads its own pots at /api/v1/pots.");
    return;
  }
  render(body.pots);
  show("board");
  $("state").textContent = "live, updated " + new Date().toLocaleTimeString("nl-NL");
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
              bw.toFixed(1) + '" height="' + h.toFixed(1) + '"><title>' + esc(w.week) + ": EUR " +
              (w.spent_cents / 100).toFixed(2) + "</title></rect>";
    }
  });
  const now = weeks.map((w) => w.cumulative_cents !== null).lastIndexOf(true);
  const today = now >= 0 && now < weeks.length - 1 ?
    '<line class="today" x1="' + x(now) + '" x2="' + x(now) + '" y1="' + P + '" y2="' + (H - P) + '"/>' : "";
  return '<svg class="chart" viewBox="0 0 ' + W + " " + H + '" role="img" aria-label="spending per week against the straight line to the cap">' +
    '<line class="cap" x1="' + P + '" x2="' + (W - P) + '" y1="' + y(pot.cap_cents) + '" y2="' + y(pot.cap_cents) + '"/>' +
    bars + today +
    '<polyline class="straight" points="' + straight.join(" ") + '"/>' +
    '<polyline class="cum ' + esc(pot.status) + '" points="' + line.join(" ") + '"/>' +
    "</svg>";
}

function groups(pot) {
  const shown = (pot.by_group || []).filter((g) => g.planned_minutes_to_date > 0 || g.delivered_minutes > 0);
  if (!shown.length) return '<span class="meta">no plan</span>';
  const hours = (m) => (m / 60).toFixed(1) + " h";
  return shown.map((g) => {
    const ratio = g.delivery_ratio;
    const low = ratio !== null && ratio < pot.capacity_alert_ratio;
    const fig = ratio === null ? hours(g.delivered_minutes) + " delivered, nothing planned to date" :
      hours(g.delivered_minutes) + " of " + hours(g.planned_minutes_to_date) + " planned (" + pct(ratio, 0) + ")";
    return '<div class="grp" data-group="' + esc(g.group_id) + '"><b>' + esc(g.group_id) + "</b> " +
      '<span class="gfig' + (low ? " hot" : "") + '">' + fig + "</span>" +
      '<div class="gbar"><div class="gfill' + (low ? " low" : "") + '" style="width:' +
      (100 * Math.min(1, ratio || 0)).toFixed(1) + '%%"></div></div></div>';
  }).join("") + (pot.planned_cents > 0 ? '<div class="meta">planned to date ' + esc(pot.planned_to_date_display) +
    " of " + esc(pot.planned_display) + "</div>" : '<div class="meta">no plan</div>');
}

function row(pot) {
  const share = pot.cap_cents > 0 ? Math.min(1, pot.spent_cents / pot.cap_cents) : (pot.spent_cents > 0 ? 1 : 0);
  const over = pot.forecast_cents !== null && pot.forecast_cents > pot.cap_cents;
  const burn = pot.burn_ratio === null ? "n/a" : pot.burn_ratio.toFixed(2);
  return '<tr class="pot" data-arrangement="' + esc(pot.arrangement_id) + '" data-status="' + esc(pot.status) + '">' +
    '<td><div class="school">' + esc(pot.school_name || pot.school_id) + "</div>" +
    '<div class="meta">' + esc(pot.arrangement_id) + " &middot; " + esc(pot.start) + " to " + esc(pot.end) +
    " &middot; host " + esc(pot.host_municipality) + "</div>" +
    '<span class="chip ' + esc(pot.status) + '">' + esc(STATUS_TEXT[pot.status] || pot.status) + "</span>" +
    (over ? ' <span class="chip pace">forecast over the cap</span>' : "") + "</td>" +
    '<td class="spend"><div class="bar"><div class="fill ' + esc(pot.status) + '" style="width:' + (100 * share).toFixed(2) + '%%"></div>' +
    '<div class="elapsed" style="left:' + (100 * pot.elapsed_fraction).toFixed(2) + '%%" title="time elapsed"></div></div>' +
    '<div class="figs"><b class="spent">' + esc(pot.spent_display) + "</b> of " + esc(pot.cap_display) +
    " (" + pct(pot.cap_cents ? pot.spent_cents / pot.cap_cents : null) + ")</div>" +
    '<div class="meta">' + esc(pot.remaining_display) + " left &middot; " + (pot.minutes / 60).toFixed(1) +
    " h in " + pot.registrations + " registrations &middot; " + pct(pot.elapsed_fraction) +
    (pot.elapsed_basis === "school_days" ? " of the school days" : " of the time") + "</div></td>" +
    '<td class="num burn' + (pot.burn_ratio > 1 ? " hot" : "") + '">' + burn + "</td>" +
    '<td class="num forecast' + (over ? " hot" : "") + '">' + esc(pot.forecast_display || "n/a") + "</td>" +
    '<td class="num savings">' + esc(pot.savings_display || "n/a") + "</td>" +
    '<td class="num nonres">' + pct(pot.non_resident_share) + '<div class="meta">' + pot.non_resident_pupils + " of " +
    pot.pupils_with_care + " pupils</div></td>" +
    '<td class="groups">' + groups(pot) + "</td>" +
    "<td>" + chart(pot) + "</td></tr>";
}

function render(pots) {
  const sum = (k) => pots.reduce((a, p) => a + (p[k] || 0), 0);
  const euro = (c) => "EUR " + (c / 100).toLocaleString("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2});
  $("total-cap").textContent = euro(sum("cap_cents"));
  $("total-spent").textContent = euro(sum("spent_cents"));
  $("total-savings").textContent = euro(sum("savings_cents"));
  const attention = (p) => p.status !== "ok" || (p.forecast_cents !== null && p.forecast_cents > p.cap_cents);
  $("attention").textContent = pots.filter(attention).length + " of " + pots.length;
  $("rows").innerHTML = pots.length ? pots.map(row).join("") :
    '<tr><td colspan="8" class="empty">No pots yet: the coordinator creates arrangements with PUT /api/v1/arrangements/{id}.</td></tr>';
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
""" % {"poll_ms": POLL_MS}

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Zorgpot: budget pots</title>
<style>
  :root { --ok: #2e7d32; --warning: #f9a825; --exceeded: #c62828; --ink: #1d2733; --muted: #5f6b7a; --line: #dde3ea; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, "DejaVu Sans", sans-serif; color: var(--ink); background: #f4f6f9; }
  header { display: flex; align-items: center; gap: 16px; padding: 14px 24px; background: #17324d; color: #fff; }
  header h1 { font-size: 18px; margin: 0; font-weight: 600; }
  header .state { margin-left: auto; font-size: 12px; padding: 3px 10px; border-radius: 10px; }
  .state.live { background: #2e7d32; } .state.stale { background: #c62828; }
  header button { background: transparent; color: #fff; border: 1px solid #8aa4bf; border-radius: 4px; padding: 4px 10px; cursor: pointer; }
  main { padding: 20px 24px; }
  #notice { margin: 0 0 16px; padding: 12px 16px; border-left: 4px solid var(--exceeded); background: #fff3f3; }
  #login { max-width: 460px; margin: 48px auto; background: #fff; padding: 24px; border-radius: 8px; box-shadow: 0 1px 3px #0002; }
  #login h2 { margin-top: 0; font-size: 17px; }
  #login input { width: 100%%; padding: 8px; font: inherit; border: 1px solid #b8c2cc; border-radius: 4px; }
  #login button { margin-top: 12px; padding: 8px 18px; font: inherit; background: #17324d; color: #fff; border: 0; border-radius: 4px; cursor: pointer; }
  .cards { display: flex; gap: 12px; margin-bottom: 16px; }
  .card { flex: 1; background: #fff; border-radius: 8px; padding: 10px 14px; box-shadow: 0 1px 2px #0001; }
  .card .label { color: var(--muted); font-size: 12px; } .card .value { font-size: 20px; font-weight: 600; }
  table { width: 100%%; border-collapse: collapse; background: #fff; border-radius: 8px; overflow: hidden; box-shadow: 0 1px 2px #0001; }
  th { text-align: left; font-size: 12px; color: var(--muted); font-weight: 600; padding: 8px 12px; border-bottom: 1px solid var(--line); }
  td { padding: 12px; border-bottom: 1px solid var(--line); vertical-align: middle; }
  .num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
  .hot { color: var(--exceeded); font-weight: 600; }
  .school { font-weight: 600; } .meta { color: var(--muted); font-size: 12px; }
  .chip { display: inline-block; margin-top: 4px; padding: 1px 8px; border-radius: 9px; font-size: 12px; color: #fff; }
  .chip.ok, .fill.ok { background: var(--ok); } .chip.warning, .fill.warning { background: var(--warning); }
  .chip.exceeded, .fill.exceeded { background: var(--exceeded); } .chip.warning { color: #1d2733; }
  .chip.pace { background: #fff; color: var(--exceeded); border: 1px solid var(--exceeded); }
  .spend { min-width: 260px; }
  .bar { position: relative; height: 16px; background: #e6ebf0; border-radius: 4px; overflow: hidden; }
  .fill { height: 100%%; }
  .elapsed { position: absolute; top: 0; bottom: 0; width: 2px; background: #17324d; }
  .figs { margin-top: 4px; }
  .chart { width: 300px; height: 96px; display: block; }
  .chart .cap { stroke: var(--exceeded); stroke-dasharray: 4 3; stroke-width: 1; }
  .chart .straight { fill: none; stroke: #8a96a3; stroke-dasharray: 5 3; stroke-width: 1.5; }
  .chart .cum { fill: none; stroke-width: 2.5; }
  .chart .cum.ok { stroke: var(--ok); } .chart .cum.warning { stroke: var(--warning); } .chart .cum.exceeded { stroke: var(--exceeded); }
  .chart .wk { fill: #9fc3e6; }
  .chart .today { stroke: #17324d; stroke-width: 1; stroke-dasharray: 2 2; }
  .legend { color: var(--muted); font-size: 12px; margin-top: 10px; }
  .empty { color: var(--muted); text-align: center; }
  .groups { min-width: 190px; max-width: 230px; } .grp { margin-bottom: 6px; }
  .figs { white-space: nowrap; }
  .gbar { height: 6px; background: #e6ebf0; border-radius: 3px; overflow: hidden; margin-top: 2px; }
  .gfill { height: 100%%; background: #3b7dbf; } .gfill.low { background: var(--exceeded); }
</style>
</head>
<body>
<header><h1>Zorgpot &middot; budget pots</h1><span id="state" class="state"></span>
  <button id="logout" type="button">Log out</button></header>
<main>
  <p id="notice" role="alert" hidden></p>
  <form id="login" hidden>
    <h2>Coordinating municipality</h2>
    <p>Enter a coordinator token to see every pot live. The token stays in this browser tab only.</p>
    <input id="token" type="password" autocomplete="off" placeholder="zp_..." aria-label="coordinator token">
    <button type="submit">Show the pots</button>
  </form>
  <section id="board" hidden>
    <div class="cards">
      <div class="card"><div class="label">Total cap</div><div class="value" id="total-cap"></div></div>
      <div class="card"><div class="label">Total spent</div><div class="value" id="total-spent"></div></div>
      <div class="card"><div class="label">Savings against individual decisions</div><div class="value" id="total-savings"></div></div>
      <div class="card"><div class="label">Pots needing attention (status or forecast)</div><div class="value" id="attention"></div></div>
    </div>
    <table>
      <thead><tr><th>Pot</th><th>Spent against the cap (marker: time elapsed)</th><th class="num">Burn ratio</th>
        <th class="num">Forecast</th><th class="num">Savings</th><th class="num">Non-resident</th>
        <th>Delivered against planned care per group, to date</th>
        <th>Spending per week, cumulative line against the straight line to the cap</th></tr></thead>
      <tbody id="rows"></tbody>
    </table>
    <p class="legend">Burn ratio: share of the cap spent divided by share of the time passed (above 1 spends faster than
      the straight line). Forecast: spent divided by the time passed. Savings: the same minutes at the individual rate
      minus what was spent. Non-resident: share of care minutes for pupils living outside the host municipality, and
      how many of the pupils with care live elsewhere. Per group: care hours delivered against the hours planned up to
      today (red below the pot's capacity alert ratio); with a school calendar the time counts school days.
      Chart: bars are each week's spending, the solid line the running total, the grey dashed line the straight
      line from nothing at the start to the cap (red dashed) at the end, the dotted line this week.</p>
  </section>
</main>
<script>%(script)s</script>
</body>
</html>
"""

PAGE = _PAGE % {"script": _SCRIPT}
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": f"default-src 'none'; script-src 'sha256-{_SCRIPT_HASH}'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; img-src 'self' data:; form-action 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
async def dashboard() -> HTMLResponse:
    return HTMLResponse(PAGE, headers=HEADERS)
