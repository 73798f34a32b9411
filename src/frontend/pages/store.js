// Bazar's storefront. Uses only the public API: GET /books and GET /topics (paged with
// limit, after and the Link header), GET /search/{topic}, GET /info/{id},
// POST /purchase/{id} and GET /orders/{order_id}.
//
// Views, each with its own shareable address:
//   /               every book, by id, a page at a time ("More books")
//   /?topic=T       the books of topic T (search)
//   /?book=ID       one book's own page
// "Your orders" is kept in this browser (localStorage) and each order is looked up again
// with GET /orders/{order_id} whenever the page opens.
//
// Rule: no data is ever code. Everything a server sent is put on the page with
// textContent or as an attribute value through createElement, never as markup.
"use strict";

(function () {
  const PAGE_SIZE = 12;
  const TOPICS_PAGE = 100;
  const ORDERS_KEY = "bazar.orders";
  const MAX_ORDERS = 50;

  let current = null; // { kind: "all" | "topic", topic, next }: next is the next page's cursor or null
  let topicsNext = null; // the cursor of the next page of topics, or null
  const topicNames = []; // every topic shown as a chip, in order
  const cards = new Map(); // book id -> its card's parts

  const $ = (id) => document.getElementById(id);

  // createElement with a class and text; children are elements or strings (as text).
  function el(tag, className, ...children) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    for (const c of children) e.append(c);
    return e;
  }

  function link(href, ...children) {
    const a = el("a", null, ...children);
    a.href = href;
    return a;
  }

  const money = (price) => "$" + Number(price).toFixed(2);
  const bookHref = (id) => "/?book=" + encodeURIComponent(id);
  const topicHref = (t) => "/?topic=" + encodeURIComponent(t);
  const plural = (n, one, many) => n + " " + (n === 1 ? one : many);

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

  // GET a JSON answer: { ok, status, body, next } where next is the `after` of the Link
  // header's next page (or null); status 0 when the store did not answer.
  async function getJSON(path) {
    let response;
    try {
      response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    } catch (_) {
      return { ok: false, status: 0, error: "no answer" };
    }
    if (!response.ok) return { ok: false, status: response.status, error: await errorOf(response) };
    let body;
    try {
      body = await response.json();
    } catch (_) {
      return { ok: false, status: response.status, error: "not JSON" };
    }
    return { ok: true, status: response.status, body: body, next: nextCursor(response.headers.get("Link")) };
  }

  // The cursor of the next page, from `Link: </books?limit=12&after=7>; rel="next"`.
  function nextCursor(header) {
    if (!header) return null;
    const m = /<([^>]*)>\s*;\s*rel="?next"?/.exec(header);
    if (!m) return null;
    return new URL(m[1], location.origin).searchParams.get("after");
  }

  // ---- Topics: every topic as a chip with its number of books, a page at a time.

  function chip(label, count, pressed, onClick) {
    const b = el("button", "chip", label);
    if (count !== null) {
      const c = el("span", "count", String(count));
      c.setAttribute("aria-label", plural(count, "book", "books"));
      b.append(c);
    }
    b.type = "button";
    b.setAttribute("aria-pressed", String(pressed));
    b.addEventListener("click", onClick);
    return el("li", null, b);
  }

  function renderTopics() {
    const list = $("topics");
    const options = $("known-topics");
    list.replaceChildren(
      chip("All books", null, current !== null && current.kind === "all", () => {
        history.pushState(null, "", "/");
        showAll();
      })
    );
    options.replaceChildren();
    for (const t of topicNames) {
      const pressed = current !== null && current.kind === "topic" && current.topic.toLowerCase() === t.name.toLowerCase();
      list.append(
        chip(t.name, t.books, pressed, () => {
          $("topic").value = t.name;
          history.pushState(null, "", topicHref(t.name));
          search(t.name);
        })
      );
      const o = document.createElement("option");
      o.value = t.name;
      options.append(o);
    }
  }

  async function loadTopics(more) {
    let path = "/topics?limit=" + TOPICS_PAGE;
    if (more && topicsNext !== null) path += "&after=" + encodeURIComponent(topicsNext);
    $("topics-note").textContent = "Loading the topics\u2026";
    const a = await getJSON(path);
    if (!a.ok) {
      $("topics-note").textContent = "The topics could not be loaded: " + trouble(a.status, a.error);
      return;
    }
    for (const t of a.body) {
      if (t && typeof t.topic === "string") topicNames.push({ name: t.topic, books: Number(t.books) });
    }
    topicsNext = a.next;
    $("more-topics").hidden = topicsNext === null;
    $("topics-note").textContent =
      plural(topicNames.length, "topic", "topics") + (topicsNext === null ? "" : " so far: more below");
    renderTopics();
  }

  // ---- Lists of books: every book, or the books of a topic.

  function startList(kind, topic, title) {
    clearAlert();
    current = { kind: kind, topic: topic, next: null };
    cards.clear();
    $("book-view").hidden = true;
    $("books").replaceChildren();
    $("books").hidden = false;
    $("more").hidden = true;
    $("results-title").textContent = title;
    $("results-note").textContent = "Looking\u2026";
    renderTopics();
  }

  function listed(count) {
    const shown = cards.size;
    const more = current.next !== null;
    $("more").hidden = !more;
    if (shown === 0) {
      $("results-note").textContent =
        current.kind === "all" ? "The store has no books yet." : "No books on this topic. Try another one.";
    } else {
      $("results-note").textContent = plural(shown, "book", "books") + (more ? " so far" : "") + ".";
    }
    return count;
  }

  async function showAll(more) {
    if (!more) startList("all", null, "All books");
    let path = "/books?limit=" + PAGE_SIZE;
    if (more && current.next !== null) path += "&after=" + encodeURIComponent(current.next);
    const a = await getJSON(path);
    if (current.kind !== "all") return;
    if (!a.ok) {
      $("results-note").textContent = "";
      showAlert(trouble(a.status, a.error));
      return;
    }
    current.next = a.next;
    for (const book of a.body) {
      const parts = addCard(book);
      if (parts) showBook(parts, book);
    }
    listed(a.body.length);
  }

  async function search(topic, more) {
    topic = topic.trim();
    if (topic === "") return;
    if (!more) startList("topic", topic, "Books on \u201c" + topic + "\u201d");
    let path = "/search/" + encodeURIComponent(topic) + "?limit=" + PAGE_SIZE;
    if (more && current.next !== null) path += "&after=" + encodeURIComponent(current.next);
    const a = await getJSON(path);
    if (current.kind !== "topic" || current.topic !== topic) return;
    if (!a.ok) {
      $("results-note").textContent = "";
      showAlert(trouble(a.status, a.error));
      return;
    }
    current.next = a.next;
    const added = a.body.map(addCard).filter((p) => p);
    listed(a.body.length);
    await Promise.all(added.map((parts) => refresh(parts)));
  }

  // A card for a book (from /books: whole; from /search: id and title, the rest asked).
  function addCard(book) {
    const id = Number(book.id);
    if (!Number.isInteger(id) || cards.has(id)) return null;
    const titleText = String(book.title);
    const title = el("h3", "title", link(bookHref(id), titleText));
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
    const cover = el("div", "cover", el("span", null, titleText.slice(0, 1).toUpperCase()));
    cover.setAttribute("aria-hidden", "true");
    const card = el("li", "card", cover, title, topic, el("div", "row", price, stock), buy, note);
    card.id = "book-" + id;
    const parts = { id: id, title: titleText, card, topic, price, stock, buy, note };
    buy.addEventListener("click", () => purchase(parts));
    cards.set(id, parts);
    $("books").append(card);
    return parts;
  }

  // Shows a book's topic, price and stock on its card (or its page).
  function showBook(parts, book) {
    parts.topic.textContent = String(book.topic);
    parts.price.textContent = money(book.price);
    showStock(parts, Number(book.quantity));
  }

  // Asks GET /info/{id} for a book's topic, price and stock now.
  async function refresh(parts) {
    const a = await getJSON("/info/" + parts.id);
    if (!a.ok) {
      parts.stock.textContent = "stock unknown";
      parts.note.textContent = a.status === 404 ? "No longer in the catalog." : trouble(a.status, a.error);
      return null;
    }
    showBook(parts, a.body);
    return a.body;
  }

  function showStock(parts, quantity) {
    const soldOut = !(quantity > 0);
    if (parts.card) parts.card.classList.toggle("sold-out", soldOut);
    parts.stock.classList.toggle("none", soldOut);
    parts.stock.textContent = soldOut ? "Sold out" : quantity + " in stock";
    parts.buy.disabled = soldOut;
    parts.buy.textContent = soldOut ? "Sold out" : "Buy";
  }

  // ---- A book's own page: /?book=ID.

  let viewParts = null;

  async function showBookPage(id) {
    clearAlert();
    current = { kind: "book", topic: null, next: null };
    cards.clear();
    $("books").replaceChildren();
    $("books").hidden = true;
    $("more").hidden = true;
    renderTopics();
    const view = $("book-view");
    $("results-title").textContent = "A book";
    $("results-note").textContent = "Looking\u2026";
    if (!/^[1-9][0-9]{0,9}$/.test(id)) {
      view.hidden = true;
      $("results-note").textContent = "There is no book with that number. Browse every book instead.";
      return;
    }
    if (!viewParts) {
      viewParts = {
        id: Number(id),
        card: null,
        topic: $("book-view-topic"),
        price: view.querySelector(".price"),
        stock: view.querySelector(".stock"),
        buy: view.querySelector(".buy"),
        note: view.querySelector(".note"),
      };
      viewParts.buy.addEventListener("click", () => purchase(viewParts));
    }
    viewParts.id = Number(id);
    const a = await getJSON("/info/" + id);
    if (!a.ok) {
      view.hidden = true;
      $("results-note").textContent =
        a.status === 404 ? "There is no book with that number. Browse every book instead." : "";
      if (a.status !== 404) showAlert(trouble(a.status, a.error));
      return;
    }
    const book = a.body;
    viewParts.title = String(book.title);
    $("results-title").textContent = String(book.title);
    $("results-note").textContent = "";
    $("book-view-title").textContent = String(book.title);
    $("book-view-initial").textContent = String(book.title).slice(0, 1).toUpperCase();
    $("book-view-topic").href = topicHref(String(book.topic));
    const here = location.origin + bookHref(book.id);
    $("book-view-link").href = bookHref(book.id);
    $("book-view-link").textContent = here;
    viewParts.note.textContent = "";
    showBook(viewParts, book);
    view.hidden = false;
    document.title = String(book.title) + " \u00b7 Bazar";
  }

  // ---- Buying, and the orders kept in this browser.

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
      receipt.trace = traceOf(response);
      parts.note.textContent = "Bought. Order " + receipt.order_id + ".";
      showReceipt(receipt);
      remember(receipt);
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
    await refresh(parts);
  }

  // The trace a purchase was recorded in (its answer's `traceresponse`), if it was.
  function traceOf(response) {
    const parts = String(response.headers.get("traceresponse") || "").split("-");
    return parts.length === 4 && /^[0-9a-f]{32}$/.test(parts[1]) ? parts[1] : null;
  }

  // "How this order went through the store": the dashboard's view of its trace.
  function traceLink(trace) {
    if (typeof trace !== "string" || !/^[0-9a-f]{32}$/.test(trace)) return "";
    const a = el("a", "trace-link", "how this order went through the store");
    a.href = "/dashboard#trace=" + trace;
    return a;
  }

  function showReceipt(r) {
    const box = $("receipt");
    const id = el("strong", "order-id", String(r.order_id));
    box.replaceChildren(
      el("p", "thanks", "Thank you! Your order is placed."),
      el("p", null, "Order id: ", id, " ", traceLink(r.trace)),
      el("p", null, el("span", "muted", "Book: "), String(r.title), el("span", "muted", " \u00b7 "), money(r.price))
    );
    box.classList.add("shown");
  }

  // The orders bought from this browser, newest first: [{order_id, id, title, price}].
  function stored() {
    try {
      const v = JSON.parse(localStorage.getItem(ORDERS_KEY) || "[]");
      return Array.isArray(v) ? v.filter((o) => o && typeof o.order_id === "string") : [];
    } catch (_) {
      return [];
    }
  }

  function remember(r) {
    const orders = stored().filter((o) => o.order_id !== r.order_id);
    orders.unshift({
      order_id: String(r.order_id),
      id: Number(r.id),
      title: String(r.title),
      price: Number(r.price),
      trace: r.trace || null,
    });
    try {
      localStorage.setItem(ORDERS_KEY, JSON.stringify(orders.slice(0, MAX_ORDERS)));
    } catch (_) {
      // storage full or off: the order still shows for this visit
    }
    renderOrders(orders.slice(0, MAX_ORDERS), r.order_id);
  }

  // Lists the orders and looks each up again (all of them, or only `fresh`, just bought).
  function renderOrders(orders, fresh) {
    const list = $("order-list");
    list.replaceChildren();
    $("no-orders").hidden = orders.length > 0;
    $("recheck").hidden = orders.length === 0;
    for (const o of orders) {
      const state = el("span", "order-state", "checking with the store\u2026");
      const item = el(
        "li",
        null,
        el("span", "order-id", String(o.order_id)),
        " ",
        link(bookHref(o.id), el("span", null, String(o.title))),
        el("span", "muted", " \u00b7 " + money(o.price)),
        state,
        " ",
        traceLink(o.trace)
      );
      item.dataset.order = String(o.order_id);
      list.append(item);
      if (fresh === undefined || fresh === o.order_id) check(o, state);
      else state.textContent = "";
    }
  }

  // GET /orders/{id}: says whether the store still has the order.
  async function check(order, state) {
    const a = await getJSON("/orders/" + encodeURIComponent(order.order_id));
    state.classList.remove("found", "missing", "unknown");
    if (a.ok && a.body && a.body.order_id === order.order_id) {
      state.classList.add("found");
      state.textContent = "in the store's order log" + (a.body.at ? " since " + String(a.body.at) : "");
    } else if (a.status === 404) {
      state.classList.add("missing");
      state.textContent = "NOT FOUND: no order server has this order";
    } else {
      state.classList.add("unknown");
      state.textContent = "could not be checked now: " + trouble(a.status, a.error);
    }
  }

  // ---- The address decides the view.

  function route() {
    const q = new URLSearchParams(location.search);
    const book = q.get("book");
    const topic = q.get("topic");
    if (book !== null) {
      showBookPage(book);
    } else if (topic !== null && topic.trim() !== "") {
      $("topic").value = topic;
      search(topic);
    } else {
      document.title = "Bazar: books for busy students";
      showAll();
    }
  }

  function start() {
    renderTopics();
    $("search").addEventListener("submit", (e) => {
      e.preventDefault();
      const t = $("topic").value.trim();
      if (t === "") return;
      history.pushState(null, "", topicHref(t));
      search(t);
    });
    $("more").addEventListener("click", () => {
      if (current && current.kind === "all") showAll(true);
      else if (current && current.kind === "topic") search(current.topic, true);
    });
    $("more-topics").addEventListener("click", () => loadTopics(true));
    $("recheck").addEventListener("click", () => renderOrders(stored()));
    window.addEventListener("popstate", route);
    loadTopics(false);
    renderOrders(stored());
    route();
  }

  start();
})();
