// node-tailor composing the movie page from three fragments served by the bench's stubs.
// Usage: node server.js PORT TEMPLATE_FILE CATALOG_URL SUBSCRIPTION_URL RECOMMENDER_URL
'use strict';
const http = require('http');
const Tailor = require('node-tailor');

const [port, template, catalog, subscription, recommender] = process.argv.slice(2);
const tailor = new Tailor({
  templatesPath: template, // one file: every page uses it
  // Each request's fragment URLs carry its movie id (Tailor's per-request context by fragment id).
  fetchContext: (request) => {
    const match = /^\/movies\/(\d+)/.exec(request.url);
    const id = match ? match[1] : '1';
    return Promise.resolve({
      movie: { src: `${catalog}/fragments/movie/${id}` },
      plan: { src: `${subscription}/fragments/plan?movie=${id}` },
      similar: { src: `${recommender}/fragments/similar/${id}` },
    });
  },
});
const server = http.createServer((request, response) => {
  if (request.url === '/healthz') {
    response.end('{"status":"ok"}');
    return;
  }
  tailor.requestHandler(request, response);
});
server.keepAliveTimeout = 75000;
server.listen(Number(port), '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
