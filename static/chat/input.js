// What the user does: write and send (Enter sends, Shift+Enter is a new
// line), tell others they are typing, join, switch and leave rooms, scroll up
// for older history, log out.

const TYPING_EVERY_MS = 3000;  // tell others at most this often
const HISTORY_PAGE = 50;
const LOAD_OLDER_PX = 40;      // this close to the top, the next older page is asked for
const ROOM_RULE = /^[A-Za-z0-9._-]{1,32}$/;

export function bindInput(store, view, connection, { LOBBY }) {
  const { state } = store;
  const $ = (id) => document.getElementById(id);
  const textEl = $("text");
  const composer = $("composer");
  const { messagesEl, roomsEl } = view;

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
    connection.send({ type: "history", room: r.name, before: r.oldestId, limit: HISTORY_PAGE });
  }

  function leaveCurrentRoom() {
    const name = state.current;
    if (name === LOBBY) return;
    // Offline, the leave waits for the next connection (or that connection's
    // hello would bring the room back).
    if (!state.online || !connection.send({ type: "leave", room: name })) state.pendingLeaves.add(name);
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
    }
  });
  textEl.addEventListener("input", () => {
    const now = Date.now();
    if (textEl.value.trim() && now - state.lastTypingSent > TYPING_EVERY_MS && state.online) {
      state.lastTypingSent = now;
      connection.send({ type: "typing", room: state.current });
    }
  });
  $("join-room").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("room-name");
    const name = input.value.trim();
    if (!ROOM_RULE.test(name)) return;
    input.value = "";
    if (!state.rooms.has(name)) connection.joinRoom(name);
    view.switchTo(name);
  });
  roomsEl.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-room]");
    if (button) view.switchTo(button.dataset.room);
  });
  $("leave-room").addEventListener("click", leaveCurrentRoom);
  messagesEl.addEventListener("scroll", () => {
    if (messagesEl.scrollTop < LOAD_OLDER_PX) loadOlder();
  });
  // Logging out drops what is still queued (the form then leaves the page):
  // the next login in this tab must not send it.
  document.querySelector("form.logout").addEventListener("submit", () => connection.end({ reload: false }));
}
