"use strict";
// /app/coordinator: beside the pots board (dashboard.js), closing a period, the statements with their webhook
// deliveries, alerts read from the pots' figures, and the open dead letters.
let arrangements = [];

// Signals the pots' figures carry: budget status, forecast over the cap, groups short of planned care,
// non-resident share over the pot's threshold.
function alertsOf(pots) {
  const out = [];
  for (const p of pots) {
    const name = p.arrangement_id + " (" + (p.school_name || p.school_id) + ")";
    if (p.status === "exceeded") out.push(["exceeded", _("{pot}: cap exceeded, {spent} of {cap}", {pot: name, spent: euro(p.spent_cents), cap: euro(p.cap_cents)})]);
    else if (p.status === "warning") out.push(["warning", _("{pot}: warning threshold reached, {spent} of {cap}", {pot: name, spent: euro(p.spent_cents), cap: euro(p.cap_cents)})]);
    if (p.forecast_cents !== null && p.forecast_cents > p.cap_cents) out.push(["warning", _("{pot}: forecast {forecast} over the cap", {pot: name, forecast: euro(p.forecast_cents)})]);
    for (const g of p.by_group || []) {
      if (g.delivery_ratio !== null && g.delivery_ratio !== undefined && g.delivery_ratio < p.capacity_alert_ratio) {
        out.push(["warning", _("{pot}: group {group} got {percent}% of the planned care", {pot: name, group: g.group_id, percent: Math.round(100 * g.delivery_ratio)})]);
      }
    }
    if (p.non_resident_alert_share !== null && p.non_resident_alert_share !== undefined && p.non_resident_share !== null &&
        p.non_resident_share > p.non_resident_alert_share) {
      out.push(["warning", _("{pot}: {percent}% of the care for pupils from outside the host municipality", {pot: name, percent: Math.round(100 * p.non_resident_share)})]);
    }
  }
  return out;
}

async function showPotsPanels() {
  const reply = await api("/pots");
  if (!reply.ok) return;
  const pots = (await reply.json()).pots;
  const alerts = alertsOf(pots);
  $("alerts").innerHTML = alerts.length ? alerts.map(([level, text]) => "<li>" + chip(level, level === "exceeded" ? _("exceeded") : _("attention")) +
    " " + esc(text) + "</li>").join("") : '<li class="empty">' + esc(_("No alerts.")) + "</li>";
  const ids = pots.map((p) => p.arrangement_id);
  if (ids.join() !== arrangements.join()) {
    const chosen = $("close-arrangement").value;
    arrangements = ids;
    $("close-arrangement").innerHTML = pots.map((p) => '<option value="' + esc(p.arrangement_id) + '">' +
      esc(p.arrangement_id) + " (" + esc(p.school_name || p.school_id) + ")</option>").join("");
    if (ids.includes(chosen)) $("close-arrangement").value = chosen;
    $("report-arrangements").innerHTML = $("close-arrangement").innerHTML;
  }
}

async function showAllStatements() {
  const [statements, deliveries] = await Promise.all([json("/statements"), json("/webhooks/deliveries")]);
  $("statements").tBodies[0].innerHTML = await statementRows(statements, new Map(deliveries.map((d) => [d.statement_id, d])));
}

async function showDeadletters() {
  const found = (await json("/deadletters?status=open")).deadletters;
  $("deadletters").tBodies[0].innerHTML = found.length ? found.map((d) => '<tr data-deadletter="' + esc(d.id) + '"><td><code>' +
    esc(d.id) + "</code></td><td>" + chip(d.status) + "</td><td>" + esc(d.topic || d.source_topic || "") +
    (d.partition !== undefined ? ' <span class="meta">' + esc(_("partition {partition}, offset {offset}", {partition: d.partition, offset: d.offset})) + "</span>" : "") +
    "</td><td>" + esc(d.reason) + "</td><td>" + esc(d.created_at ? new Date(d.created_at).toLocaleString(LOCALE) : "") +
    '</td><td><button class="link" type="button" data-retry="' + esc(d.id) + '">' + esc(_("retry")) + "</button></td></tr>").join("") :
    '<tr><td colspan="6" class="empty">' + esc(_("No open dead letters.")) + "</td></tr>";
}

const KIND_TEXT = {quarterly: _("quarterly"), annual: _("annual"), final: _("final")};

async function showReports() {
  const reports = (await json("/reports")).reports;
  $("reports").tBodies[0].innerHTML = reports.length ? reports.map((r) => '<tr data-report="' + esc(r.report_id) +
    '"><td><code>' + esc(r.report_id) + "</code></td><td>" + esc(KIND_TEXT[r.kind] || r.kind) + "</td><td>" +
    esc(_("{start} to {end}", {start: day(r.period_start), end: day(r.period_end)})) + "</td><td>" + esc(r.arrangement_ids.join(", ")) +
    "</td><td>" + esc(day(r.issued_on)) + "</td><td>" +
    ["pdf", "csv"].map((f) => downloadButton("data-report-download", f, "/reports/" + encodeURIComponent(r.report_id) +
      "?format=" + f, r.report_id + "." + f)).join("") + "</td></tr>").join("") :
    '<tr><td colspan="6" class="empty">' + esc(_("No reports yet.")) + "</td></tr>";
}

// POST `body` as JSON with the button disabled meanwhile: {reply, answer}, or {} after a refusal said on the page.
async function submit(buttonId, path, body, failed) {
  $(buttonId).disabled = true;
  try {
    const reply = await api(path, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    const answer = await reply.json().catch(() => null);
    if (reply.ok) return {reply, answer};
    notice(failed + detail(reply.status, answer));
    return {};
  } catch (err) {
    notice(failed + err.message);
    return {};
  } finally {
    $(buttonId).disabled = false;
  }
}

async function issueReport(e) {
  e.preventDefault();
  const body = {kind: $("report-kind").value,
                arrangement_ids: Array.from($("report-arrangements").selectedOptions).map((o) => o.value)};
  const period = $("report-period").value.trim();
  if (period) body.period = period;
  const {reply, answer} = await submit("report-button", "/reports", body, _("The report could not be issued: "));
  if (!reply) return;
  notice(reply.status === 201 ? _("Report issued: {id}.", {id: answer.report_id}) :
         _("This report existed already: {id}.", {id: answer.report_id}), true);
  await showReports();
}

async function closePeriod(e) {
  e.preventDefault();
  const body = {arrangement_id: $("close-arrangement").value, period_start: $("close-start").value,
                period_end: $("close-end").value};
  const {reply, answer} = await submit("close-button", "/settlements/close", body, _("Closing failed: "));
  if (!reply) return;
  const statements = answer.statements || [];
  $("closed").hidden = false;
  $("closed-statements").tBodies[0].innerHTML = statements.length ? statements.map((s) =>
    '<tr data-statement="' + esc(s.statement_id) + '"><td><code>' + esc(s.statement_id) + "</code></td><td>" +
    esc(s.funder || s.municipality) + '</td><td class="num">' + euro(s.total_cents) + "</td><td>" +
    statementDownloads(s.statement_id) + "</td></tr>").join("") :
    '<tr><td colspan="4" class="empty">' + esc(_("No statements: there was no care in this period.")) + "</td></tr>";
  notice((reply.status === 201 ? _("Period closed: {n} statements.", {n: statements.length}) :
          _("This period was closed already: {n} statements.", {n: statements.length})), true);
  await showAllStatements();
}

document.addEventListener("click", (e) => {
  const button = e.target.closest("[data-retry]");
  if (!button) return;
  json("/deadletters/" + encodeURIComponent(button.dataset.retry) + "/retry", {method: "POST"})
    .then(() => notice(_("Dead letter {id} has been processed again.", {id: button.dataset.retry}), true))
    .catch((err) => notice(_("The retry failed: {error}", {error: err.message})))
    .finally(showDeadletters);
});

async function refresh() {
  if (!token()) return;
  await Promise.all([showPotsPanels(), showAllStatements(), showDeadletters(), showReports()]).catch((err) => notice(err.message));
}

$("close").addEventListener("submit", (e) => closePeriod(e).catch((err) => notice(err.message)));
$("report").addEventListener("submit", (e) => issueReport(e).catch((err) => notice(err.message)));
$("refresh").addEventListener("click", refresh);
$("logout").addEventListener("click", () => leave());  // after dashboard.js has forgotten the token
$("login").addEventListener("submit", () => setTimeout(refresh, 0));
if (token()) refresh(); else location.replace(pageUrl("/app"));
setInterval(() => { if (token()) showPotsPanels().catch(() => {}); }, 10000);
