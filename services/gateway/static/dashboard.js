"use strict";
// One function scope: the /app coordinator page loads app.js beside this file.
(() => {
const POLL_MS = 2000;
const KEY = "zorgpot.token";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
// The page's language is its <html lang>: /dashboard is English, /app/coordinator Dutch (amounts as € 1.234,56).
const NL = document.documentElement.lang === "nl";
const T = NL ? {
  na: "n.v.t.", status: {ok: "binnen budget", warning: "waarschuwing", exceeded: "plafond overschreden"},
  lost: "verbinding verbroken, opnieuw proberen", unavailable: "de budgetcijfers zijn niet beschikbaar",
  retrying: "opnieuw proberen", invalid: "Dit token is niet geldig (of ingetrokken). Voer een coördinatortoken in.",
  forbidden: "Dit overzicht is voor de coördinerende gemeente. Een gemeente leest haar afrekeningen op /app.",
  otherRole: (role, subject) => "Dit overzicht is voor de coördinerende gemeente. Dit is een token van rol " + role +
    " (" + subject + "): open /app.",
  live: "live, bijgewerkt ", noPlan: "geen planning", delivered: " geleverd, nog niets gepland",
  of: " van ", planned: " gepland", plannedToDate: "gepland tot nu ", overForecast: "prognose boven het plafond",
  left: " over", hIn: " u in ", registrations: " registraties", schoolDays: " van de schooldagen",
  time: " van de tijd", to: " t/m ", host: " gastgemeente ", hourUnit: " u", elapsed: "verstreken tijd",
  chart: "uitgaven per week tegen de rechte lijn naar het plafond", pupils: " leerlingen",
  empty: "Nog geen potten: de coördinator maakt arrangementen met PUT /api/v1/arrangements/{id}.",
} : {
  na: "n/a", status: {ok: "within budget", warning: "warning", exceeded: "cap exceeded"},
  lost: "connection lost, retrying", unavailable: "the budget figures are unavailable", retrying: "retrying",
  invalid: "That token is not valid (or it was revoked). Enter a coordinator token.",
  forbidden: "This dashboard is for the coordinating municipality. A municipality token reads its settlement statements instead.",
  otherRole: (role, subject) => "This dashboard is for the coordinating municipality. This is a " + role + " token (" +
    subject + "): a school reads its own pots at /api/v1/pots.",
  live: "live, updated ", noPlan: "no plan", delivered: " delivered, nothing planned to date",
  of: " of ", planned: " planned", plannedToDate: "planned to date ", overForecast: "forecast over the cap",
  left: " left", hIn: " h in ", registrations: " registrations", schoolDays: " of the school days",
  time: " of the time", to: " to ", host: " host ", hourUnit: " h", elapsed: "time elapsed",
  chart: "spending per week against the straight line to the cap", pupils: " pupils",
  empty: "No pots yet: the coordinator creates arrangements with PUT /api/v1/arrangements/{id}.",
};
const EURO = new Intl.NumberFormat("nl-NL", {style: "currency", currency: "EUR"});
// English: the services' own displays (EUR 1,234.56); Dutch: € 1.234,56 from the cents.
const money = (cents, display) => NL ? (cents === null || cents === undefined ? T.na : EURO.format(cents / 100)) :
  (display || T.na);
const num = (x, digits) => NL ? x.toFixed(digits).replace(".", ",") : x.toFixed(digits);
const pct = (x, digits = 1) => x === null || x === undefined ? T.na : num(100 * x, digits) + "%";
const STATUS_TEXT = T.status;
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
    $("state").textContent = T.lost;
    $("state").className = "state stale";
    timer = setTimeout(() => poll(gen), POLL_MS);
    return;
  }
  if (gen !== generation) return;  // logged out, or in again, meanwhile
  if (reply.status === 401) { logout(T.invalid); return; }
  if (reply.status === 403) {
    logout(T.forbidden);
    return;
  }
  const body = reply.ok ? await reply.json().catch(() => null) : null;
  if (gen !== generation) return;
  if (!body) {
    $("state").textContent = T.unavailable + " (" + reply.status + "), " + T.retrying;
    $("state").className = "state stale";
    timer = setTimeout(() => poll(gen), POLL_MS);
    return;
  }
  if (body.viewer.role !== "coordinator") {
    logout(T.otherRole(body.viewer.role, body.viewer.subject));
    return;
  }
  render(body.pots);
  show("board");
  $("state").textContent = T.live + new Date().toLocaleTimeString("nl-NL");
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
  return '<svg class="chart" viewBox="0 0 ' + W + " " + H + '" role="img" aria-label="' + T.chart + '">' +
    '<line class="cap" x1="' + P + '" x2="' + (W - P) + '" y1="' + y(pot.cap_cents) + '" y2="' + y(pot.cap_cents) + '"/>' +
    bars + today +
    '<polyline class="straight" points="' + straight.join(" ") + '"/>' +
    '<polyline class="cum ' + esc(pot.status) + '" points="' + line.join(" ") + '"/>' +
    "</svg>";
}

function groups(pot) {
  const shown = (pot.by_group || []).filter((g) => g.planned_minutes_to_date > 0 || g.delivered_minutes > 0);
  if (!shown.length) return '<span class="meta">' + T.noPlan + '</span>';
  const hours = (m) => num(m / 60, 1) + T.hourUnit;
  return shown.map((g) => {
    const ratio = g.delivery_ratio;
    const low = ratio !== null && ratio < pot.capacity_alert_ratio;
    const fig = ratio === null ? hours(g.delivered_minutes) + T.delivered :
      hours(g.delivered_minutes) + T.of + hours(g.planned_minutes_to_date) + T.planned + " (" + pct(ratio, 0) + ")";
    return '<div class="grp" data-group="' + esc(g.group_id) + '"><b>' + esc(g.group_id) + "</b> " +
      '<span class="gfig' + (low ? " hot" : "") + '">' + fig + "</span>" +
      '<div class="gbar"><div class="gfill' + (low ? " low" : "") + '" style="width:' +
      (100 * Math.min(1, ratio || 0)).toFixed(1) + '%"></div></div></div>';
  }).join("") + (pot.planned_cents > 0 ? '<div class="meta">' + T.plannedToDate +
    esc(money(pot.planned_to_date_cents, pot.planned_to_date_display)) + T.of +
    esc(money(pot.planned_cents, pot.planned_display)) + "</div>" : '<div class="meta">' + T.noPlan + "</div>");
}

function row(pot) {
  const share = pot.cap_cents > 0 ? Math.min(1, pot.spent_cents / pot.cap_cents) : (pot.spent_cents > 0 ? 1 : 0);
  const over = pot.forecast_cents !== null && pot.forecast_cents > pot.cap_cents;
  const burn = pot.burn_ratio === null ? T.na : num(pot.burn_ratio, 2);
  return '<tr class="pot" data-arrangement="' + esc(pot.arrangement_id) + '" data-status="' + esc(pot.status) + '">' +
    '<td><div class="school">' + esc(pot.school_name || pot.school_id) + "</div>" +
    '<div class="meta">' + esc(pot.arrangement_id) + " &middot; " + esc(pot.start) + T.to + esc(pot.end) +
    " &middot;" + T.host + esc(pot.host_municipality) + "</div>" +
    '<span class="chip ' + esc(pot.status) + '">' + esc(STATUS_TEXT[pot.status] || pot.status) + "</span>" +
    (over ? ' <span class="chip pace">' + T.overForecast + "</span>" : "") + "</td>" +
    '<td class="spend"><div class="bar"><div class="fill ' + esc(pot.status) + '" style="width:' + (100 * share).toFixed(2) + '%"></div>' +
    '<div class="elapsed" style="left:' + (100 * pot.elapsed_fraction).toFixed(2) + '%" title="' + T.elapsed + '"></div></div>' +
    '<div class="figs"><b class="spent">' + esc(money(pot.spent_cents, pot.spent_display)) + "</b>" + T.of +
    esc(money(pot.cap_cents, pot.cap_display)) +
    " (" + pct(pot.cap_cents ? pot.spent_cents / pot.cap_cents : null) + ")</div>" +
    '<div class="meta">' + esc(money(pot.remaining_cents, pot.remaining_display)) + T.left + " &middot; " + num(pot.minutes / 60, 1) +
    T.hIn + pot.registrations + T.registrations + " &middot; " + pct(pot.elapsed_fraction) +
    (pot.elapsed_basis === "school_days" ? T.schoolDays : T.time) + "</div></td>" +
    '<td class="num burn' + (pot.burn_ratio > 1 ? " hot" : "") + '">' + burn + "</td>" +
    '<td class="num forecast' + (over ? " hot" : "") + '">' + esc(money(pot.forecast_cents, pot.forecast_display)) + "</td>" +
    '<td class="num savings">' + esc(money(pot.savings_cents, pot.savings_display)) + "</td>" +
    '<td class="num nonres">' + pct(pot.non_resident_share) + '<div class="meta">' + pot.non_resident_pupils + T.of +
    pot.pupils_with_care + T.pupils + "</div></td>" +
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
  $("attention").textContent = pots.filter(attention).length + T.of + pots.length;
  $("rows").innerHTML = pots.length ? pots.map(row).join("") :
    '<tr><td colspan="8" class="empty">' + esc(T.empty) + "</td></tr>";
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
