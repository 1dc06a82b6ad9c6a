// Loaded only when this login page answered a genuine cookie for a session
// the server no longer had. Often that session is alive under a new id:
// another tab of this browser loaded the chat a moment earlier (every page
// load gives the session a new id and deletes the old one), and its answer
// has since updated the cookie this tab shares. Ask once with the current
// cookie and go back to the chat if we are still logged in.
"use strict";

(() => {
  const TRIES = 3;
  const PAUSE_MS = 300;           // let the other tab's answer land between tries
  // Never bounce between the pages for long: a tab whose reload loses the
  // race again (its other tabs keep loading) rechecks at most this often.
  const RECHECKS_PER_WINDOW = 3;
  const WINDOW_MS = 10000;
  const STAMPS = "chatfleet.loginRechecks";

  const now = Date.now();
  let recent = [];
  try { recent = JSON.parse(sessionStorage.getItem(STAMPS)) || []; } catch { /* none yet */ }
  if (!Array.isArray(recent)) recent = [];
  recent = recent.filter((at) => now - at < WINDOW_MS);
  if (recent.length >= RECHECKS_PER_WINDOW) return;
  sessionStorage.setItem(STAMPS, JSON.stringify([...recent, now]));

  const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  (async () => {
    for (let attempt = 0; attempt < TRIES; attempt++) {
      if (attempt) await pause(PAUSE_MS);
      try {
        const probe = await fetch("/session", { credentials: "same-origin", cache: "no-store" });
        if (probe.ok) {
          location.replace("/");
          return;
        }
      } catch {
        return;  // no server to ask: the login page stays, as it would have
      }
    }
    document.body.dataset.recheck = "done";  // still logged out: this page is right
  })();
})();
