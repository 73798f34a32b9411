// Bazar's storefront. Uses only the public API: GET /search/{topic} (paged with limit,
// after and the Link header), GET /info/{id} and POST /purchase/{id}.
//
// Rule: no data is ever code. Everything a server sent is put on the page with
// textContent or as an attribute value through createElement, never as markup.
"use strict";

(function () {
  // The topics of the seed catalog (data/books.csv), offered as a start. There is no
  // route that lists topics; topics of books seen in this visit are added as they appear.
  const SEED_TOPICS = ["distributed systems", "undergraduate school"];
  const PAGE_SIZE = 12;

  const topics = new Set(SEED_TOPICS);
  let current = null; // { topic, next } where next is the cursor of the next page, or null
  const cards = new Map(); // book id -> its card's parts

  const $ = (id) => document.getElementById(id);

  // createElement with a class and text; children are elements or strings (as text).
  function el(tag, className, ...children) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    for (const c of children) e.append(c);
    return e;
  }

  const money = (price) => "$" + Number(price).toFixed(2);

  // The error text of an answer: its {"error": ...} if it has one.
  async function errorOf(response) {
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") return body.error;
    } catch (_) {
      // not JSON
    }
    return "HTTP " + response.status;
  }

  function showAlert(text) {
    const a = $("alert");
    a.textContent = text;
    a.hidden = false;
  }

  function clearAlert() {
    $("alert").hidden = true;
    $("alert").textContent = "";
  }

  // Says in words what went wrong with a request to the store.
  function trouble(status, detail) {
    if (status === 0) return "The store does not answer. Check your connection and try again.";
    if (status === 503) return "Part of the store is down right now (" + detail + "). Please try again in a moment.";
    return "Something went wrong (" + detail + ").";
  }

  function renderTopics() {
    const list = $("topics");
    const options = $("known-topics");
    list.replaceChildren();
    options.replaceChildren();
    for (const t of [...topics].sort()) {
      const b = el("button", "chip", t);
      b.type = "button";
      b.setAttribute("aria-pressed", String(current !== null && current.topic.toLowerCase() === t.toLowerCase()));
      b.addEventListener("click", () => {
        $("topic").value = t;
        search(t);
      });
      list.append(el("li", null, b));
      const o = document.createElement("option");
      o.value = t;
      options.append(o);
    }
  }

  function learnTopic(t) {
    if (typeof t !== "string" || t.trim() === "") return;
    const known = [...topics].some((k) => k.toLowerCase() === t.toLowerCase());
    if (!known) {
      topics.add(t);
      renderTopics();
    }
  }

  // The cursor of the next page, from `Link: </search/...?limit=12&after=7>; rel="next"`.
  function nextCursor(link) {
    if (!link) return null;
    const m = /<([^>]*)>\s*;\s*rel="?next"?/.exec(link);
    if (!m) return null;
    const after = new URL(m[1], location.origin).searchParams.get("after");
    return after && /^[0-9]+$/.test(after) ? after : null;
  }

  async function search(topic, more) {
    topic = topic.trim();
    if (topic === "") return;
    clearAlert();
    if (!more) {
      current = { topic: topic, next: null };
      cards.clear();
      $("books").replaceChildren();
      $("results-title").textContent = "Books on \u201c" + topic + "\u201d";
      $("results-note").textContent = "Looking\u2026";
      history.replaceState(null, "", "?topic=" + encodeURIComponent(topic));
      renderTopics();
    }
    let path = "/search/" + encodeURIComponent(topic) + "?limit=" + PAGE_SIZE;
    if (more && current.next) path += "&after=" + current.next;
    let response;
    try {
      response = await fetch(path, { headers: { Accept: "application/json" } });
    } catch (_) {
      $("results-note").textContent = "";
      showAlert(trouble(0));
      return;
    }
    if (!response.ok) {
      $("results-note").textContent = "";
      showAlert(trouble(response.status, await errorOf(response)));
      return;
    }
    const hits = await response.json();
    current.next = nextCursor(response.headers.get("Link"));
    $("more").hidden = current.next === null;
    const shown = cards.size + hits.length;
    $("results-note").textContent =
      shown === 0 ? "No books on this topic. Try another one." : shown + (shown === 1 ? " book" : " books") + (current.next ? " so far" : "");
    for (const hit of hits) addCard(hit);
    await Promise.all(hits.map((hit) => refresh(Number(hit.id))));
  }

  function addCard(hit) {
    const id = Number(hit.id);
    if (!Number.isInteger(id) || cards.has(id)) return;
    const title = el("h3", "title", String(hit.title));
    title.id = "title-" + id;
    const topic = el("p", "topic", "\u2026");
    const price = el("p", "price", "");
    const stock = el("p", "stock", "checking stock\u2026");
    const buy = el("button", "buy", "Buy");
    buy.type = "button";
    buy.disabled = true;
    buy.setAttribute("aria-describedby", title.id);
    const note = el("p", "note");
    note.setAttribute("role", "status");
    const card = el("li", "card", el("div", "cover", el("span", null, String(hit.title).slice(0, 1).toUpperCase())), title, topic, el("div", "row", price, stock), buy, note);
    card.id = "book-" + id;
    const parts = { id: id, title: String(hit.title), card, topic, price, stock, buy, note, book: null };
    buy.addEventListener("click", () => purchase(parts));
    cards.set(id, parts);
    $("books").append(card);
  }

  // Shows a book's topic, price and stock from GET /info/{id}.
  async function refresh(id) {
    const parts = cards.get(id);
    if (!parts) return;
    let response;
    try {
      response = await fetch("/info/" + id, { headers: { Accept: "application/json" }, cache: "no-store" });
    } catch (_) {
      parts.stock.textContent = "stock unknown";
      parts.note.textContent = trouble(0);
      return;
    }
    if (!response.ok) {
      parts.stock.textContent = "stock unknown";
      parts.note.textContent = response.status === 404 ? "No longer in the catalog." : trouble(response.status, await errorOf(response));
      return;
    }
    const book = await response.json();
    parts.book = book;
    parts.topic.textContent = String(book.topic);
    parts.price.textContent = money(book.price);
    learnTopic(book.topic);
    showStock(parts, Number(book.quantity));
  }

  function showStock(parts, quantity) {
    const soldOut = !(quantity > 0);
    parts.card.classList.toggle("sold-out", soldOut);
    parts.stock.classList.toggle("none", soldOut);
    parts.stock.textContent = soldOut ? "Sold out" : quantity + " in stock";
    parts.buy.disabled = soldOut;
    parts.buy.textContent = soldOut ? "Sold out" : "Buy";
  }

  async function purchase(parts) {
    parts.buy.disabled = true;
    parts.note.textContent = "Buying\u2026";
    let response;
    try {
      response = await fetch("/purchase/" + parts.id, { method: "POST" });
    } catch (_) {
      parts.note.textContent = trouble(0);
      parts.buy.disabled = false;
      return;
    }
    if (response.ok) {
      const receipt = await response.json();
      parts.note.textContent = "Bought. Order " + receipt.order_id + ".";
      showReceipt(receipt);
    } else if (response.status === 409) {
      parts.note.textContent = "Sorry, this book is sold out.";
      showStock(parts, 0);
      return;
    } else if (response.status === 404) {
      parts.note.textContent = "This book is no longer in the catalog.";
    } else if (response.status === 503) {
      const why = await errorOf(response);
      parts.note.replaceChildren(
        "The order service is down right now. Please try again in a moment.",
        el("span", "detail", (why.includes("may or may not") ? "The purchase may have gone through: check your orders later. " : "Nothing was bought. ") + "(" + why + ")")
      );
    } else {
      parts.note.textContent = "The purchase failed (" + (await errorOf(response)) + ").";
    }
    await refresh(parts.id);
  }

  function showReceipt(r) {
    const box = $("receipt");
    const id = el("strong", "order-id", String(r.order_id));
    box.replaceChildren(
      el("p", "thanks", "Thank you! Your order is placed."),
      el("p", null, "Order id: ", id),
      el("p", null, el("span", "muted", "Book: "), String(r.title), el("span", "muted", " \u00b7 "), money(r.price))
    );
    box.classList.add("shown");
    const item = el("li", null, el("span", "order-id", String(r.order_id)), " ", el("span", "muted", String(r.title)));
    $("order-list").prepend(item);
    $("no-orders").hidden = true;
  }

  function start() {
    renderTopics();
    $("search").addEventListener("submit", (e) => {
      e.preventDefault();
      search($("topic").value);
    });
    $("more").addEventListener("click", () => current && search(current.topic, true));
    const wanted = new URLSearchParams(location.search).get("topic");
    if (wanted) {
      $("topic").value = wanted;
      search(wanted);
    }
  }

  start();
})();
