"use strict";
// The page's language and texts (services/gateway/dashboard.py): the gateway serves each page in one language
// (<html lang>: Dutch by default, English with ?lang=en or Accept-Language) with the translations of the
// scripts' texts in <script id="messages">, taken from the gettext catalogue. The scripts write their texts in
// English as _("text") (extracted by Babel, babel.cfg) and `{name}` for a value: _("{n} rows", {n: 3}).
const LANG = document.documentElement.lang || "nl";
const MESSAGES = JSON.parse((document.getElementById("messages") || {}).textContent || "{}");
const LOCALE = LANG === "en" ? "en-GB" : "nl-NL";

function _(text, values) {
  const translated = MESSAGES[text] || text;
  return values ? translated.replace(/\{(\w+)\}/g, (all, name) => (name in values ? String(values[name]) : all)) : translated;
}

// A path of these pages, keeping an explicit ?lang= of this page's URL.
function pageUrl(path) {
  const lang = new URLSearchParams(location.search).get("lang");
  return path + (lang ? "?lang=" + encodeURIComponent(lang) : "");
}

// An API path with the page's language (documents, texts): "/statements/x?format=pdf" -> "...&lang=nl".
function withLang(path) {
  return path + (path.includes("?") ? "&" : "?") + "lang=" + LANG;
}
