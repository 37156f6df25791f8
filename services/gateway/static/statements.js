"use strict";
// /app/statements (a municipality or another funder; the coordinator page uses the same table): the statements
// with PDF and CSV downloads and, where the API gives it, the webhook delivery status.
const DELIVERY_TEXT = {delivered: _("delivered"), pending: _("waiting"), retrying: _("retrying"), failed: _("failed"),
                       no_webhook: _("no webhook")};


const when = (iso) => iso ? new Date(iso).toLocaleString(LOCALE, {dateStyle: "short", timeStyle: "short"}) : "";
// Dutch 29-11-2026, English ISO (as in the documents).
const day = (iso) => iso ? (LANG === "en" ? iso : iso.split("-").reverse().join("-")) : "";

// Without `d`: no delivery for this statement (a funder other than a municipality has no webhook), or the
// coordinator's list has not recorded it yet.
function deliveryCell(d, hidden) {
  if (!d) return '<span class="meta">' + (hidden ? _("no webhook") : _("not recorded yet")) + "</span>";
  return chip(d.status, DELIVERY_TEXT[d.status]) + (d.attempts ? ' <span class="meta">' + _("{n} attempts", {n: d.attempts}) +
    (d.last_error ? ": " + esc(d.last_error) : "") + "</span>" : "") +
    (d.delivered_at ? ' <span class="meta">' + esc(when(d.delivered_at)) + "</span>" : "");
}

function statementRow(s, delivery, hidden) {
  return '<tr data-statement="' + esc(s.statement_id) + '"><td><code>' + esc(s.statement_id) + "</code>" +
    '<div class="meta">' + esc(s.funder || s.municipality) + "</div></td><td>" + esc(s.arrangement_id) + "</td><td>" +
    esc(_("{start} to {end}", {start: day(s.period_start), end: day(s.period_end)})) + '</td><td class="num">' + euro(s.total_cents) +
    "</td><td>" + esc(when(s.issued_at)) + "</td><td>" + deliveryCell(delivery, hidden) + "</td><td>" +
    statementDownloads(s.statement_id) + "</td></tr>";
}

// PDF letter and CSV (';' and decimal comma, for Excel) of one statement.
function statementDownloads(id) {
  const path = "/statements/" + encodeURIComponent(id), name = id.replace(/:/g, "_");
  return downloadButton("data-download", "pdf", path + "?format=pdf", name + ".pdf") +
    downloadButton("data-download", "csv", path + "?format=csv&dutch=1", name + ".csv");
}

// The table body for `statements`; deliveries by statement id when the caller has them (the coordinator),
// else each statement's JSON is asked for its `delivery`, shown when the API includes it.
async function statementRows(statements, deliveries) {
  if (!statements.length) return '<tr><td colspan="7" class="empty">' + esc(_("No statements yet.")) + "</td></tr>";
  const hidden = !deliveries;
  if (!deliveries) {
    deliveries = new Map();
    await Promise.all(statements.slice(0, 50).map(async (s) => {
      const reply = await api("/statements/" + encodeURIComponent(s.statement_id));
      const doc = reply.ok ? await reply.json() : null;
      if (doc && doc.delivery) deliveries.set(s.statement_id, doc.delivery);
    }));
  }
  return statements.slice().reverse().map((s) => statementRow(s, deliveries.get(s.statement_id), hidden)).join("");
}

async function showStatements() {
  try {
    const statements = await json("/statements");
    if (statements.length) $("who").textContent = statements[0].funder || statements[0].municipality;
    $("statements").tBodies[0].innerHTML = await statementRows(statements, null);
  } catch (err) {
    notice(_("The statements are unavailable: {error}", {error: err.message}));
  }
}

if ($("who") && page()) {  // statements.html (coordinator.html has no #who)
  $("refresh").addEventListener("click", showStatements);
  showStatements();
}
