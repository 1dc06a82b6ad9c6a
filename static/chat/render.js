// Everything the page shows: messages and notices per room, history pages,
// edits (in place, marked "(edited)") and deletes (the message leaves the page),
// the message editor and the delete confirmation, a room's reset notice, the
// people (and what one may do to a person), the rooms and direct-message lists
// with their unread counts, the outbox, who is typing, the connection status,
// and the alerts and notices read out to screen readers.
// Names and texts always go in as textContent, never as HTML.

const TYPING_SHOWN_MS = 5000;  // forget a typist after this long
const NEAR_BOTTOM_PX = 80;     // a reader this close to the end keeps following new messages
const BANNERS_KEPT = 3;        // alerts (and notices) shown at once; older ones go
const MAX_TEXT_CHARS = 4000;   // as the composer (docs/protocol.md: Limits)
// Who may delete anyone's message in a room (presence `role`); the server
// decides in the end.
const MODERATING = new Set(["admin", "owner", "moderator"]);
// A reset (docs/protocol.md): why older messages are not shown.
const RESET_REASONS = {
  trimmed: "messages you missed are gone from this room's history (trimmed); scroll up for what it still keeps",
  lost: "the server lost this room's history",
};

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
  const announcerEl = $("announcer");
  const textEl = $("text");

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
      r.log.classList.toggle("can-moderate", MODERATING.has(r.role));
      messagesEl.append(r.log);
    }
    return r.log;
  }

  function button(className, text, action, label) {
    const b = el("button", className, text);
    b.type = "button";
    b.dataset.msgAction = action;
    if (label) b.setAttribute("aria-label", label);
    return b;
  }

  // What one may do to a message: edit and delete one's own; delete anyone's
  // where one moderates (shown by the log's `can-moderate`, set from presence,
  // which comes after the replayed history).
  function messageActions(msg) {
    const box = el("span", "msg-actions");
    if (msg.user === me) {
      box.append(button("msg-action", "Edit", "edit", "Edit your message"),
        button("msg-action", "Delete", "delete", "Delete your message"));
    } else {
      box.append(button("msg-action mod-only", "Delete", "delete", "Delete message by " + msg.user));
    }
    return box;
  }

  // A message's node. Its text as the server last gave it is kept on the node
  // (`chatText`), so a refused edit shows it again; it goes with the node.
  function messageNode(msg) {
    const li = el("li", "msg" + (msg.user === me ? " mine" : ""));
    li.dataset.id = msg.id;
    const when = new Date(msg.ts * 1000);
    const time = el("time", "time", when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
    time.dateTime = when.toISOString();
    time.title = when.toLocaleString();
    li.chatText = msg.text;
    li.edited = msg.edited === true;
    li.append(el("span", "user", msg.user), time, el("span", "marks"), el("p", "text", msg.text),
      messageActions(msg));
    showState(li, msg.room);
    return li;
  }

  const roomOfNode = (li) => li.closest("ol.room-log")?.dataset.room ?? null;

  // Message `id` of room `name` on the page, or null.
  function findMessage(name, id) {
    const r = state.rooms.get(name);
    if (!r || !r.log || typeof id !== "string") return null;
    return r.log.querySelector(`li.msg[data-id="${CSS.escape(id)}"]`);
  }

  // The text, marks and state of a message node: its confirmed text, or the
  // text of an edit on its way ("saving…"); "deleting…" while a delete is.
  function showState(li, name) {
    const pending = store.pendingChange(name, li.dataset.id);
    li.querySelector(".text").textContent = pending.text ?? li.chatText;
    const marks = [];
    if (li.edited) marks.push(el("span", "edited-mark", "(edited)"));
    if (pending.deleting) marks.push(el("span", "pending-mark", "deleting…"));
    else if (pending.text !== null) marks.push(el("span", "pending-mark", "saving…"));
    li.querySelector(".marks").replaceChildren(...marks);
    li.classList.toggle("changing", pending.deleting || pending.text !== null);
  }

  // Show message `id` of room `name` as the server and the pending changes say.
  function refreshMessage(name, id) {
    const li = findMessage(name, id);
    if (li) showState(li, name);
  }

  // An `edited` frame (live, or replayed on a resume): the new text in place,
  // marked. One for a message not on the page is ignored.
  function applyEdit({ room, id, text }) {
    const li = findMessage(room, id);
    if (!li || typeof text !== "string") return;
    li.chatText = text;
    li.edited = true;
    showState(li, room);
  }

  // A `deleted` frame: the message leaves the page, its text with it (the
  // editor, if open on it, and any change of it not yet sent). The focus, if it
  // was inside, goes to the composer.
  function applyDelete({ room, id }) {
    store.forgetMessage(room, id);
    const li = findMessage(room, id);
    if (!li) return;
    const hadFocus = li.contains(document.activeElement);
    if (state.editing && state.editing.room === room && state.editing.id === id) closeEditor();
    li.chatText = "";
    li.remove();
    if (hadFocus) textEl.focus();
  }

  // The user's own newest message in room `name` that is not being deleted:
  // what the up arrow in an empty composer edits.
  function lastOwnMessage(name) {
    const r = state.rooms.get(name);
    if (!r || !r.log) return null;
    const mine = [...r.log.querySelectorAll("li.msg.mine")];
    for (let i = mine.length - 1; i >= 0; i -= 1) {
      if (!store.pendingChange(name, mine[i].dataset.id).deleting) return mine[i];
    }
    return null;
  }

  // The text a message shows now (its pending edit's, else the server's).
  function shownText(li) {
    return store.pendingChange(roomOfNode(li), li.dataset.id).text ?? li.chatText;
  }

  // Edit message `li` in place: a text box with its text (Enter saves,
  // Shift+Enter is a new line, Escape cancels), Save and Cancel. One at a time.
  // `back`: where the focus returns ("composer" or the message's Edit button).
  function openEditor(li, { back = "button" } = {}) {
    closeEditor();
    const name = roomOfNode(li);
    if (!name) return;
    cancelDeletes();
    state.editing = { room: name, id: li.dataset.id, back };
    const box = el("div", "editor");
    const label = el("label", "visually-hidden", "Edit your message");
    label.htmlFor = "edit-text";
    const area = el("textarea", "edit-text");
    area.id = "edit-text";
    area.maxLength = MAX_TEXT_CHARS;
    area.value = shownText(li);
    area.rows = Math.min(6, Math.max(1, area.value.split("\n").length));
    area.setAttribute("aria-describedby", "edit-hint edit-problem");
    const hint = el("p", "edit-hint", "Enter saves · Shift+Enter new line · Escape cancels");
    hint.id = "edit-hint";
    const problem = el("p", "edit-problem");
    problem.id = "edit-problem";
    problem.setAttribute("role", "alert");
    const buttons = el("div", "edit-buttons");
    buttons.append(button("", "Save", "save"), button("quiet", "Cancel", "cancel"));
    box.append(label, area, hint, problem, buttons);
    li.querySelector(".text").hidden = true;
    li.querySelector(".msg-actions").hidden = true;
    li.classList.add("editing");
    li.append(box);
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);
  }

  // Close the editor (nothing saved by this); with `refocus`, the focus goes
  // back where the edit began (the composer, or the message's Edit button).
  function closeEditor({ refocus = false } = {}) {
    const editing = state.editing;
    if (!editing) return;
    state.editing = null;
    const li = findMessage(editing.room, editing.id);
    if (li) {
      li.querySelector(".editor")?.remove();
      li.querySelector(".text").hidden = false;
      li.querySelector(".msg-actions").hidden = false;
      li.classList.remove("editing");
    }
    if (!refocus) return;
    const editButton = li?.querySelector('button[data-msg-action="edit"]');
    (editing.back === "button" && editButton ? editButton : textEl).focus();
  }

  // Why the editor cannot save (read out: role=alert).
  function editProblem(text) {
    const problem = $("edit-problem");
    if (problem) problem.textContent = text;
    $("edit-text")?.focus();
  }

  // Ask before deleting: "Delete this message for everyone?" with Delete and
  // Cancel, in place of the message's actions (Escape cancels).
  function confirmDelete(li) {
    if (li.querySelector(".confirm-delete")) return;
    closeEditor();
    cancelDeletes();
    const mine = li.classList.contains("mine");
    const box = el("span", "confirm-delete");
    box.setAttribute("role", "group");
    const question = el("span", "confirm-question",
      mine ? "Delete your message for everyone?" : "Delete this message for everyone?");
    question.id = "confirm-" + li.dataset.id;
    box.setAttribute("aria-labelledby", question.id);
    box.append(question, button("danger", "Delete", "confirm-delete"), button("quiet", "Cancel", "keep"));
    li.querySelector(".msg-actions").hidden = true;
    li.append(box);
    box.querySelector('button[data-msg-action="confirm-delete"]').focus();
  }

  // Every delete question open (one at a time: opening another, or the editor, closes it).
  function cancelDeletes() {
    for (const box of messagesEl.querySelectorAll(".confirm-delete")) cancelDelete(box.closest("li.msg"));
  }

  function cancelDelete(li, { refocus = false } = {}) {
    const box = li.querySelector(".confirm-delete");
    if (!box) return;
    box.remove();
    li.querySelector(".msg-actions").hidden = false;
    if (refocus) li.querySelector('button[data-msg-action="delete"]')?.focus();
  }

  // The user's role in `r` (presence): whether others' messages offer Delete.
  function setRole(r) {
    logOf(r).classList.toggle("can-moderate", MODERATING.has(r.role));
  }

  // Say `text` to screen readers (a polite live region, visually hidden).
  function announce(text) {
    announcerEl.textContent = "";
    // A fresh node each time, so the same words twice are read twice.
    announcerEl.append(el("span", "", text));
  }

  // A `reset`: the server cannot bring this room's history up to date from
  // where we were, and the recent messages follow. What the page had of the
  // room goes (changes made to it while away are gone with that history, and
  // the recent messages come again, each once); a notice says why, until
  // dismissed; history pages back from the recent messages again.
  function resetRoom(name, reason, epoch) {
    const r = state.rooms.get(name);
    if (!r) return;
    const log = logOf(r);
    const hadFocus = log.contains(document.activeElement);
    if (state.editing && state.editing.room === name) closeEditor();
    for (const li of log.querySelectorAll("li.msg")) li.chatText = "";
    // Unread counts: the recent messages up to the old resume point were seen.
    if (r.lastId) r.unreadAfter = r.lastId;
    r.lastId = null;
    r.oldestId = null;
    // The history the old epoch named is gone: keep the one the reset names (a
    // repair's reset has no presence after it).
    r.epoch = epoch || null;
    r.more = true;
    r.loadingHistory = false;
    r.generation += 1;
    const why = RESET_REASONS[reason] || "reason: " + String(reason);
    const text = `Earlier messages are no longer available: ${why}.`;
    const notice = el("li", "notice reset-notice");
    notice.append(el("span", "notice-text", text),
      button("dismiss", "×", "dismiss", "Dismiss notice: earlier messages are no longer available"));
    log.replaceChildren(notice);
    if (hadFocus) textEl.focus();
    if (name === state.current) {
      messagesEl.scrollTop = 0;
      announce(text);
    }
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
    const seenBefore = r.unreadAfter !== null && !idAfter(msg.id, r.unreadAfter);
    if (!seenBefore) r.unreadAfter = null;
    if (visible) {
      store.markRead(r);
    } else if (msg.user !== me && !seenBefore && store.unseen(r, msg.id)) {
      // What arrives after the room's first replay on this page, or after what
      // the user had seen of it before (a refresh, another tab), is unread.
      r.unread += 1;
      renderRooms();
    }
  }

  // A history page; `asked`: its request, whose `generation` says whether a
  // reset came since (then the page is of a view that is gone).
  function showHistory(frame, asked) {
    const r = state.rooms.get(frame.room);
    if (!r) return;
    if (asked && asked.generation !== undefined && asked.generation !== r.generation) return;
    r.loadingHistory = false;
    r.more = frame.more;
    const older = frame.messages.filter((m) => !r.oldestId || idAfter(r.oldestId, m.id));
    if (!older.length) return;
    const height = messagesEl.scrollHeight;
    // After a reset its notice stays first: it says what is missing above.
    const notice = logOf(r).querySelector(":scope > .reset-notice");
    if (notice) notice.after(...older.map(messageNode)); else logOf(r).prepend(...older.map(messageNode));
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
    if (state.editing && state.editing.room !== name) closeEditor();
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
    if (state.editing && state.editing.room === r.name) closeEditor();
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
    findMessage,
    refreshMessage,
    applyEdit,
    applyDelete,
    lastOwnMessage,
    shownText,
    openEditor,
    closeEditor,
    editProblem,
    confirmDelete,
    cancelDelete,
    setRole,
    announce,
    resetRoom,
  };
}
