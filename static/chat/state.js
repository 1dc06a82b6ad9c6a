// What the page knows besides its DOM: the rooms (resume points, people,
// typists), the connection's bookkeeping, and the outbox of messages typed
// but not yet acknowledged. Changed only through the functions below and by
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

// Stream ids are "<ms>-<seq>"; both parts fit a double exactly.
const idParts = (id) => id.split("-").map(Number);

// True when id `a` comes after `b` (or there is no `b` yet).
export function idAfter(a, b) {
  if (!b) return true;
  const [am, as] = idParts(a);
  const [bm, bs] = idParts(b);
  return am > bm || (am === bm && as > bs);
}

export const newCid = () =>
  (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random()).slice(0, 64);

export function createStore(me) {
  const outboxKey = OUTBOX_PREFIX + me;  // names are [A-Za-z0-9._-]: safe in a key
  sessionStorage.removeItem(UNKEYED_OUTBOX);

  const loadOutbox = () => {
    try { return JSON.parse(sessionStorage.getItem(outboxKey)) || []; } catch { return []; }
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
    outbox: loadOutbox(),      // [{cid, room, text}], oldest first
    lastTypingSent: 0,
    pendingLeaves: new Set(),  // rooms left while offline
    unavailableTimer: null,    // the one pending retry after `unavailable`
  };

  const saveOutbox = () => sessionStorage.setItem(outboxKey, JSON.stringify(state.outbox));

  function newRoom(name) {
    return {
      name,
      log: null,             // its message list, made by the view (render.js)
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

    // Queue `text` for the current room; it stays until acknowledged.
    queue(text) {
      const item = { cid: newCid(), room: state.current, text };
      state.outbox.push(item);
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
