// Everything the page shows: messages and notices per room, history pages,
// the people (and what one may do to a person), the rooms and direct-message
// lists with their unread counts, the outbox, who is typing, the connection
// status, and the alerts and notices read out to screen readers.
// Names and texts always go in as textContent, never as HTML.

const TYPING_SHOWN_MS = 5000;  // forget a typist after this long
const NEAR_BOTTOM_PX = 80;     // a reader this close to the end keeps following new messages
const BANNERS_KEPT = 3;        // alerts (and notices) shown at once; older ones go

// The accessible names of the person actions, for `user`.
const ACTION_LABELS = {
  dm: (user) => "Message " + user,
  kick: (user) => "Kick " + user,
  ban: (user) => "Ban " + user,
  moderator: (user) => "Make " + user + " a moderator",
};

export function createView(store, { idAfter, LOBBY }) {
  const { me, state } = store;
  const $ = (id) => document.getElementById(id);
  const messagesEl = $("messages");
  const outboxEl = $("outbox");
  const peopleEl = $("people");
  const roomsEl = $("rooms");
  const dmsEl = $("dms");
  const alertsEl = $("alerts");
  const noticesEl = $("notices");
  const actionsEl = $("person-actions");
  const inviteEl = $("invite");
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
    if (visible) {
      store.markRead(r);
    } else if (msg.user !== me && store.unseen(r, msg.id)) {
      // What arrives after the room's first replay on this page, or after what
      // the user had seen of it before (a refresh, another tab), is unread.
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

  // The current room's people: each other person is a button opening what one
  // may do to them (#person-actions); the list item's text is the name alone.
  function renderPeople() {
    const r = store.room(state.current);
    const people = [...r.people].sort();
    const actionable = r.dm === null;
    const focused = peopleEl.contains(document.activeElement) ? document.activeElement.dataset.user : null;
    peopleEl.replaceChildren(...people.map((u) => {
      if (u === me || !actionable) return el("li", u === me ? "mine" : "", u);
      const li = el("li");
      const button = el("button", "person", u);
      button.type = "button";
      button.dataset.user = u;
      button.setAttribute("aria-controls", "person-actions");
      button.setAttribute("aria-expanded", String(u === state.selected));
      li.append(button);
      return li;
    }));
    if (focused) peopleEl.querySelector(`button.person[data-user="${focused}"]`)?.focus();
    if (state.selected && !(actionable && r.people.has(state.selected))) closePerson();
  }

  // What one may do to `user` in the current room. The server decides who
  // may: a refusal comes back as an alert.
  function openPerson(user) {
    state.selected = user;
    $("person-name").textContent = user;
    for (const button of actionsEl.querySelectorAll("button[data-action]")) {
      const label = ACTION_LABELS[button.dataset.action];
      if (label) button.setAttribute("aria-label", label(user));
    }
    muteLabel();
    actionsEl.hidden = false;
    renderPeople();
    actionsEl.querySelector("button[data-action]").focus();
  }

  // Close the actions; with `refocus`, back to the person's button (or the
  // list's heading when the person is gone). Focus never falls to the page.
  function closePerson({ refocus = false } = {}) {
    const user = state.selected;
    const hadFocus = actionsEl.contains(document.activeElement);
    state.selected = null;
    actionsEl.hidden = true;
    for (const button of peopleEl.querySelectorAll("button.person[aria-expanded=true]")) {
      button.setAttribute("aria-expanded", "false");
    }
    if (refocus || hadFocus) {
      const button = user && peopleEl.querySelector(`button.person[data-user="${user}"]`);
      (button || $("people-title")).focus();
    }
  }

  // The mute button says what the chosen duration does.
  function muteLabel() {
    const lift = $("mute-for").value === "0";
    const button = actionsEl.querySelector('button[data-action="mute"]');
    button.textContent = lift ? "Lift mute" : "Mute";
    if (state.selected) button.setAttribute("aria-label", (lift ? "Lift mute of " : "Mute ") + state.selected);
  }

  // A room's name as the user knows it: "#room", or "@ann" for a direct message.
  function roomLabel(r) {
    return r.dm !== null ? "@" + r.dm : "#" + r.name;
  }

  function roomButton(r) {
    const li = el("li");
    const current = r.name === state.current;
    const button = el("button", "room-button" + (current ? " current" : ""));
    button.append(el("span", "room-name", r.dm ?? "#" + r.name));
    button.type = "button";
    button.dataset.room = r.name;
    if (current) button.setAttribute("aria-current", "true");
    const spoken = r.dm !== null ? "Direct message with " + r.dm : "#" + r.name;
    button.setAttribute("aria-label", r.unread ? spoken + ", " + r.unread + " unread" : spoken);
    if (r.unread) {
      const badge = el("span", "unread", String(r.unread));
      badge.setAttribute("aria-label", r.unread + " unread");
      button.append(" ", badge);
    }
    li.append(button);
    return li;
  }

  function renderRooms() {
    // Every room listed has its message list from the start (in the order the
    // rooms came), so switching to it finds it.
    for (const r of state.rooms.values()) logOf(r);
    const all = [...state.rooms.values()];
    const rooms = all.filter((r) => r.dm === null)
      .sort((a, b) => (a.name === LOBBY ? -1 : b.name === LOBBY ? 1 : a.name.localeCompare(b.name)));
    const dms = all.filter((r) => r.dm !== null).sort((a, b) => a.dm.localeCompare(b.dm));
    const focused = document.activeElement?.closest?.("button[data-room]")?.dataset.room;
    roomsEl.replaceChildren(...rooms.map(roomButton));
    dmsEl.replaceChildren(...dms.map(roomButton));
    // A keyboard user who pressed a room's button keeps the focus on it.
    if (focused) document.querySelector(`.rooms button[data-room="${CSS.escape(focused)}"]`)?.focus();
    $("dms-empty").hidden = dms.length > 0;
  }

  // Alerts (role=alert: refusals, kicks, bans) and notices (polite: invitations,
  // actions done) above the messages, each until dismissed; the newest few.
  function banner(region, kind, text) {
    const item = el("div", "banner banner-" + kind);
    const dismiss = el("button", "dismiss", "×");
    dismiss.type = "button";
    dismiss.setAttribute("aria-label", "Dismiss");
    item.append(el("span", "banner-text", text), dismiss);
    region.append(item);
    while (region.children.length > BANNERS_KEPT) region.firstElementChild.remove();
  }

  function showAlert(text) {
    banner(alertsEl, "alert", text);
  }

  function showInfo(text) {
    banner(noticesEl, "info", text);
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
    if (state.selected) closePerson();
    state.current = name;
    const r = store.room(name);
    r.unread = 0;
    store.markRead(r);
    for (const other of state.rooms.values()) logOf(other).hidden = other !== r;
    $("room-title").textContent = roomLabel(r);
    // The lobby is never left; a direct message stays yours (the server lists
    // it in every hello), so it is not offered either.
    $("leave-room").hidden = name === LOBBY || r.dm !== null;
    inviteEl.hidden = name === LOBBY || r.dm !== null;
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
    dmsEl,
    peopleEl,
    alertsEl,
    noticesEl,
    actionsEl,
    setStatus,
    showAlert,
    showInfo,
    openPerson,
    closePerson,
    muteLabel,
    roomLabel,
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
