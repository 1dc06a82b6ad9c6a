// Loaded only when this login page answered a genuine cookie for a session
// the server no longer had. Often that session is alive under a new id:
// another tab of this browser loaded the chat a moment earlier (every page
// load gives the session a new id and deletes the old one), and its answer
// has since updated the cookie this tab shares. Ask with the current cookie
// and go back to the chat if we are still logged in.
"use strict";

(() => {
  const TRIES = 3;
  const PAUSE_MS = 300;           // let the other tab's answer land between tries
  // A tab whose reload loses the race again (its other tabs keep loading)
  // checks again, but later each time: never a tight bounce between the pages.
  const WINDOW_MS = 30000;
  const MAX_WAIT_MS = 5000;
  const STAMPS = "chatfleet.loginRechecks";

  const now = Date.now();
  let recent = [];
  try { recent = JSON.parse(sessionStorage.getItem(STAMPS)) || []; } catch { /* none yet */ }
  if (!Array.isArray(recent)) recent = [];
  recent = recent.filter((at) => now - at < WINDOW_MS);
  sessionStorage.setItem(STAMPS, JSON.stringify([...recent, now]));
  const firstWait = recent.length ? Math.min(MAX_WAIT_MS, PAUSE_MS * 2 ** recent.length) : 0;

  const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  (async () => {
    for (let attempt = 0; attempt < TRIES; attempt++) {
      await pause(attempt ? PAUSE_MS : firstWait);
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
