// @aisle/tracker: a dependency-free browser tracker for Aisle's HTTP/JSON API.
//
//   import { createTracker } from '@aisle/tracker';
//   const tracker = createTracker({ endpoint: 'https://api.shop.example', token, userId: 'u1' });
//   tracker.view('i42');
//   tracker.impression(['i1', 'i2'], answer.recommendationId);
//   tracker.click('i1', { recommendationId: answer.recommendationId });
//   tracker.addToCart('i1', { price: 9.5, quantity: 1 });
//
// Events are queued and sent in batches (POST /v1/events:track) when `batchSize` are waiting or `flushIntervalMs`
// after the first one. A batch that fails for a reason worth retrying (network error, 408, 429, 5xx) is sent
// again, with the same event ids (the server applies an id once), after an exponential backoff. On page hide the
// queue goes out with `fetch(..., { keepalive: true })`, which, unlike navigator.sendBeacon, can carry the
// Authorization header. The token is user-bound (claim `aisle_user`): it may only track and read for its user.

const MAX_BATCH = 1000; // the server's limit per Track call
const KEEPALIVE_BYTES = 60000; // browsers cap the bodies of keepalive requests in flight at 64 KiB

/** A random event id: crypto.randomUUID where the page is a secure context, else 128 random bits in hex. */
function newEventId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  const bytes = new Uint8Array(16);
  if (c && typeof c.getRandomValues === 'function') c.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i += 1) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Whether an HTTP status (0: no answer) is worth sending the same batch again for. */
function retryable(status) {
  return status === 0 || status === 408 || status === 429 || status >= 500;
}

/**
 * Create a tracker.
 * @param {object} options
 * @param {string} options.endpoint the gateway's base URL, e.g. "https://api.shop.example"
 * @param {string | (() => string | Promise<string>)} options.token a user-bound bearer token, or a function
 *   returning a fresh one (called again after a 401)
 * @param {string} options.userId the customer the token is bound to
 * @param {string} [options.sessionId] the visit, sent on every event
 * @param {number} [options.batchSize=20] send when this many events wait
 * @param {number} [options.flushIntervalMs=1000] or this long after the first one waits
 * @param {number} [options.retryBaseMs=500] first retry delay; doubles per failure, up to `retryMaxMs`
 * @param {number} [options.retryMaxMs=30000]
 * @param {(info: object) => void} [options.onSend] called with {eventIds, status, attempt} after each attempt
 * @param {(error: object) => void} [options.onError] called when a batch is dropped (400, 403) or events rejected
 * @param {typeof fetch} [options.fetch] the fetch to use (default: the page's)
 */
export function createTracker(options) {
  const endpoint = String(options.endpoint || '').replace(/\/+$/, '');
  const userId = options.userId;
  if (!userId) throw new Error('createTracker: userId is required');
  const batchSize = Math.min(options.batchSize || 20, MAX_BATCH);
  const flushIntervalMs = options.flushIntervalMs ?? 1000;
  const retryBaseMs = options.retryBaseMs ?? 500;
  const retryMaxMs = options.retryMaxMs ?? 30000;
  const doFetch = options.fetch || globalThis.fetch.bind(globalThis);
  const onSend = options.onSend || (() => {});
  const onError = options.onError || (() => {});

  let token = typeof options.token === 'string' ? options.token : null;
  const queue = []; // events not yet acknowledged, oldest first
  let inFlight = null; // the batch being sent: a prefix of `queue`
  let timer = null;
  let failures = 0;
  let attempts = 0;

  async function bearer(refresh) {
    if (typeof options.token === 'function' && (refresh || token === null)) token = await options.token();
    return token;
  }

  function schedule(delayMs) {
    if (timer !== null) return;
    timer = setTimeout(() => {
      timer = null;
      send(false);
    }, delayMs);
  }

  /** Queue one event. `fields` are Event fields in proto3 JSON (itemId, itemIds, price, quantity, ...). */
  function track(type, fields = {}) {
    const event = {
      eventId: newEventId(),
      type,
      userId,
      tsMs: String(Date.now()),
      ...(options.sessionId ? { sessionId: options.sessionId } : {}),
      ...fields,
    };
    queue.push(event);
    if (queue.length >= batchSize && failures === 0) send(false);
    else schedule(failures === 0 ? flushIntervalMs : backoff());
    return event.eventId;
  }

  function backoff() {
    const delay = Math.min(retryMaxMs, retryBaseMs * 2 ** Math.max(0, failures - 1));
    return delay / 2 + Math.random() * (delay / 2);
  }

  async function post(events, keepalive) {
    const body = JSON.stringify({ events });
    let status = 0;
    let answer = null;
    for (const refresh of [false, true]) {
      const headers = { 'Content-Type': 'application/json', Authorization: `Bearer ${await bearer(refresh)}` };
      try {
        const response = await doFetch(`${endpoint}/v1/events:track`, { method: 'POST', headers, body, keepalive });
        status = response.status;
        answer = await response.json().catch(() => null);
      } catch (error) {
        status = 0; // no answer: offline, the gateway down, the request cut off
      }
      if (status !== 401 || typeof options.token !== 'function') break;
    }
    attempts += 1;
    onSend({ eventIds: events.map((e) => e.eventId), status, attempt: attempts });
    return { status, answer };
  }

  async function send(keepalive) {
    if (inFlight !== null || queue.length === 0) return;
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
    inFlight = queue.slice(0, batchSize);
    const { status, answer } = await post(inFlight, keepalive);
    const sent = inFlight;
    inFlight = null;
    if (status === 200 || !retryable(status)) {
      queue.splice(0, sent.length);
      failures = 0;
      if (status !== 200) onError({ status, error: answer, events: sent });
      else if (answer && answer.rejected && answer.rejected.length) onError({ status, rejected: answer.rejected, events: sent });
      if (queue.length >= batchSize) send(false);
      else if (queue.length) schedule(flushIntervalMs);
    } else {
      failures += 1; // keep the batch, ids and all, and try again later
      schedule(backoff());
    }
  }

  /**
   * Send everything queued now. With `keepalive` (page hide) every queued event goes out in 60 KB requests that
   * outlive the page, including a batch already in flight: sending it twice is harmless, its ids are the same.
   */
  async function flush({ keepalive = false } = {}) {
    if (!keepalive) {
      while (queue.length && inFlight === null) {
        const before = queue.length;
        await send(false);
        if (queue.length >= before) break; // failed: the backoff timer retries
      }
      return;
    }
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
    const chunks = [];
    let chunk = [];
    let bytes = 0;
    for (const event of queue) {
      const size = JSON.stringify(event).length + 1;
      if (chunk.length && (bytes + size > KEEPALIVE_BYTES || chunk.length >= MAX_BATCH)) {
        chunks.push(chunk);
        chunk = [];
        bytes = 0;
      }
      chunk.push(event);
      bytes += size;
    }
    if (chunk.length) chunks.push(chunk);
    for (const events of chunks) {
      const { status } = await post(events, true);
      if (status === 200 || !retryable(status)) {
        const ids = new Set(events.map((e) => e.eventId));
        for (let i = queue.length - 1; i >= 0; i -= 1) if (ids.has(queue[i].eventId)) queue.splice(i, 1);
      }
    }
  }

  function onHide() {
    if (queue.length) flush({ keepalive: true });
  }

  if (typeof document !== 'undefined' && typeof window !== 'undefined') {
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'hidden') onHide();
    });
    window.addEventListener('pagehide', onHide);
  }

  /** The customer's recommendations (GET /v1/users/{userId}/recommendations), as the API answers them. */
  async function recommendations({ k = 10, contextItemId, explain = true, excludeItemIds = [] } = {}) {
    const query = new URLSearchParams({ k: String(k), explain: String(explain) });
    if (contextItemId) query.set('context_item_id', contextItemId);
    for (const id of excludeItemIds) query.append('exclude_item_ids', id);
    const url = `${endpoint}/v1/users/${encodeURIComponent(userId)}/recommendations?${query}`;
    let response = await doFetch(url, { headers: { Authorization: `Bearer ${await bearer(false)}` } });
    if (response.status === 401 && typeof options.token === 'function') {
      response = await doFetch(url, { headers: { Authorization: `Bearer ${await bearer(true)}` } });
    }
    const body = await response.json();
    if (!response.ok) throw Object.assign(new Error(body.message || `HTTP ${response.status}`), { status: response.status, body });
    return body;
  }

  return {
    track,
    view: (itemId, fields = {}) => track('VIEW', { itemId, ...fields }),
    click: (itemId, fields = {}) => track('CLICK', { itemId, ...fields }),
    addToCart: (itemId, fields = {}) => track('ADD_TO_CART', { itemId, quantity: 1, ...fields }),
    removeFromCart: (itemId, fields = {}) => track('REMOVE_FROM_CART', { itemId, ...fields }),
    purchase: (itemIds, fields = {}) => track('PURCHASE', { itemIds, ...fields }),
    search: (query, fields = {}) => track('SEARCH', { query, ...fields }),
    impression: (itemIds, recommendationId, fields = {}) =>
      track('IMPRESSION', { itemIds, ...(recommendationId ? { recommendationId } : {}), ...fields }),
    flush,
    recommendations,
    /** Events queued and not yet acknowledged. */
    pending: () => queue.length,
  };
}
