// Everything the page shows: messages and notices per room, history pages,
// the people, rooms and outbox lists, who is typing, the connection status.
// Names and texts always go in as textContent, never as HTML.

const TYPING_SHOWN_MS = 5000;  // forget a typist after this long
const NEAR_BOTTOM_PX = 80;     // a reader this close to the end keeps following new messages

export function createView(store, { idAfter, LOBBY }) {
  const { me, state } = store;
  const $ = (id) => document.getElementById(id);
  const messagesEl = $("messages");
  const outboxEl = $("outbox");
  const peopleEl = $("people");
  const roomsEl = $("rooms");
  const statusEl = $("status");
  const typingEl = $("typing");

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

  // Each room has its own list in #messages; only the current one is shown.
  function logOf(r) {
    if (!r.log) {
      r.log = el("ol", "room-log");
      r.log.dataset.room = r.name;
      r.log.hidden = r.name !== state.current;
      messagesEl.append(r.log);
    }
    return r.log;
  }

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
    return messagesEl.scrollHeight - messagesEl.scrollTop - messagesEl.clientHeight < NEAR_BOTTOM_PX;
  }

  function showChat(msg) {
    const r = state.rooms.get(msg.room);
    if (!r) return;                          // a room we left
    if (!idAfter(msg.id, r.lastId)) return;  // already shown: resume overlap
    r.lastId = msg.id;
    if (!r.oldestId) r.oldestId = msg.id;
    const visible = msg.room === state.current;
    const stick = visible && nearBottom();
    logOf(r).append(messageNode(msg));
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
    logOf(r).prepend(...older.map(messageNode));
    r.oldestId = older[0].id;
    if (!r.lastId) r.lastId = older[older.length - 1].id;
    // Keep what the reader was looking at where it was.
    if (frame.room === state.current) messagesEl.scrollTop += messagesEl.scrollHeight - height;
  }

  function showNotice(roomName, text) {
    const r = state.rooms.get(roomName);
    if (!r) return;
    const stick = roomName === state.current && nearBottom();
    logOf(r).append(el("li", "notice", text));
    if (stick) messagesEl.scrollTop = messagesEl.scrollHeight;
  }

  function renderPeople() {
    const people = [...store.room(state.current).people].sort();
    peopleEl.replaceChildren(...people.map((u) => el("li", u === me ? "mine" : "", u)));
  }

  function renderRooms() {
    // Every room listed has its message list from the start (in the order the
    // rooms came), so switching to it finds it.
    for (const r of state.rooms.values()) logOf(r);
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
    const typists = [...store.room(state.current).typists.keys()];
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
    const r = store.room(name);
    r.unread = 0;
    for (const other of state.rooms.values()) logOf(other).hidden = other !== r;
    $("room-title").textContent = "#" + name;
    $("leave-room").hidden = name === LOBBY;
    renderRooms();
    renderPeople();
    renderTyping();
    renderOutbox();
    messagesEl.scrollTop = messagesEl.scrollHeight;
  }

  // A room the user left: its list and its typists' timers go with it.
  function removeRoom(r) {
    logOf(r).remove();
    for (const timer of r.typists.values()) clearTimeout(timer);
  }

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

  return {
    messagesEl,
    roomsEl,
    setStatus,
    showChat,
    showHistory,
    showNotice,
    showTyping,
    stopTyping,
    renderPeople,
    renderRooms,
    renderOutbox,
    switchTo,
    removeRoom,
  };
}
