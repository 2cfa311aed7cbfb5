/* The public search page: calls the site's REST API (photos/api.py) as any frontend would.
 *
 *   GET  api/photos/?limit=&offset=              every photo you may see, newest first
 *   GET  api/photos/search/?q=words&limit=&offset=  ranked by meaning
 *   GET  api/photos/{id}/similar/?limit=&offset=    "more like this"
 *   POST api/photos/search/?limit=&offset=        a photo (multipart "image"), ranked by likeness
 *
 * Words and "more like this" live in the address (?q=, ?similar=, &offset=), so the back button
 * and shared links work; a photo cannot, so paging its results sends it again.
 */
(function () {
  "use strict";

  const app = document.getElementById("search-app");
  const urls = {
    list: app.dataset.listUrl,
    search: app.dataset.searchUrl,
    similar: (id) => app.dataset.similarUrl.replace("/0/", "/" + encodeURIComponent(id) + "/"),
  };
  const pageSize = Number(app.dataset.pageSize);
  const maxUploadBytes = Number(app.dataset.maxUploadBytes);
  const $ = (id) => document.getElementById(id);
  const input = $("search-q");
  const fileInput = $("photo-file");
  const grid = $("results");
  const heading = $("results-heading");
  const status = $("search-status");
  const preview = $("query-preview");
  const previous = $("previous-page");
  const next = $("next-page");
  const pageNumber = $("page-number");
  const overlay = $("drop-overlay");
  const card = $("result-card");

  // What is shown: {kind: "all" | "words" | "similar" | "photo", q, id, title, file, offset}.
  let query = { kind: "all", offset: 0 };
  let previewUrl = null;
  let latest = 0; // only the newest request may draw its answer
  // ?similar= goes in the API's path: only a photo's id (digits), so `..` cannot climb out of it.
  const PHOTO_ID = /^[0-9]+$/;
  // The API's answer for an id it does not know: a malformed one answers the same.
  const NO_SUCH_PHOTO = "No Photo matches the given query.";

  function fromAddress() {
    const params = new URLSearchParams(window.location.search);
    const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
    const q = (params.get("q") || "").trim();
    if (q) return { kind: "words", q: q, offset: offset };
    const id = params.get("similar");
    if (id) return { kind: "similar", id: id, title: (history.state && history.state.title) || "", offset: offset };
    return { kind: "all", offset: offset };
  }

  function toAddress(q) {
    const params = new URLSearchParams();
    if (q.kind === "words") params.set("q", q.q);
    if (q.kind === "similar") params.set("similar", q.id);
    if (q.offset) params.set("offset", String(q.offset));
    const search = params.toString();
    return window.location.pathname + (search ? "?" + search : "");
  }

  function go(q) {
    query = q;
    if (q.kind !== "photo") history.pushState({ title: q.title || "" }, "", toAddress(q));
    show();
  }

  // Read when a photo is sent: signing in or out (in another tab too) changes the token, so the
  // page's copy can be stale; the cookie holds the current one (the page's copy where it is unreadable).
  function csrfToken() {
    const name = app.dataset.csrfCookie;
    if (name) {
      for (const pair of document.cookie.split(";")) {
        const [key, ...value] = pair.trim().split("=");
        if (key === name) return decodeURIComponent(value.join("="));
      }
    }
    const field = document.querySelector("#photo-form input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  function request(q) {
    const page = "limit=" + pageSize + "&offset=" + q.offset;
    const headers = { Accept: "application/json" };
    if (q.kind === "words") return fetch(urls.search + "?q=" + encodeURIComponent(q.q) + "&" + page, { headers });
    if (q.kind === "similar") return fetch(urls.similar(q.id) + "?" + page, { headers });
    if (q.kind === "photo") {
      const body = new FormData();
      body.append("image", q.file);
      headers["X-CSRFToken"] = csrfToken(); // needed when signed in (session authentication)
      return fetch(urls.search + "?" + page, { method: "POST", body: body, headers: headers, credentials: "same-origin" });
    }
    return fetch(urls.list + "?" + page, { headers });
  }

  // The heading as [before, name, after]: the name (words, a title, a file name) goes in a <bdi>,
  // so a right-to-left one does not reorder the quotes around it.
  function describe(q) {
    if (q.kind === "words") return ["Photos matching “", q.q, "”"];
    if (q.kind === "similar") return q.title ? ["More like “", q.title, "”"] : ["More like the photo you chose"];
    if (q.kind === "photo") return ["Photos like ", q.file.name, ""];
    return ["All photos, newest first"];
  }

  function showHeading(parts) {
    showText(heading, parts);
  }

  // Put [before, name, after] in element as text, the name in a <bdi> (none: the text alone).
  function showText(element, [before, name, after]) {
    if (name === undefined) {
      element.replaceChildren(before);
      return;
    }
    const isolated = document.createElement("bdi");
    isolated.textContent = name;
    element.replaceChildren(before, isolated, after);
  }

  // The API's error body: {"detail": "..."} or {"parameter": ["message", ...]}.
  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body.detail) return body.detail;
      return Object.values(body).flat().join(" ");
    } catch (error) {
      return "The search failed (" + response.status + ").";
    }
  }

  async function show() {
    const q = query;
    const mine = ++latest;
    input.value = q.kind === "words" ? q.q : "";
    showHeading(describe(q));
    preview.hidden = q.kind !== "photo";
    status.textContent = "Searching…";
    app.setAttribute("aria-busy", "true");
    if (q.kind === "similar" && !PHOTO_ID.test(q.id)) {
      fail(NO_SUCH_PHOTO);
      return;
    }
    let response;
    try {
      response = await request(q);
    } catch (error) {
      if (mine === latest) fail("The site did not answer; try again.");
      return;
    }
    if (mine !== latest) return;
    if (!response.ok) {
      const message = await errorMessage(response);
      if (mine === latest) fail(message); // a newer search may have answered while the body came
      return;
    }
    let body;
    try {
      body = await response.json();
    } catch (error) {
      // No JSON (a proxy's or captive portal's page), or the connection dropped after the headers.
      if (mine === latest) fail("The site's answer could not be read; try again.");
      return;
    }
    if (mine !== latest) return;
    draw(body.results);
    const paged = Boolean(body.previous || body.next);
    const pageNo = Math.floor(q.offset / pageSize) + 1;
    status.textContent = found(body.results.length, paged ? pageNo : null, Boolean(body.next));
    previous.disabled = !body.previous;
    next.disabled = !body.next;
    pageNumber.textContent = paged ? "Page " + pageNo : "";
    app.removeAttribute("aria-busy");
  }

  // The live status line's answer, so that a screen reader says what came back.
  function found(count, pageNo, more) {
    if (!count) return "No photos found.";
    let text = count === 1 ? "1 photo found" : count + " photos found";
    if (pageNo !== null) text += " on page " + pageNo;
    return text + (more ? "; more on the next page." : ".");
  }

  // message: a text, or [before, name, after] whose name (a file name) goes in a <bdi>.
  function fail(message) {
    grid.replaceChildren();
    showText(status, Array.isArray(message) ? message : [message]);
    previous.disabled = next.disabled = true;
    pageNumber.textContent = "";
    app.removeAttribute("aria-busy");
  }

  function draw(results) {
    grid.replaceChildren(
      ...results.map((photo) => {
        const item = card.content.firstElementChild.cloneNode(true);
        const title = photo.title || "Untitled";
        const link = item.querySelector(".card-image");
        const image = item.querySelector("img");
        link.href = photo.image_url || "#";
        image.src = photo.thumbnail_url || photo.image_url || "";
        image.alt = photo.alt_text || photo.title || "";
        item.querySelector(".card-title").textContent = title;
        item.querySelector(".card-score").textContent = photo.score === null ? "" : photo.score.toFixed(3);
        item.dataset.id = photo.id;
        item.querySelector(".more-like-this").addEventListener("click", () => {
          go({ kind: "similar", id: String(photo.id), title: title, offset: 0 });
          // This button goes with the old results: the keyboard focus moves to the new ones' heading.
          heading.focus();
          window.scrollTo({ top: 0 });
        });
        return item;
      })
    );
  }

  function searchByPhoto(file) {
    if (!file) return;
    if (!file.type.startsWith("image/")) {
      fail(["", file.name, " is not an image."]);
      return;
    }
    if (file.size > maxUploadBytes) {
      fail(["", file.name, " is larger than the " + Math.round(maxUploadBytes / 1048576) + " MB the site accepts."]);
      return;
    }
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    query = { kind: "photo", file: file, offset: 0 };
    // The address goes back to the plain page: a photo search cannot be linked to.
    history.pushState({}, "", window.location.pathname);
    show();
  }

  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const words = input.value.trim();
    go(words ? { kind: "words", q: words, offset: 0 } : { kind: "all", offset: 0 });
  });
  fileInput.addEventListener("change", () => {
    searchByPhoto(fileInput.files[0]);
    fileInput.value = ""; // the same file again still searches
  });
  previous.addEventListener("click", () => page(-1));
  next.addEventListener("click", () => page(1));

  function page(step) {
    const offset = Math.max(0, query.offset + step * pageSize);
    if (query.kind === "photo") {
      query = Object.assign({}, query, { offset: offset });
      show();
    } else {
      go(Object.assign({}, query, { offset: offset }));
    }
    window.scrollTo({ top: 0 });
  }

  // Drop a photo anywhere on the page.
  const hasFiles = (event) => event.dataTransfer && Array.from(event.dataTransfer.types).includes("Files");
  document.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    overlay.hidden = false;
  });
  document.addEventListener("dragleave", (event) => {
    if (event.relatedTarget === null) overlay.hidden = true;
  });
  document.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    overlay.hidden = true;
    searchByPhoto(event.dataTransfer.files[0]);
  });

  window.addEventListener("popstate", () => {
    query = fromAddress();
    show();
  });
  query = fromAddress();
  show();
})();
