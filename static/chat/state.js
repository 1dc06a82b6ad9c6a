// What the page knows besides its DOM: the rooms (resume points and epochs,
// people, the user's role), the connection's bookkeeping, the outbox of
// messages typed but not yet acknowledged, and the edits and deletes awaiting
// their answer. Changed only through the functions below and by
// the connection (its own fields); main.js exposes `state` read-only to tests.

export const LOBBY = "lobby";

// The outbox lives in sessionStorage: a message typed just before a refresh is
// still sent after it, exactly once. A tab outlives its login, though (log out,
// someone else logs in), so the outbox is kept per user and forgotten when the
// session ends: one user's message never goes out under another's session.
const OUTBOX_PREFIX = "chatfleet.outbox.";
// Where older pages kept one outbox for the whole tab: whose messages those are
// is unknown, so they are dropped, never sent.
const UNKEYED_OUTBOX = "chatfleet.outbox";
// Per user, per room: the newest message id the user has seen there, so a
// refresh (or another tab) knows what is still unread.
const READ_PREFIX = "chatfleet.read.";

// Stream ids are "<ms>-<seq>"; both parts fit a double exactly.
const idParts = (id) => id.split("-").map(Number);

// True when id `a` comes after `b` (or there is no `b` yet).
export function idAfter(a, b) {
  if (!b) return true;
  const [am, as] = idParts(a);
  const [bm, bs] = idParts(b);
  return am > bm || (am === bm && as > bs);
}

// A direct-message room is named by the server ("@ann+bob"): a typed room name
// never starts with "@". The other user is the one of the two who is not `me`;
// a frame that names them (`dm`, `invited`) is preferred over this parsing.
export function dmPeer(name, me) {
  if (!name.startsWith("@")) return null;
  const users = name.slice(1).split("+");
  if (users.length !== 2) return name.slice(1);
  return users[0] === me ? users[1] : users[0];
}

// How many rooms keep a "read up to" mark (localStorage); the oldest go first.
const READ_MARKS_KEPT = 200;

export const newCid = () =>
  (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random()).slice(0, 64);

export function createStore(me) {
  const outboxKey = OUTBOX_PREFIX + me;  // names are [A-Za-z0-9._-]: safe in a key
  const readKey = READ_PREFIX + me;
  sessionStorage.removeItem(UNKEYED_OUTBOX);

  const loadOutbox = () => {
    try { return JSON.parse(sessionStorage.getItem(outboxKey)) || []; } catch { return []; }
  };
  const loadReadMarks = () => {
    try {
      const marks = JSON.parse(localStorage.getItem(readKey));
      return marks && typeof marks === "object" ? marks : {};
    } catch { return {}; }
  };
  // Last ids live only as long as the page: a fresh page starts from the
  // recent history.
  const state = {
    ws: null,
    attempt: 0,
    online: false,
    ended: false,              // this page's session is over: nothing more is sent
    probedTwice: false,
    pageJustServed: true,
    retryTimer: null,
    rooms: new Map(),          // name -> room state, see newRoom
    current: LOBBY,
    selected: null,            // the person whose actions are open (#person-actions)
    outbox: loadOutbox(),      // [{cid, room, text}], oldest first
    lastTypingSent: 0,
    pendingLeaves: new Set(),  // rooms left while offline
    unavailableTimer: null,    // the one pending retry after `unavailable`
    leftRooms: new Set(),      // left on this page: a hello (private rooms, DMs) does not bring them back
    // Frames sent on this socket that the server answers, not answered yet,
    // oldest first: the frame's fields and its `kind` (join, create, chat,
    // history, dm, invite, role, kick, ban, unban, mute). The server handles a
    // socket's frames in order, so an error (which names neither room nor
    // frame) answers the oldest of them.
    requests: [],
    readMarks: loadReadMarks(), // room -> newest id seen
    // Edits and deletes sent on this socket or waiting to be, oldest first:
    // {type: "edit" | "delete", room, id, text?, sent}. Only the first is ever
    // in flight (`sent`): its success is the room's own `edited` / `deleted`
    // frame, which reaches the sender through the room and may come after the
    // answer to a later frame, and its refusal an `error` that names `of` and
    // `room` but not the id; one at a time, each answer is unambiguous. Never
    // kept over a socket: a closed socket drops them (the user is told).
    changes: [],
    changeTimer: null,
    editing: null,             // the message being edited: {room, id, back: "composer" | "button"}
  };

  const saveOutbox = () => sessionStorage.setItem(outboxKey, JSON.stringify(state.outbox));

  function newRoom(name) {
    return {
      name,
      dm: dmPeer(name, me),  // a direct message: the other user's name; else null
      log: null,             // its message list, made by the view (render.js)
      lastId: null,          // newest id shown: resume point
      epoch: null,           // the room's epoch with that resume point (from presence): sent back with it
      generation: 0,         // counts resets: a history page asked for before one is stale
      unreadAfter: null,     // after a reset: what came up to the old resume point was seen already
      owner: null,           // from presence
      role: "member",        // the user's own role here (presence): admin, owner, moderator, member
      oldestId: null,        // oldest id shown: where scrolling up continues
      more: true,            // older history may exist
      loadingHistory: false,
      unread: 0,
      people: new Set(),
      typists: new Map(),    // user -> timer
      confirmed: false,      // joined on the current socket (presence seen)
      settled: false,        // joined once on this page: later replays are news, not the past
      fresh: false,          // new to this user (an invitation): even its first replay is unread
    };
  }

  return {
    me,
    state,

    // The room called `name`, made on first use.
    room(name) {
      if (!state.rooms.has(name)) state.rooms.set(name, newRoom(name));
      return state.rooms.get(name);
    },

    // Forget a room the user left, and what they had queued for it.
    dropRoom(name) {
      state.rooms.delete(name);
      state.outbox = state.outbox.filter((m) => m.room !== name);
      saveOutbox();
    },

    // The user has seen `r` up to its newest message (kept for later pages).
    markRead(r) {
      const seen = r.lastId || "0-0";
      const mark = state.readMarks[r.name];
      if (mark && !idAfter(seen, mark)) return;
      delete state.readMarks[r.name];
      state.readMarks[r.name] = seen;  // newest last: the oldest marks are dropped first
      const names = Object.keys(state.readMarks);
      for (const old of names.slice(0, Math.max(0, names.length - READ_MARKS_KEPT))) delete state.readMarks[old];
      try { localStorage.setItem(readKey, JSON.stringify(state.readMarks)); } catch { /* full: marks are a nicety */ }
    },

    // Whether message `id` of `r` is news the user has not seen: anything after
    // the room's first replay on this page, or after its read mark; with no mark,
    // a room the user was just invited to, or a direct message, is all news.
    unseen(r, id) {
      if (r.settled) return true;
      const mark = state.readMarks[r.name];
      if (mark) return idAfter(id, mark);
      return r.fresh || r.dm !== null;
    },

    // A room frame now awaits its answer.
    expect(request) {
      state.requests.push(request);
    },

    // The answer to the first request matching `test`: that request, and every
    // older one with it (answered in order, so theirs came and went unmatched).
    answered(test) {
      const at = state.requests.findIndex(test);
      if (at < 0) return null;
      return state.requests.splice(0, at + 1)[at];
    },

    joining(name) {
      return state.requests.some((q) => (q.kind === "join" || q.kind === "create") && q.room === name);
    },

    // Queue `text` for the current room; it stays until acknowledged.
    queue(text) {
      const item = { cid: newCid(), room: state.current, text };
      state.outbox.push(item);
      saveOutbox();
      return item;
    },

    // What is pending for message `id` of `room`: the text of its newest edit
    // not yet confirmed (or null), and whether a delete of it is on its way.
    pendingChange(room, id) {
      let text = null;
      let deleting = false;
      for (const c of state.changes) {
        if (c.room !== room || c.id !== id) continue;
        if (c.type === "delete") deleting = true; else text = c.text;
      }
      return { text, deleting };
    },

    // Message `id` of `room` is deleted: no text of it stays here. A change not
    // sent yet goes; the one in flight stays (its answer is still to come) but
    // without its text.
    forgetMessage(room, id) {
      state.changes = state.changes.filter((c) => c.sent || c.room !== room || c.id !== id);
      for (const c of state.changes) {
        if (c.room === room && c.id === id && c.text !== undefined) c.text = "";
      }
    },

    // Take a message back out of the outbox (refused for good, e.g. muted).
    unqueue(cid) {
      const item = state.outbox.find((m) => m.cid === cid);
      if (!item) return null;
      state.outbox = state.outbox.filter((m) => m !== item);
      saveOutbox();
      return item;
    },

    acked(cid) {
      state.outbox = state.outbox.filter((m) => m.cid !== cid);
      saveOutbox();
    },

    // The session is over: what this user queued is never sent.
    forgetOutbox() {
      state.outbox = [];
      sessionStorage.removeItem(outboxKey);
    },
  };
}
