// chatfleet browser client: one WebSocket, resumed gap-free after any failure.
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
  const CLOSE_DRAINING = 1012;
  const CLOSE_SESSION_ENDED = 4401;
  const OUTBOX_KEY = "chatfleet.outbox";

  const body = document.body;
  const me = body.dataset.user;
  const $ = (id) => document.getElementById(id);
  const messagesEl = $("messages");
  const outboxEl = $("outbox");
  const peopleEl = $("people");
  const statusEl = $("status");
  const textEl = $("text");

  const load = (key, fallback) => {
    try { return JSON.parse(sessionStorage.getItem(key)) || fallback; } catch { return fallback; }
  };
  const store = (key, value) => sessionStorage.setItem(key, JSON.stringify(value));

  // The outbox lives in sessionStorage: a message typed just before a refresh
  // is still sent after it, exactly once. Last ids live only as long as the
  // page: a fresh page starts from the recent history.
  const state = {
    ws: null,
    attempt: 0,
    rooms: [LOBBY],
    current: LOBBY,
    lastIds: {},                       // room -> last message id shown
    outbox: load(OUTBOX_KEY, []),      // [{cid, room, text}], oldest first
    online: false,
    retryTimer: null,
    probedTwice: false,
  };

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

  function setStatus(kind, text) {
    statusEl.className = "status status-" + kind;
    statusEl.textContent = text;
  }

  function nearBottom() {
    return messagesEl.scrollHeight - messagesEl.scrollTop - messagesEl.clientHeight < 80;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;  // always text, never HTML
    return node;
  }

  function showChat(msg) {
    if (!idAfter(msg.id, state.lastIds[msg.room])) return;  // already shown
    state.lastIds[msg.room] = msg.id;
    if (msg.room !== state.current) return;
    const stick = nearBottom();
    const li = el("li", "msg" + (msg.user === me ? " mine" : ""));
    li.dataset.id = msg.id;
    const when = new Date(msg.ts * 1000);
    const time = el("time", "time", when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
    time.dateTime = when.toISOString();
    time.title = when.toLocaleString();
    li.append(el("span", "user", msg.user), time, el("p", "text", msg.text));
    messagesEl.append(li);
    if (stick || msg.user === me) messagesEl.scrollTop = messagesEl.scrollHeight;
  }

  function showNotice(text) {
    const stick = nearBottom();
    messagesEl.append(el("li", "notice", text));
    if (stick) messagesEl.scrollTop = messagesEl.scrollHeight;
  }

  function showPeople(users) {
    peopleEl.replaceChildren(...users.map((u) => el("li", u === me ? "mine" : "", u)));
  }

  function renderOutbox() {
    outboxEl.replaceChildren(
      ...state.outbox
        .filter((m) => m.room === state.current)
        .map((m) => el("li", "msg pending", m.text)),
    );
  }

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
    store(OUTBOX_KEY, state.outbox);
    renderOutbox();
    if (state.online) send({ type: "chat", room: item.room, text: item.text, cid: item.cid });
  }

  function acked(cid) {
    state.outbox = state.outbox.filter((m) => m.cid !== cid);
    store(OUTBOX_KEY, state.outbox);
    renderOutbox();
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "hello":
        state.online = true;
        state.attempt = 0;
        setStatus("online", "online");
        body.dataset.instance = frame.instance;
        // The lobby was resumed by the ?after= of the URL; resume the others.
        for (const room of state.rooms) {
          if (room !== LOBBY) send({ type: "join", room, after: state.lastIds[room] });
        }
        for (const m of state.outbox) send({ type: "chat", room: m.room, text: m.text, cid: m.cid });
        break;
      case "chat":
        showChat(frame);
        break;
      case "ack":
        acked(frame.cid);
        break;
      case "joined":
        if (frame.room === state.current && frame.user !== me) showNotice(frame.user + " joined");
        break;
      case "left":
        if (frame.room === state.current) showNotice(frame.user + " left");
        break;
      case "presence":
        if (frame.room === state.current) showPeople(frame.users);
        break;
      case "error":
        if (frame.code === "unavailable") {
          setStatus("trouble", "chat is briefly unavailable; retrying…");
          setTimeout(() => { if (state.online) onFrame({ type: "hello", instance: body.dataset.instance }); }, 2000);
        } else {
          showNotice("⚠ " + frame.reason);
        }
        break;
      default:
        break;  // newer server, older client: ignore what we do not know
    }
  }

  function scheduleReconnect(delayMs) {
    clearTimeout(state.retryTimer);
    const wait = delayMs !== undefined
      ? delayMs
      : Math.random() * Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** state.attempt);
    state.attempt += 1;
    setStatus("reconnecting", "reconnecting…");
    state.retryTimer = setTimeout(connect, wait);
  }

  async function connect() {
    setStatus("reconnecting", state.attempt ? "reconnecting…" : "connecting…");
    let probe;
    try {
      probe = await fetch("/session", { credentials: "same-origin", cache: "no-store" });
    } catch {
      scheduleReconnect();
      return;
    }
    if (probe.status === 401) {
      // Another tab may have just regenerated the shared session cookie while
      // our probe carried the old one: ask once more before giving up.
      if (!state.probedTwice) {
        state.probedTwice = true;
        scheduleReconnect(200);
        return;
      }
      location.assign("/");  // the session is gone: the server shows the login page
      return;
    }
    state.probedTwice = false;
    if (!probe.ok) {
      scheduleReconnect();
      return;
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const after = state.lastIds[LOBBY];
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
      if (event.code === CLOSE_SESSION_ENDED) {
        location.assign("/");
      } else if (event.code === CLOSE_DRAINING) {
        scheduleReconnect(Math.random() * DRAIN_JITTER_MS);
      } else {
        scheduleReconnect();
      }
    };
  }

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

  // Test and debugging hook: read-only view of the client's state.
  window.chatfleet = { state };
  renderOutbox();
  connect();
})();
