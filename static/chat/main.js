// chatfleet browser client: rooms, presence, history, typing, edits and
// deletes over one WebSocket that is resumed gap-free after any failure (or
// told plainly, by a `reset`, when the server cannot bring a room up to date). This module wires the
// others together and says what each server frame does:
//
//   state.js       rooms, last ids and epochs, people, the outbox (sessionStorage,
//                  per user), edits and deletes awaiting their answer
//   render.js      the DOM: messages (edited in place, deleted away), the editor,
//                  notices, people, rooms, outbox, status
//   connection.js  the socket: backoff, /session probe, resume, resend, session end
//   input.js       composer, keyboard, rooms, message actions, history on scroll, logout
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
      // (private rooms and DMs come back in every hello: not those left on this page)
      for (const name of frame.rooms || []) {
        if (!state.pendingLeaves.has(name) && !state.leftRooms.has(name)) store.room(name);
      }
      view.renderRooms();
      connection.catchUp({ skipLobby: true });  // the server joins the lobby itself (?after=)
      break;
    case "chat":
      view.showChat(frame);
      break;
    case "history": {
      const asked = store.answered((q) => q.kind === "history" && q.room === frame.room);
      view.showHistory(frame, asked);
      break;
    }
    case "edited": {
      // Ours (the answer to the edit in flight), someone else's, or replayed on
      // a resume: the same in place.
      const ours = connection.changeAnswered(
        (c) => c.type === "edit" && c.room === frame.room && c.id === frame.id);
      view.applyEdit(frame);
      if (ours) view.announce("Your edit is saved.");
      break;
    }
    case "deleted": {
      const ours = connection.changeAnswered(
        (c) => c.type === "delete" && c.room === frame.room && c.id === frame.id);
      view.applyDelete(frame);
      if (ours) view.announce("Message deleted.");
      break;
    }
    case "ack":
      store.answered((q) => q.kind === "chat" && q.cid === frame.cid);
      store.acked(frame.cid);
      view.renderOutbox();
      break;
    case "presence": {
      store.answered((q) => (q.kind === "join" || q.kind === "create") && q.room === frame.room);
      const r = state.rooms.get(frame.room);
      if (!r) break;
      r.confirmed = true;
      r.settled = true;
      r.people = new Set(frame.users);
      // The epoch goes with the resume point just reached (sent back on the next resume).
      if (typeof frame.epoch === "string") r.epoch = frame.epoch || null;
      if (frame.owner !== undefined) r.owner = frame.owner;
      if (typeof frame.role === "string") r.role = frame.role;
      view.setRole(r);
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
      // The server could not bring the room up to date from our last message
      // (trimmed, or its history lost): the recent messages follow. What we had
      // of it goes, and a notice says why.
      view.resetRoom(frame.room, frame.reason, frame.epoch);
      break;
    case "dm":
      openDirect(frame);
      break;
    case "invited":
      invited(frame);
      break;
    case "kicked":
      kicked(frame);
      break;
    case "moderated":
      moderated(frame);
      break;
    case "error":
      refused(frame);
      break;
    default:
      break;  // newer server, older client: ignore what we do not know
  }
}

const label = (name) => (state.rooms.has(name) ? view.roomLabel(state.rooms.get(name)) : "#" + name);

// Join `name` unless it is joined or being joined on this socket.
function ensureJoined(r) {
  if (!r.confirmed && !store.joining(r.name)) connection.joinRoom(r.name);
}

// A room is gone from this page (kicked, banned, refused): its list, its log,
// what was queued for it. The focus, if it was on something now gone, goes to
// the composer.
function dropRoom(name) {
  const r = state.rooms.get(name);
  if (!r || name === LOBBY) return;
  view.removeRoom(r);
  store.dropRoom(name);
  if (state.current === name) view.switchTo(LOBBY); else view.renderRooms();
  view.renderOutbox();
  if (!document.activeElement || document.activeElement === body) document.getElementById("text").focus();
}

// The answer to our `dm`: the direct message's room, opened (and joined).
function openDirect({ user, room }) {
  store.answered((q) => q.kind === "dm" && q.user === user);
  const r = store.room(room);
  r.dm = user;
  state.leftRooms.delete(room);
  ensureJoined(r);
  view.switchTo(room);
  document.getElementById("text").focus();
}

// Someone added us to a private room or started a direct message: listed and
// joined at once (its messages count as unread), and said.
function invited({ room, by }) {
  const known = state.rooms.has(room);
  const r = store.room(room);
  if (!known) r.fresh = true;
  if (r.dm !== null && by) r.dm = by;
  state.leftRooms.delete(room);
  ensureJoined(r);
  view.renderRooms();
  view.showInfo(r.dm !== null ? `${by} started a direct message with you.`
    : `${by} invited you to #${room}.`);
}

// The server already took this socket out of the room: tell the user, loudly,
// and take the room off the page (the lobby stays listed).
function kicked({ room, by, ban }) {
  const what = ban ? "banned you from" : "removed you from";
  view.showAlert(`${by || "A moderator"} ${what} ${label(room)}.`);
  dropRoom(room);
}

const DURATIONS = { 60: "1 minute", 600: "10 minutes", 3600: "1 hour", 86400: "1 day" };
const duration = (s) => DURATIONS[s] || `${s} seconds`;

// What a moderation frame did, said once the server stored it.
function moderated(frame) {
  const { action, room, user } = frame;
  const q = store.answered((x) => x.kind === action && x.room === room && x.user === user);
  const where = label(room);
  const said = {
    invite: () => `${user} is invited to ${where}.`,
    role: () => `${user} is now a ${q && q.role === "member" ? "member" : "moderator"} of ${where}.`,
    kick: () => `${user} was removed from ${where}.`,
    ban: () => `${user} is banned from ${where}.`,
    unban: () => `${user} may join ${where} again.`,
    mute: () => (q && q.seconds === 0 ? `${user} may write in ${where} again.`
      : `${user} is muted in ${where}` + (q ? ` for ${duration(q.seconds)}.` : ".")),
  }[action];
  const text = said ? said() : `${action}: done for ${user} in ${where}.`;
  view.showInfo(text);
  view.showNotice(room, text);
}

// What a refused action was, for its alert.
function attempted(q) {
  const where = label(q.room);
  switch (q.kind) {
    case "invite": return `invite ${q.user} to ${where}`;
    case "role": return `make ${q.user} a ${q.role} of ${where}`;
    case "mute": return q.seconds === 0 ? `lift ${q.user}'s mute in ${where}` : `mute ${q.user} in ${where}`;
    case "dm": return `open a direct message with ${q.user}`;
    default: return `${q.kind} ${q.user} from ${where}`;
  }
}

// A refused edit or delete (the error names `of` and `room`): it answers the
// change in flight (state.changes). The message shows the server's text again.
const CHANGE_WHY = {
  bad_frame: "that message is no longer in the room's history",
  unavailable: "the chat is briefly unavailable; try again",
  rate_limited: "too many messages at once; wait a moment and try again",
};

function changeRefused(frame) {
  const c = connection.changeAnswered(
    (x) => x.type === frame.of && (typeof frame.room !== "string" || x.room === frame.room));
  const room = c ? c.room : frame.room;
  // A room already gone from the page (kicked, left): the user was told.
  if (typeof room === "string" && !state.rooms.has(room)) return;
  if (c) view.refreshMessage(c.room, c.id);
  const why = CHANGE_WHY[frame.code] || String(frame.reason || frame.code).replace(/[.\s]+$/, "");
  const where = typeof room === "string" ? label(room) : "this room";
  view.showAlert(frame.of === "edit" ? `Your edit in ${where} was not saved: ${why}.`
    : `The message in ${where} was not deleted: ${why}.`);
}

// An error answers the oldest frame still waiting (the server handles one
// socket's frames in order); what it means depends on that frame. Edits and
// deletes wait apart (their success comes through the room, not in order).
function refused(frame) {
  if (frame.of === "edit" || frame.of === "delete") {
    changeRefused(frame);
    return;
  }
  const q = store.answered(() => true);
  const code = frame.code;
  const reason = String(frame.reason || code).replace(/[.\s]+$/, "");
  // (the server's reason for `unavailable` speaks of chats and cids)
  const why = code === "unavailable" ? "the chat is briefly unavailable; try again" : reason;
  if (code === "unavailable" && (!q || q.kind === "join" || q.kind === "chat" || q.kind === "history")) {
    if (q && q.kind === "history") { const r = state.rooms.get(q.room); if (r) r.loadingHistory = false; }
    connection.unavailable();  // joins and the outbox are retried
    return;
  }
  if (!q) {
    view.showNotice(state.current, "⚠ " + reason);
    if (code === "forbidden" || code === "muted") view.showAlert(reason);
    return;
  }
  // A join, chat or history of a room already gone from the page (a kick that
  // crossed it, a refused join before it): the user was told once already.
  if ((q.kind === "join" || q.kind === "chat" || q.kind === "history") && !state.rooms.has(q.room)) return;
  switch (q.kind) {
    case "join":
      if (code === "rate_limited") {
        view.showNotice(q.room, "⚠ " + reason);  // still listed: joined again at the next catch-up
      } else if (q.implicit) {
        view.showAlert(`You cannot enter the lobby: ${reason}.`);
      } else {
        view.showAlert(`You cannot join ${label(q.room)}: ${reason}.`);
        dropRoom(q.room);
      }
      break;
    case "create":
      // Never retried as a join: that would make a public room of the name.
      view.showAlert(`Could not create #${q.room}: ${why}.`);
      dropRoom(q.room);
      break;
    case "chat":
      if (code === "muted" || code === "forbidden" || code === "too_large" || code === "bad_room") {
        // Refused for good: out of the outbox, and back in the composer if it is empty.
        const item = store.unqueue(q.cid);
        view.renderOutbox();
        const textEl = document.getElementById("text");
        if (item && item.room === state.current && !textEl.value) textEl.value = item.text;
        view.showAlert(`Your message to ${label(q.room)} was not sent: ${reason}.`);
      } else {
        view.showNotice(q.room, "⚠ " + reason);  // still queued: resent at the next catch-up
      }
      break;
    case "history": {
      const r = state.rooms.get(q.room);
      if (r) r.loadingHistory = false;
      view.showNotice(q.room, "⚠ " + reason);
      break;
    }
    default:  // dm, invite, role, kick, ban, unban, mute
      view.showAlert(`Could not ${attempted(q)}: ${why}.`);
      break;
  }
}

// Test and debugging hook: read-only view of the client's state.
window.chatfleet = { state };
store.room(LOBBY);
view.switchTo(LOBBY);
connection.connect();
