"use strict";
// /app/school: upload a CSV or NDJSON file in batches, show each rejected row, the uploaded registrations'
// status and the school's pots.
const BATCH = 200;
const SHOWN = 500;  // registrations whose status the page asks for (GET /hours/{id} each)
const LISTED = 50;  // rows of the table (all rejected ones besides)
const UPLOADED = "zorgpot.uploaded";


// CSV records, aware of quoted cells that hold a line break: [{line, text}], blank lines left out.
function csvRecords(text) {
  const records = [];
  let start = 0, line = 1, startLine = 1, quoted = false;
  for (let i = 0; i <= text.length; i++) {
    const c = text[i];
    if (c === '"') quoted = !quoted;
    if (i === text.length || (c === "\n" && !quoted)) {
      const record = text.slice(start, i).replace(/\r$/, "");
      if (record !== "") records.push({line: startLine, text: record});
      start = i + 1;
      startLine = line + 1;
    }
    if (c === "\n") line += 1;
  }
  return records;
}

// The file as batches: {type, header, rows:[{line, text}]}.
function parseFile(name, text) {
  text = text.replace(/^\ufeff/, "");
  const first = text.split("\n", 1)[0];
  const csv = /\.csv$/i.test(name) || (!first.trim().startsWith("{") && first.includes("registration_id"));
  if (csv) {
    const records = csvRecords(text);
    if (!records.length) throw new Error(_("the file is empty"));
    return {type: "text/csv", header: records[0].text, rows: records.slice(1)};
  }
  const rows = text.split("\n").map((t, i) => ({line: i + 1, text: t.replace(/\r$/, "")})).filter((r) => r.text.trim());
  return {type: "application/x-ndjson", header: null, rows};
}

function idOf(parsed, row) {
  if (parsed.type !== "text/csv") {
    try { return JSON.parse(row.text).registration_id || null; } catch (e) { return null; }
  }
  const sep = (parsed.header.split(";").length > parsed.header.split(",").length) ? ";" : ",";
  const col = parsed.header.split(sep).map((h) => h.trim().replace(/^"|"$/g, "")).indexOf("registration_id");
  const cell = col >= 0 ? row.text.split(sep)[col] : null;
  return cell ? cell.trim().replace(/^"|"$/g, "") : null;
}

function addErrors(rows) {
  const body = $("errors").tBodies[0];
  for (const r of rows) {
    for (const e of r.errors) {
      body.insertAdjacentHTML("beforeend", '<tr class="bad" data-line="' + r.line + '"><td class="num">' + r.line +
        "</td><td>" + esc(r.registration_id) + "</td><td>" + esc(e.field) + "</td><td>" +
        // The server counts lines within the part it got; the first column has the file's line.
        esc(String(e.message).replace(/^line \d+ is not valid JSON/, "not valid JSON")) + "</td></tr>");
    }
  }
  $("errors-box").hidden = !body.rows.length;
}

async function upload() {
  const file = $("file").files[0];
  if (!file) return;
  $("upload").disabled = true;
  $("errors").tBodies[0].innerHTML = "";
  $("errors-box").hidden = true;
  notice("");
  let parsed;
  try {
    parsed = parseFile(file.name, await file.text());
  } catch (err) {
    notice(_("This file cannot be read: {error}", {error: err.message}));
    $("upload").disabled = false;
    return;
  }
  const total = parsed.rows.length;
  const counts = {accepted: 0, duplicates: 0, rejected: 0};
  const sent = [];
  $("progress-box").hidden = false;
  $("progress").max = Math.max(total, 1);
  $("progress").value = 0;
  const progress = (done) => {
    $("progress").value = done;
    $("progress-text").textContent = _("{done} of {total} rows sent: {accepted} received, {duplicates} duplicate, {rejected} rejected",
      {done, total, accepted: counts.accepted, duplicates: counts.duplicates, rejected: counts.rejected});
  };
  progress(0);
  for (let at = 0; at < total; at += BATCH) {
    const rows = parsed.rows.slice(at, at + BATCH);
    const body = (parsed.header !== null ? [parsed.header] : []).concat(rows.map((r) => r.text)).join("\n") + "\n";
    let reply;
    for (let attempt = 0; ; attempt++) {  // a 503 (broker unavailable) is sent again after Retry-After
      reply = await api("/hours/batch", {method: "POST", headers: {"Content-Type": parsed.type}, body});
      if (reply.status !== 503 || attempt >= 10) break;
      await new Promise((ok) => setTimeout(ok, 1000 * Number(reply.headers.get("Retry-After") || 1)));
    }
    const answer = await reply.json().catch(() => null);
    if (!reply.ok) {
      notice(_("The part from line {line} was not processed ({error}); the parts before it were. Upload the file again: what arrived already counts as a duplicate.",
             {line: rows[0].line, error: detail(reply.status, answer)}));
      break;
    }
    const rejected = new Map(answer.rejected.map((r) => [r.index, r]));
    counts.accepted += answer.accepted;
    counts.duplicates += answer.duplicates;
    counts.rejected += answer.rejected.length;
    addErrors(answer.rejected.map((r) => ({line: rows[r.index].line, registration_id: r.registration_id || idOf(parsed, rows[r.index]),
                                           errors: r.errors})));
    rows.forEach((row, i) => { if (!rejected.has(i)) { const id = idOf(parsed, row); if (id) sent.push(id); } });
    progress(Math.min(at + BATCH, total));
  }
  if ($("message").hidden) {
    notice(_("Done: {total} rows, {accepted} received, {duplicates} duplicate, {rejected} rejected.",
             {total, accepted: counts.accepted, duplicates: counts.duplicates, rejected: counts.rejected}), counts.rejected === 0);
  }
  const known = JSON.parse(sessionStorage.getItem(UPLOADED) || "[]");
  sessionStorage.setItem(UPLOADED, JSON.stringify([...new Set(known.concat(sent))].slice(-SHOWN)));
  $("upload").disabled = false;
  showRegistrations(true);
  showPots();
}

const STATUS_TEXT = {pending: _("pending"), accepted: _("accepted"), rejected: _("rejected"), voided: _("voided")};
let watching = 0;

// GET /hours/{id} for the uploaded registrations; while some are pending, asks again.
async function showRegistrations(fresh) {
  const ids = JSON.parse(sessionStorage.getItem(UPLOADED) || "[]");
  const gen = fresh ? ++watching : watching;
  if (!ids.length) return;
  const views = [];
  for (let i = 0; i < ids.length; i += 20) {  // 20 at a time
    views.push(...await Promise.all(ids.slice(i, i + 20).map(async (id) => {
      const reply = await api("/hours/" + encodeURIComponent(id));
      return reply.ok ? reply.json() : {registration_id: id, status: "unknown", reason: _("not found ({status})", {status: reply.status})};
    })));
  }
  if (gen !== watching) return;
  const counts = {};
  views.forEach((v) => { counts[v.status] = (counts[v.status] || 0) + 1; });
  $("registrations-summary").textContent = _("{n} registrations: {counts}", {n: views.length, counts: Object.entries(counts)
    .map(([status, n]) => n + " " + (STATUS_TEXT[status] || status)).join(", ")}) +
    (views.length > LISTED ? _("; the last {n} are listed below, the rejected ones always", {n: LISTED}) : "");
  const listed = views.filter((v, i) => v.status === "rejected" || i >= views.length - LISTED);
  $("registrations").tBodies[0].innerHTML = listed.map((v) =>
    '<tr data-registration="' + esc(v.registration_id) + '" data-status="' + esc(v.status) + '"><td>' +
    esc(v.registration_id) + "</td><td>" + chip(v.status, STATUS_TEXT[v.status]) + (v.void_pending ? ' <span class="meta">' + esc(_("void pending")) + "</span>" : "") +
    "</td><td>" + esc(v.reason) + '</td><td class="num">' + (v.cost_cents !== undefined && v.cost_cents !== null ? euro(v.cost_cents) : "") +
    "</td></tr>").reverse().join("");
  if (views.some((v) => v.status === "pending")) setTimeout(() => showRegistrations(false), 1500);
}

async function showPots() {
  try {
    const body = await json("/pots");
    $("who").textContent = ROLE_TEXT[body.viewer.role] + " " + (body.viewer.subject || "");
    $("pots").tBodies[0].innerHTML = body.pots.length ? body.pots.map(potRow).join("") :
      '<tr><td colspan="7" class="empty">' + esc(_("There is no arrangement for this school yet.")) + "</td></tr>";
  } catch (err) {
    notice(_("The pots are unavailable: {error}", {error: err.message}));
  }
}

if (page()) {
  $("file").addEventListener("change", () => { $("upload").disabled = !$("file").files.length; });
  $("upload").addEventListener("click", () => upload().catch((err) => {
    notice(_("The upload was interrupted: {error}. Upload the file again: what arrived already counts as a duplicate.", {error: err.message}));
    $("upload").disabled = false;
  }));
  $("refresh").addEventListener("click", () => showRegistrations(true));
  showPots();
  showRegistrations(true);
}
