// The one WebSocket, resumed gap-free after any failure.
//
// The server may go away at any moment (crash, restart, scale-down). Then we
// back off with full jitter, ask GET /session (fresh cookies, still logged
// in, still the same user?), reopen /ws, resume every room from the last id
// shown, and resend whatever was typed but not acknowledged, with its
// original cid. When the session ends, the outbox is dropped instead: this
// tab's next socket may be someone else's. Each room's resume point goes with
// the room's epoch as last seen, so the server can say when the history behind
// it is gone (`reset`).

const FIRST_RETRY_MS = 500;      // first try within about half a second
const MAX_RETRY_MS = 10000;      // never wait longer than this between tries
const DRAIN_JITTER_MS = 1000;    // close 1012: come back at once, but not all together
const UNAVAILABLE_RETRY_MS = 2000;
const CLOSE_DRAINING = 1012;
const CLOSE_SESSION_ENDED = 4401;
// An edit or delete unanswered this long is given up (its answer may still come
// and is applied then), so one lost answer never holds up the next.
const CHANGE_WAIT_MS = 15000;

export function createConnection(store, view, { LOBBY }, onFrame) {
  const { me, state } = store;

  function send(frame) {
    if (!state.ended && state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  // A frame the server answers (join, create, chat, history, dm, invite, role,
  // kick, ban, unban, mute): sent, and remembered until its answer or refusal
  // (state.requests), with what `local` adds for the page only. False when
  // offline: nothing was sent.
  function request(frame, local = {}) {
    if (!send(frame)) return false;
    store.expect({ ...frame, ...local, kind: frame.type });
    return true;
  }

  function sendChat(m) {
    return request({ type: "chat", room: m.room, text: m.text, cid: m.cid });
  }

  function joinRoom(name) {
    const r = store.room(name);
    r.confirmed = false;
    const frame = { type: "join", room: name };
    if (r.lastId) {
      frame.after = r.lastId;
      if (r.epoch) frame.epoch = r.epoch;
    }
    request(frame);
  }

  // An edit or delete (state.changes): queued, and sent once the one before it
  // is answered. False when offline: nothing is queued.
  function change(frame) {
    if (!state.online || state.ended) return false;
    state.changes.push({ ...frame, sent: false });
    sendNextChange();
    return true;
  }

  function sendNextChange() {
    const next = state.changes[0];
    if (!next || next.sent) return;
    const frame = { type: next.type, room: next.room, id: next.id };
    if (next.type === "edit") frame.text = next.text;
    if (!send(frame)) return;  // the socket is going: its close drops the queue
    next.sent = true;
    clearTimeout(state.changeTimer);
    state.changeTimer = setTimeout(() => {
      if (state.changes[0] !== next) return;
      state.changes.shift();
      view.refreshMessage(next.room, next.id);
      view.showAlert(`No answer yet to your ${next.type}: the message shows it if it was done.`);
      sendNextChange();
    }, CHANGE_WAIT_MS);
  }

  // The change in flight, if `test` says this frame answers it: taken off the
  // queue, and the next one sent. Null otherwise.
  function changeAnswered(test) {
    const first = state.changes[0];
    if (!first || !first.sent || !test(first)) return null;
    state.changes.shift();
    clearTimeout(state.changeTimer);
    sendNextChange();
    return first;
  }

  // The socket is gone: what was queued was not sent, and the one in flight may
  // or may not have been done (a resume replays it if it was). Each message
  // shows what the server last said of it again.
  function dropChanges({ quiet = false } = {}) {
    clearTimeout(state.changeTimer);
    const dropped = state.changes;
    state.changes = [];
    for (const c of dropped) view.refreshMessage(c.room, c.id);
    if (dropped.length && !quiet) {
      const kinds = new Set(dropped.map((c) => c.type));
      const what = kinds.size > 1 ? "edits and deletes" : kinds.has("edit") ? "edit" : "delete";
      view.showAlert(`The connection dropped before your ${what} was confirmed: `
        + "check the message once the chat is back online, and try again if needed.");
    }
  }

  // Join what is not joined on this socket yet, then resend the outbox: the
  // server handles frames in order, so the joins land before the chats.
  function catchUp({ skipLobby = false } = {}) {
    for (const name of state.pendingLeaves) send({ type: "leave", room: name });
    state.pendingLeaves.clear();
    for (const r of state.rooms.values()) {
      if (!r.confirmed && !(skipLobby && r.name === LOBBY)) joinRoom(r.name);
    }
    for (const m of state.outbox) sendChat(m);
  }

  // This page's session is over: logged out here, closed 4401, gone at the
  // probe, or the browser's cookie now belongs to another user. Whatever waits
  // in the outbox was typed by this page's user: drop it, send nothing more,
  // and with `reload` let the server show what comes next (login or chat).
  function end({ reload }) {
    state.ended = true;
    clearTimeout(state.retryTimer);
    clearTimeout(state.unavailableTimer);
    state.unavailableTimer = null;
    store.forgetOutbox();
    dropChanges({ quiet: true });
    view.renderOutbox();
    if (reload) location.assign("/");
  }

  // The hello frame: the socket is up. False when it greets another user (the
  // cookie changed hands since this page was served): then nothing is sent.
  function greeted(frame) {
    if (frame.user !== me) {
      end({ reload: true });
      return false;
    }
    state.online = true;
    state.attempt = 0;
    view.setStatus("online", "online");
    for (const r of state.rooms.values()) r.confirmed = false;
    // A new socket: nothing sent on the old one is answered now. The server
    // joins it to the lobby itself; that answer (or refusal) comes first.
    state.requests = [{ kind: "join", room: LOBBY, implicit: true }];
    return true;
  }

  // Redis was away and nothing was stored: a join or chat failed. The lobby's
  // automatic join may be among them, so retry what is not confirmed, and the
  // outbox; one retry timer however many frames were refused.
  function unavailable() {
    view.setStatus("trouble", "chat is briefly unavailable; retrying…");
    if (state.unavailableTimer) return;
    state.unavailableTimer = setTimeout(() => {
      state.unavailableTimer = null;
      if (!state.online) return;
      view.setStatus("online", "online");
      catchUp();
    }, UNAVAILABLE_RETRY_MS);
  }

  function scheduleReconnect(delayMs) {
    clearTimeout(state.retryTimer);
    const wait = delayMs !== undefined
      ? delayMs
      : Math.random() * Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** state.attempt);
    state.attempt += 1;
    view.setStatus("reconnecting", "reconnecting…");
    state.retryTimer = setTimeout(connect, wait);
  }

  // GET /session: still logged in, as this page's user? (fresh cookies too).
  // False when it already decided what comes next (a retry, or another page).
  async function probeSession() {
    let probe;
    try {
      probe = await fetch("/session", { credentials: "same-origin", cache: "no-store" });
    } catch {
      scheduleReconnect();
      return false;
    }
    if (probe.status === 401) {
      // Another tab may have just regenerated the shared session cookie while
      // our probe carried the old one: ask once more before giving up.
      if (!state.probedTwice) {
        state.probedTwice = true;
        scheduleReconnect(200);
        return false;
      }
      // The session is gone (logged out elsewhere, expired): the server shows
      // the login page. A tab that only lost that race twice comes back from
      // there, without what it had queued: rare, and never worse than that.
      end({ reload: true });
      return false;
    }
    state.probedTwice = false;
    let who;
    try {
      if (!probe.ok) throw new Error("status " + probe.status);
      who = await probe.json();
    } catch {
      scheduleReconnect();
      return false;
    }
    if (who.user !== me) {
      // Logged out and someone else logged in, in another tab of this browser.
      end({ reload: true });
      return false;
    }
    return true;
  }

  async function connect() {
    if (state.ended) return;
    view.setStatus(state.attempt ? "reconnecting" : "connecting", state.attempt ? "reconnecting…" : "connecting…");
    if (state.pageJustServed) {
      // This page was served a moment ago for this session, with a fresh
      // cookie: the first socket needs no probe. Each probe gives the session
      // a new id, and each new id is a race with this browser's other tabs.
      state.pageJustServed = false;
    } else if (!(await probeSession()) || state.ended) {
      return;
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const lobby = store.room(LOBBY);
    let query = "";
    if (lobby.lastId) {
      query = "?after=" + encodeURIComponent(lobby.lastId);
      if (lobby.epoch) query += "&epoch=" + encodeURIComponent(lobby.epoch);
    }
    const url = scheme + "//" + location.host + "/ws" + query;
    const ws = new WebSocket(url);
    state.ws = ws;
    ws.onmessage = (event) => {
      if (state.ended) return;  // the page is leaving: nothing it shows or stores matters now
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      onFrame(frame);
    };
    ws.onclose = (event) => {
      if (state.ws !== ws) return;
      state.ws = null;
      state.online = false;
      clearTimeout(state.unavailableTimer);
      state.unavailableTimer = null;
      for (const r of state.rooms.values()) r.loadingHistory = false;
      if (state.ended) return;  // logging out: the page is already on its way
      dropChanges();
      if (event.code === CLOSE_SESSION_ENDED) {
        end({ reload: true });
      } else if (event.code === CLOSE_DRAINING) {
        scheduleReconnect(Math.random() * DRAIN_JITTER_MS);
      } else {
        scheduleReconnect();
      }
    };
  }

  return {
    connect, send, sendChat, joinRoom, request, change, changeAnswered, catchUp, greeted, unavailable, end,
  };
}
