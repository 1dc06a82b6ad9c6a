// chatfleet browser client: rooms, presence, history and typing over one
// WebSocket that is resumed gap-free after any failure.
//
// The server may go away at any moment (crash, restart, scale-down). Then we
// back off with full jitter, ask GET /session (fresh cookies, still logged
// in?), reopen /ws, resume every room from the last id shown, and resend
// whatever was typed but not acknowledged, with its original cid.
"use strict";

(() => {
  const LOBBY = "lobby";
  const FIRST_RETRY_MS = 500;      // first try within about half a second
  const MAX_RETRY_MS = 10000;      // never wait longer than this between tries
  const DRAIN_JITTER_MS = 1000;    // close 1012: come back at once, but not all together
  const UNAVAILABLE_RETRY_MS = 2000;
  const TYPING_EVERY_MS = 3000;    // tell others at most this often
  const TYPING_SHOWN_MS = 5000;    // forget a typist after this long
  const HISTORY_PAGE = 50;
  const CLOSE_DRAINING = 1012;
  const CLOSE_SESSION_ENDED = 4401;
  const OUTBOX_KEY = "chatfleet.outbox";
  const ROOM_RULE = /^[A-Za-z0-9._-]{1,32}$/;

  const body = document.body;
  const me = body.dataset.user;
  const $ = (id) => document.getElementById(id);
  const messagesEl = $("messages");
  const outboxEl = $("outbox");
  const peopleEl = $("people");
  const roomsEl = $("rooms");
  const statusEl = $("status");
  const typingEl = $("typing");
  const textEl = $("text");

  // The outbox lives in sessionStorage: a message typed just before a refresh
  // is still sent after it, exactly once. Last ids live only as long as the
  // page: a fresh page starts from the recent history.
  const loadOutbox = () => {
    try { return JSON.parse(sessionStorage.getItem(OUTBOX_KEY)) || []; } catch { return []; }
  };
  const state = {
    ws: null,
    attempt: 0,
    online: false,
    probedTwice: false,
    pageJustServed: true,
    retryTimer: null,
    rooms: new Map(),        // name -> room state, see newRoom
    current: LOBBY,
    outbox: loadOutbox(),    // [{cid, room, text}], oldest first
    lastTypingSent: 0,
    pendingLeaves: new Set(),  // rooms left while offline
    unavailableTimer: null,    // the one pending retry after `unavailable`
  };

  function newRoom(name) {
    const log = document.createElement("ol");
    log.className = "room-log";
    log.dataset.room = name;
    log.hidden = name !== state.current;
    messagesEl.append(log);
    return {
      name, log,
      lastId: null,          // newest id shown: resume point
      oldestId: null,        // oldest id shown: where scrolling up continues
      more: true,            // older history may exist
      loadingHistory: false,
      unread: 0,
      people: new Set(),
      typists: new Map(),    // user -> timer
      confirmed: false,      // joined on the current socket (presence seen)
      settled: false,        // joined once on this page: later replays are news, not the past
    };
  }

  function room(name) {
    if (!state.rooms.has(name)) state.rooms.set(name, newRoom(name));
    return state.rooms.get(name);
  }

  // Stream ids are "<ms>-<seq>"; both parts fit a double exactly.
  const idParts = (id) => id.split("-").map(Number);
  const idAfter = (a, b) => {
    if (!b) return true;
    const [am, as] = idParts(a);
    const [bm, bs] = idParts(b);
    return am > bm || (am === bm && as > bs);
  };
  const newCid = () =>
    (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random()).slice(0, 64);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;  // always text, never HTML
    return node;
  }

  function setStatus(kind, text) {
    statusEl.className = "status status-" + kind;
    statusEl.textContent = text;
  }

  // -- rendering ---------------------------------------------------------

  function messageNode(msg) {
    const li = el("li", "msg" + (msg.user === me ? " mine" : ""));
    li.dataset.id = msg.id;
    const when = new Date(msg.ts * 1000);
    const time = el("time", "time", when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
    time.dateTime = when.toISOString();
    time.title = when.toLocaleString();
    li.append(el("span", "user", msg.user), time, el("p", "text", msg.text));
    return li;
  }

  function nearBottom() {
    return messagesEl.scrollHeight - messagesEl.scrollTop - messagesEl.clientHeight < 80;
  }

  function showChat(msg) {
    if (!state.rooms.has(msg.room)) return;  // a room we left
    const r = room(msg.room);
    if (!idAfter(msg.id, r.lastId)) return;  // already shown: resume overlap
    r.lastId = msg.id;
    if (!r.oldestId) r.oldestId = msg.id;
    const visible = msg.room === state.current;
    const stick = visible && nearBottom();
    r.log.append(messageNode(msg));
    stopTyping(r, msg.user);
    if (visible && (stick || msg.user === me)) messagesEl.scrollTop = messagesEl.scrollHeight;
    // The first join's replay is the room's past (already read before a refresh):
    // only what arrives after it, or is replayed on a resume, is unread.
    if (!visible && msg.user !== me && r.settled) {
      r.unread += 1;
      renderRooms();
    }
  }

  function showHistory(frame) {
    const r = state.rooms.get(frame.room);
    if (!r) return;
    r.loadingHistory = false;
    r.more = frame.more;
    const older = frame.messages.filter((m) => !r.oldestId || idAfter(r.oldestId, m.id));
    if (!older.length) return;
    const height = messagesEl.scrollHeight;
    r.log.prepend(...older.map(messageNode));
    r.oldestId = older[0].id;
    if (!r.lastId) r.lastId = older[older.length - 1].id;
    if (frame.room === state.current) messagesEl.scrollTop += messagesEl.scrollHeight - height;
  }

  function showNotice(roomName, text) {
    const r = state.rooms.get(roomName);
    if (!r) return;
    const stick = roomName === state.current && nearBottom();
    r.log.append(el("li", "notice", text));
    if (stick) messagesEl.scrollTop = messagesEl.scrollHeight;
  }

  function renderPeople() {
    const people = [...room(state.current).people].sort();
    peopleEl.replaceChildren(...people.map((u) => el("li", u === me ? "mine" : "", u)));
  }

  function renderRooms() {
    const names = [...state.rooms.keys()].sort((a, b) => (a === LOBBY ? -1 : b === LOBBY ? 1 : a.localeCompare(b)));
    roomsEl.replaceChildren(...names.map((name) => {
      const r = state.rooms.get(name);
      const li = el("li");
      const button = el("button", "room-button" + (name === state.current ? " current" : ""), "#" + name);
      button.type = "button";
      button.dataset.room = name;
      if (name === state.current) button.setAttribute("aria-current", "true");
      if (r.unread) {
        const badge = el("span", "unread", String(r.unread));
        badge.setAttribute("aria-label", r.unread + " unread");
        button.append(" ", badge);
      }
      li.append(button);
      return li;
    }));
  }

  function renderTyping() {
    const typists = [...room(state.current).typists.keys()];
    typingEl.textContent = typists.length === 0 ? ""
      : typists.length === 1 ? typists[0] + " is typing…"
      : typists.join(", ") + " are typing…";
  }

  function renderOutbox() {
    outboxEl.replaceChildren(
      ...state.outbox.filter((m) => m.room === state.current).map((m) => el("li", "msg pending", m.text)),
    );
  }

  function switchTo(name) {
    state.current = name;
    const r = room(name);
    r.unread = 0;
    for (const other of state.rooms.values()) other.log.hidden = other !== r;
    $("room-title").textContent = "#" + name;
    $("leave-room").hidden = name === LOBBY;
    renderRooms();
    renderPeople();
    renderTyping();
    renderOutbox();
    messagesEl.scrollTop = messagesEl.scrollHeight;
  }

  // -- typing ------------------------------------------------------------

  function stopTyping(r, user) {
    clearTimeout(r.typists.get(user));
    if (r.typists.delete(user) && r.name === state.current) renderTyping();
  }

  function showTyping(frame) {
    const r = state.rooms.get(frame.room);
    if (!r || frame.user === me) return;
    clearTimeout(r.typists.get(frame.user));
    r.typists.set(frame.user, setTimeout(() => stopTyping(r, frame.user), TYPING_SHOWN_MS));
    if (r.name === state.current) renderTyping();
  }

  // -- sending -----------------------------------------------------------

  function send(frame) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function say(text) {
    const item = { cid: newCid(), room: state.current, text };
    state.outbox.push(item);
    sessionStorage.setItem(OUTBOX_KEY, JSON.stringify(state.outbox));
    renderOutbox();
    if (state.online) send({ type: "chat", room: item.room, text: item.text, cid: item.cid });
  }

  function acked(cid) {
    state.outbox = state.outbox.filter((m) => m.cid !== cid);
    sessionStorage.setItem(OUTBOX_KEY, JSON.stringify(state.outbox));
    renderOutbox();
  }

  function joinRoom(name) {
    const r = room(name);
    r.confirmed = false;
    const frame = { type: "join", room: name };
    if (r.lastId) frame.after = r.lastId;
    send(frame);
  }

  // Join what is not joined on this socket yet, then resend the outbox: the
  // server handles frames in order, so the joins land before the chats.
  function catchUp({ skipLobby = false } = {}) {
    for (const name of state.pendingLeaves) send({ type: "leave", room: name });
    state.pendingLeaves.clear();
    for (const r of state.rooms.values()) {
      if (!r.confirmed && !(skipLobby && r.name === LOBBY)) joinRoom(r.name);
    }
    for (const m of state.outbox) send({ type: "chat", room: m.room, text: m.text, cid: m.cid });
  }

  function loadOlder() {
    const r = room(state.current);
    // Not while the join's own history is still arriving: a scroll event from
    // switching rooms would otherwise page back before the first page is in.
    if (!state.online || !r.settled || !r.more || r.loadingHistory || !r.oldestId) return;
    r.loadingHistory = true;
    send({ type: "history", room: r.name, before: r.oldestId, limit: HISTORY_PAGE });
  }

  // -- frames from the server ----------------------------------------------

  function onFrame(frame) {
    switch (frame.type) {
      case "hello":
        state.online = true;
        state.attempt = 0;
        setStatus("online", "online");
        body.dataset.instance = frame.instance;
        for (const name of frame.rooms || []) if (!state.pendingLeaves.has(name)) room(name);
        for (const r of state.rooms.values()) r.confirmed = false;
        renderRooms();
        catchUp({ skipLobby: true });  // the server joins the lobby itself (?after=)
        break;
      case "chat":
        showChat(frame);
        break;
      case "history":
        showHistory(frame);
        break;
      case "ack":
        acked(frame.cid);
        break;
      case "presence": {
        const r = state.rooms.get(frame.room);
        if (!r) break;
        r.confirmed = true;
        r.settled = true;
        r.people = new Set(frame.users);
        if (r.name === state.current) renderPeople();
        break;
      }
      case "joined":
      case "left": {
        const r = state.rooms.get(frame.room);
        if (!r) break;
        if (frame.type === "joined") r.people.add(frame.user); else r.people.delete(frame.user);
        if (frame.type === "left") stopTyping(r, frame.user);
        if (r.name === state.current) renderPeople();
        if (frame.user !== me) showNotice(frame.room, frame.user + (frame.type === "joined" ? " joined" : " left"));
        break;
      }
      case "typing":
        showTyping(frame);
        break;
      case "reset":
        // The server could not replay everything since our last message:
        // the most recent ones follow. Say so where the gap is.
        showNotice(frame.room, "⚠ some earlier messages of this room are not shown here");
        break;
      case "error":
        if (frame.code === "unavailable") {
          // Nothing was stored: a join or chat failed while Redis was away.
          // The lobby's automatic join may be among them, so retry what is
          // not confirmed, and the outbox.
          // One retry timer however many frames were refused.
          setStatus("trouble", "chat is briefly unavailable; retrying…");
          if (!state.unavailableTimer) {
            state.unavailableTimer = setTimeout(() => {
              state.unavailableTimer = null;
              if (!state.online) return;
              setStatus("online", "online");
              catchUp();
            }, UNAVAILABLE_RETRY_MS);
          }
        } else {
          showNotice(state.current, "⚠ " + frame.reason);
        }
        break;
      default:
        break;  // newer server, older client: ignore what we do not know
    }
  }

  // -- connection ----------------------------------------------------------

  function scheduleReconnect(delayMs) {
    clearTimeout(state.retryTimer);
    const wait = delayMs !== undefined
      ? delayMs
      : Math.random() * Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** state.attempt);
    state.attempt += 1;
    setStatus("reconnecting", "reconnecting…");
    state.retryTimer = setTimeout(connect, wait);
  }

  // GET /session: still logged in? (fresh cookies too). False when it
  // already decided what comes next (a retry, or the login page).
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
      location.assign("/");  // the session is gone: the server shows the login page
      return false;
    }
    state.probedTwice = false;
    if (!probe.ok) {
      scheduleReconnect();
      return false;
    }
    return true;
  }

  async function connect() {
    setStatus(state.attempt ? "reconnecting" : "connecting", state.attempt ? "reconnecting…" : "connecting…");
    if (state.pageJustServed) {
      // This page was served a moment ago for this session, with a fresh
      // cookie: the first socket needs no probe. Each probe gives the session
      // a new id, and each new id is a race with this browser's other tabs.
      state.pageJustServed = false;
    } else if (!(await probeSession())) {
      return;
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const after = room(LOBBY).lastId;
    const url = scheme + "//" + location.host + "/ws" + (after ? "?after=" + encodeURIComponent(after) : "");
    const ws = new WebSocket(url);
    state.ws = ws;
    ws.onmessage = (event) => {
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
      if (event.code === CLOSE_SESSION_ENDED) {
        location.assign("/");
      } else if (event.code === CLOSE_DRAINING) {
        scheduleReconnect(Math.random() * DRAIN_JITTER_MS);
      } else {
        scheduleReconnect();
      }
    };
  }

  // -- user input ----------------------------------------------------------

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = textEl.value;
    if (!text.trim()) return;
    textEl.value = "";
    say(text);
  });
  textEl.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  textEl.addEventListener("input", () => {
    const now = Date.now();
    if (textEl.value.trim() && now - state.lastTypingSent > TYPING_EVERY_MS && state.online) {
      state.lastTypingSent = now;
      send({ type: "typing", room: state.current });
    }
  });
  $("join-room").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("room-name");
    const name = input.value.trim();
    if (!ROOM_RULE.test(name)) return;
    input.value = "";
    if (!state.rooms.has(name)) joinRoom(name);
    switchTo(name);
  });
  roomsEl.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-room]");
    if (button) switchTo(button.dataset.room);
  });
  $("leave-room").addEventListener("click", () => {
    const name = state.current;
    if (name === LOBBY) return;
    // Offline, the leave waits for the next connection (or that connection's
    // hello would bring the room back).
    if (!state.online || !send({ type: "leave", room: name })) state.pendingLeaves.add(name);
    const r = state.rooms.get(name);
    r.log.remove();
    for (const timer of r.typists.values()) clearTimeout(timer);
    state.rooms.delete(name);
    state.outbox = state.outbox.filter((m) => m.room !== name);
    sessionStorage.setItem(OUTBOX_KEY, JSON.stringify(state.outbox));
    switchTo(LOBBY);
  });
  messagesEl.addEventListener("scroll", () => {
    if (messagesEl.scrollTop < 40) loadOlder();
  });

  // Test and debugging hook: read-only view of the client's state.
  window.chatfleet = { state };
  room(LOBBY);
  switchTo(LOBBY);
  connect();
})();
