// chatfleet browser client: rooms, presence, history and typing over one
// WebSocket that is resumed gap-free after any failure. This module wires the
// others together and says what each server frame does:
//
//   state.js       rooms, last ids, people, the outbox (sessionStorage, per user)
//   render.js      the DOM: messages, notices, people, rooms, outbox, status
//   connection.js  the socket: backoff, /session probe, resume, resend, session end
//   input.js       composer, keyboard, rooms, history on scroll, logout
//
// The modules import nothing themselves: each is loaded here by the versioned
// URL the page lists (a modulepreload link made with static_url). A plain
// `import "./state.js"` has no ?v=, so after a deploy a browser could pair a
// new main.js with an old copy of state.js it still holds.

const moduleUrl = (name) => document.querySelector(`link[rel="modulepreload"][data-module="${name}"]`).href;
const [stateModule, { createView }, { createConnection }, { bindInput }] = await Promise.all(
  ["state", "render", "connection", "input"].map((name) => import(moduleUrl(name))),
);
const { LOBBY, createStore } = stateModule;

const body = document.body;
const store = createStore(body.dataset.user);
const { state } = store;
const view = createView(store, stateModule);
const connection = createConnection(store, view, stateModule, onFrame);
bindInput(store, view, connection, stateModule);

function onFrame(frame) {
  switch (frame.type) {
    case "hello":
      if (!connection.greeted(frame)) break;  // another user's session: the page is leaving
      body.dataset.instance = frame.instance;
      for (const name of frame.rooms || []) if (!state.pendingLeaves.has(name)) store.room(name);
      view.renderRooms();
      connection.catchUp({ skipLobby: true });  // the server joins the lobby itself (?after=)
      break;
    case "chat":
      view.showChat(frame);
      break;
    case "history":
      view.showHistory(frame);
      break;
    case "ack":
      store.acked(frame.cid);
      view.renderOutbox();
      break;
    case "presence": {
      const r = state.rooms.get(frame.room);
      if (!r) break;
      r.confirmed = true;
      r.settled = true;
      r.people = new Set(frame.users);
      if (r.name === state.current) view.renderPeople();
      break;
    }
    case "joined":
    case "left": {
      const r = state.rooms.get(frame.room);
      if (!r) break;
      if (frame.type === "joined") r.people.add(frame.user); else r.people.delete(frame.user);
      if (frame.type === "left") view.stopTyping(r, frame.user);
      if (r.name === state.current) view.renderPeople();
      if (frame.user !== store.me) view.showNotice(frame.room, frame.user + (frame.type === "joined" ? " joined" : " left"));
      break;
    }
    case "typing":
      view.showTyping(frame);
      break;
    case "reset":
      // The server could not replay everything since our last message:
      // the most recent ones follow. Say so where the gap is.
      view.showNotice(frame.room, "⚠ some earlier messages of this room are not shown here");
      break;
    case "error":
      if (frame.code === "unavailable") connection.unavailable();
      else view.showNotice(state.current, "⚠ " + frame.reason);
      break;
    default:
      break;  // newer server, older client: ignore what we do not know
  }
}

// Test and debugging hook: read-only view of the client's state.
window.chatfleet = { state };
store.room(LOBBY);
view.switchTo(LOBBY);
connection.connect();
