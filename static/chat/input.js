// What the user does: write and send (Enter sends, Shift+Enter is a new
// line), edit their messages (a message's Edit, or the up arrow in an empty
// composer for their last one in the room: Enter saves, Escape cancels) and
// delete them (a moderator, owner or admin: anyone's), tell others they are
// typing, join, create (private), switch and leave rooms, invite someone, act
// on a person (message, kick, ban, mute, make moderator), dismiss alerts and
// notices, scroll up for older history, log out.

const TYPING_EVERY_MS = 3000;  // tell others at most this often
const HISTORY_PAGE = 50;
const LOAD_OLDER_PX = 40;      // this close to the top, the next older page is asked for
const ROOM_RULE = /^[A-Za-z0-9._-]{1,32}$/;

export function bindInput(store, view, connection, { LOBBY }) {
  const { state } = store;
  const $ = (id) => document.getElementById(id);
  const textEl = $("text");
  const composer = $("composer");
  const { messagesEl, roomsEl, dmsEl, actionsEl } = view;
  const OFFLINE = "You are offline: try again once the chat is back online.";

  // Queued first, so a message survives a refresh or an outage; sent at once
  // when online, else by the next socket's catch-up.
  function say(text) {
    const item = store.queue(text);
    view.renderOutbox();
    if (state.online) connection.sendChat(item);
  }

  function loadOlder() {
    const r = store.room(state.current);
    // Not while the join's own history is still arriving: a scroll event from
    // switching rooms would otherwise page back before the first page is in.
    if (!state.online || !r.settled || !r.more || r.loadingHistory || !r.oldestId) return;
    r.loadingHistory = true;
    connection.request({ type: "history", room: r.name, before: r.oldestId, limit: HISTORY_PAGE },
      { generation: r.generation });
  }

  function leaveCurrentRoom() {
    const name = state.current;
    if (name === LOBBY) return;
    // Offline, the leave waits for the next connection (or that connection's
    // hello would bring the room back).
    if (!state.online || !connection.send({ type: "leave", room: name })) state.pendingLeaves.add(name);
    state.leftRooms.add(name);
    view.removeRoom(state.rooms.get(name));
    store.dropRoom(name);
    view.switchTo(LOBBY);
  }

  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = textEl.value;
    if (!text.trim()) return;
    textEl.value = "";
    say(text);
  });
  textEl.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    } else if (event.key === "ArrowUp" && !textEl.value && !event.isComposing
        && !event.shiftKey && !event.altKey && !event.ctrlKey && !event.metaKey) {
      // The usual shortcut: the up arrow in an empty composer edits one's last message here.
      const last = view.lastOwnMessage(state.current);
      if (last) {
        event.preventDefault();
        last.scrollIntoView({ block: "nearest" });
        view.openEditor(last, { back: "composer" });
      }
    }
  });

  // Save the message being edited: sent as an edit (shown "saving…" until the
  // room's `edited` comes back; a refusal is an alert and the old text again).
  function saveEdit() {
    const editing = state.editing;
    if (!editing) return;
    const li = view.findMessage(editing.room, editing.id);
    const area = $("edit-text");
    if (!li || !area) {
      view.closeEditor({ refocus: true });
      return;
    }
    const text = area.value;
    if (!text.trim()) {
      view.editProblem("A message cannot be empty: to remove it, use Delete.");
      return;
    }
    if (text !== view.shownText(li)
        && !connection.change({ type: "edit", room: editing.room, id: editing.id, text })) {
      view.editProblem(OFFLINE);
      return;
    }
    view.closeEditor({ refocus: true });
    view.refreshMessage(editing.room, editing.id);
  }

  function deleteMessage(li) {
    const room = li.closest("ol.room-log")?.dataset.room;
    if (!room) return;
    if (!connection.change({ type: "delete", room, id: li.dataset.id })) {
      view.showAlert(OFFLINE);
      return;
    }
    view.cancelDelete(li);
    view.refreshMessage(room, li.dataset.id);
    textEl.focus();
  }

  // A message's actions, its editor and delete question, and a room's reset
  // notice, all inside #messages.
  messagesEl.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-msg-action]");
    if (!button) return;
    const li = button.closest("li.msg");
    switch (button.dataset.msgAction) {
      case "edit": if (li) view.openEditor(li, { back: "button" }); break;
      case "save": saveEdit(); break;
      case "cancel": view.closeEditor({ refocus: true }); break;
      case "delete": if (li) view.confirmDelete(li); break;
      case "confirm-delete": if (li) deleteMessage(li); break;
      case "keep": if (li) view.cancelDelete(li, { refocus: true }); break;
      case "dismiss":
        button.closest("li.notice")?.remove();
        textEl.focus();
        break;
      default: break;
    }
  });
  messagesEl.addEventListener("keydown", (event) => {
    if (event.target.id === "edit-text") {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        saveEdit();
      } else if (event.key === "Escape") {
        event.preventDefault();
        view.closeEditor({ refocus: true });
      }
      return;
    }
    const li = event.target.closest?.("li.msg");
    if (event.key !== "Escape" || !li) return;
    if (li.querySelector(".editor")) {
      event.preventDefault();
      view.closeEditor({ refocus: true });
    } else if (li.querySelector(".confirm-delete")) {
      event.preventDefault();
      view.cancelDelete(li, { refocus: true });
    }
  });
  textEl.addEventListener("input", () => {
    const now = Date.now();
    // Only in a room joined on this socket: the server refuses it elsewhere.
    if (textEl.value.trim() && now - state.lastTypingSent > TYPING_EVERY_MS && state.online
        && store.room(state.current).confirmed) {
      state.lastTypingSent = now;
      connection.send({ type: "typing", room: state.current });
    }
  });
  // Join (or create, public) a room by name; with "Private" checked, create
  // it private instead (the server refuses a name in use: room_exists).
  const privateEl = $("room-private");
  const syncJoinButton = () => { $("join-button").textContent = privateEl.checked ? "Create" : "Join"; };
  privateEl.addEventListener("change", syncJoinButton);
  $("join-room").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("room-name");
    const name = input.value.trim();
    if (!ROOM_RULE.test(name)) return;
    if (privateEl.checked && !state.rooms.has(name)) {
      // Sent now or not at all: a create queued for later could come back as
      // the plain join of a public room of that name.
      if (!connection.request({ type: "create", room: name, private: true })) {
        view.showAlert(OFFLINE);
        return;
      }
      store.room(name).confirmed = false;
    } else if (!state.rooms.has(name)) {
      connection.joinRoom(name);
    }
    input.value = "";
    privateEl.checked = false;
    syncJoinButton();
    state.leftRooms.delete(name);
    view.switchTo(name);
  });
  for (const list of [roomsEl, dmsEl]) {
    list.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-room]");
      if (button) view.switchTo(button.dataset.room);
    });
  }

  // Invite someone to the current (private) room.
  $("invite").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("invite-name");
    const user = input.value.trim();
    if (!ROOM_RULE.test(user)) return;
    if (!connection.request({ type: "invite", room: state.current, user })) {
      view.showAlert(OFFLINE);
      return;
    }
    input.value = "";
  });

  // The people list: a person's button opens (or closes) their actions.
  view.peopleEl.addEventListener("click", (event) => {
    const button = event.target.closest("button.person");
    if (!button) return;
    if (state.selected === button.dataset.user) view.closePerson({ refocus: true });
    else view.openPerson(button.dataset.user);
  });

  // The direct message with `user`: opened at once if known, else asked for.
  function message(user) {
    const known = [...state.rooms.values()].find((r) => r.dm === user);
    if (known) {
      view.switchTo(known.name);
      textEl.focus();
    } else if (!connection.request({ type: "dm", user })) {
      view.showAlert(OFFLINE);
    }
  }

  // Each action is sent as it is: the server says who may (`moderated`, or an
  // error shown as an alert).
  const ACTIONS = {
    kick: (room, user) => ({ type: "kick", room, user }),
    ban: (room, user) => ({ type: "ban", room, user }),
    moderator: (room, user) => ({ type: "role", room, user, role: "moderator" }),
    mute: (room, user) => ({ type: "mute", room, user, seconds: Number($("mute-for").value) }),
  };
  actionsEl.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    const user = state.selected;
    if (!button || !user) return;
    const action = button.dataset.action;
    if (action === "close") {
      view.closePerson({ refocus: true });
    } else if (action === "dm") {
      message(user);
    } else if (!connection.request(ACTIONS[action](state.current, user))) {
      view.showAlert(OFFLINE);
    }
  });
  actionsEl.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      view.closePerson({ refocus: true });
    }
  });
  $("mute-for").addEventListener("change", view.muteLabel);

  // Dismissing an alert or notice; the focus goes to the next one, or the composer.
  for (const region of [view.alertsEl, view.noticesEl]) {
    region.addEventListener("click", (event) => {
      const button = event.target.closest("button.dismiss");
      if (!button) return;
      const item = button.closest(".banner");
      const next = item.nextElementSibling || item.previousElementSibling;
      item.remove();
      (next ? next.querySelector("button.dismiss") : textEl).focus();
    });
  }
  $("leave-room").addEventListener("click", leaveCurrentRoom);
  messagesEl.addEventListener("scroll", () => {
    if (messagesEl.scrollTop < LOAD_OLDER_PX) loadOlder();
  });
  // Logging out drops what is still queued (the form then leaves the page):
  // the next login in this tab must not send it.
  document.querySelector("form.logout").addEventListener("submit", () => connection.end({ reload: false }));
}
