// The demo storefront: products to click, and the customer's recommendations, refreshed after every click.
// Everything goes through @aisle/tracker: events batched to POST /v1/events:track, recommendations from
// GET /v1/users/{user}/recommendations, with the user-bound token given in the page's URL.
import { createTracker } from '../src/tracker.js';

const params = new URLSearchParams(window.location.search);
const api = params.get('api') || 'http://localhost:8080';
const userId = params.get('user') || 'u1';
const items = (params.get('items') || '').split(',').filter(Boolean);
const status = document.getElementById('status');
const sends = [];

const tracker = createTracker({
  endpoint: api,
  token: params.get('token') || '',
  userId,
  sessionId: `demo-${Date.now()}`,
  flushIntervalMs: Number(params.get('flush_ms') || 300),
  retryBaseMs: Number(params.get('retry_ms') || 200),
  onSend: (info) => {
    sends.push(info);
    status.textContent = `sent ${info.eventIds.length} event(s): HTTP ${info.status || 'no answer'}; ${tracker.pending()} pending`;
  },
  onError: (error) => console.warn('aisle tracker', error),
});
// For people poking at the page (and the browser test): the tracker and every send attempt.
window.aisleDemo = { tracker, sends };

function card(itemId, text, onOpen) {
  const li = document.createElement('li');
  li.className = 'card';
  li.dataset.itemId = itemId;
  const open = document.createElement('button');
  open.className = 'open';
  open.textContent = itemId;
  open.addEventListener('click', onOpen);
  const cart = document.createElement('button');
  cart.className = 'add-to-cart';
  cart.textContent = 'Add to cart';
  cart.addEventListener('click', () => tracker.addToCart(itemId));
  li.append(open, document.createElement('br'), cart);
  if (text) {
    const reasons = document.createElement('div');
    reasons.className = 'reasons';
    reasons.textContent = text;
    li.append(reasons);
  }
  return li;
}

async function showRecommendations(contextItemId) {
  const list = document.getElementById('recommendations');
  try {
    const answer = await tracker.recommendations({ k: 4, contextItemId });
    const ids = answer.items.map((item) => item.itemId);
    list.replaceChildren(...answer.items.map((item) => card(item.itemId, item.reasons.join(', '),
      () => open(item.itemId, answer.recommendationId))));
    list.dataset.recommendationId = answer.recommendationId;
    if (ids.length) tracker.impression(ids, answer.recommendationId);
    status.textContent = `${ids.length} recommendations (${answer.modelVersion})`;
  } catch (error) {
    status.textContent = `recommendations failed: ${error.message}`;
  }
}

async function open(itemId, recommendationId) {
  tracker.click(itemId, recommendationId ? { recommendationId } : {});
  tracker.view(itemId);
  await tracker.flush(); // durable before we ask: the next answer reflects the click
  await showRecommendations(itemId);
}

document.getElementById('products').replaceChildren(...items.map((id) => card(id, '', () => open(id))));
showRecommendations();
