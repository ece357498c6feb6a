// emo's service worker: on the first visit it caches the page, onnxruntime-web and the models, and
// from then on answers them from the cache, so the page opens with no network at all. The cache is
// named after the files' content (Python fills in the name and the list when it serves or exports
// the page): a changed file means a new worker, which fetches the new set and drops the old one.
"use strict";

const CACHE = "__EMO_CACHE__";
const FILES = __EMO_FILES__;
const SCOPE = new URL("./", self.location).href;
const CACHED = new Set(FILES.map((f) => new URL(f, SCOPE).href));

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(FILES.map((f) => new Request(new URL(f, SCOPE), { cache: "reload" }))))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith("emo-") && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  url.search = "";
  url.hash = "";
  let key = url.href;
  if (key === new URL("index.html", SCOPE).href) key = SCOPE;
  // Only the page's own files: the server's API (/predict, /live, /server, /docs) goes to the network.
  if (event.request.method !== "GET" || !CACHED.has(key)) return;
  event.respondWith(caches.open(CACHE).then((cache) => cache.match(key).then((hit) => hit || fetch(event.request))));
});
