"use strict";
// /app: the login form. What the token may do decides the page: pots (coordinator, school) or statements.

async function route() {
  if (!token()) return;
  let reply = await api("/pots");
  if (reply.status === 401) return;  // api() has sent us back here with a message
  if (reply.ok) {
    const viewer = (await reply.json()).viewer;
    if (viewer.role === "coordinator") { location.replace(pageUrl("/app/coordinator")); return; }
    if (viewer.role === "school") { location.replace(pageUrl("/app/school")); return; }
  }
  reply = await api("/statements");
  if (reply.ok) { location.replace(pageUrl("/app/statements")); return; }
  sessionStorage.removeItem(KEY);
  notice(_("There is no page for this token (yet): the pages are for schools, municipalities, funders and the coordinator."));
}

// A token handed over in the fragment (#token=...), or a message from a page that sent us back (#message=...).
function fragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.get("token")) sessionStorage.setItem(KEY, params.get("token"));
  if (params.get("message")) notice(params.get("message"));
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
}
window.addEventListener("hashchange", fragment);
fragment();
$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = $("token").value.trim();
  if (!value) return;
  sessionStorage.setItem(KEY, value);
  $("token").value = "";
  notice("");
  route().catch((err) => notice(_("The server cannot be reached: {error}", {error: err.message})));
});
route().catch((err) => notice(_("The server cannot be reached: {error}", {error: err.message})));
