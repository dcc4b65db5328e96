'use strict';
// fastify 5 + @fastify/http-proxy 11 (which uses @fastify/reply-from over an undici pool,
// keep-alive by default). Env: PORT (listen, 127.0.0.1), UPSTREAM (e.g. http://127.0.0.1:18080).
const fastify = require('fastify')({ logger: false });

fastify.register(require('@fastify/http-proxy'), {
  upstream: process.env.UPSTREAM,
  undici: { connections: 64, pipelining: 1, keepAliveTimeout: 60_000 },
});

fastify.listen({ port: Number(process.env.PORT), host: '127.0.0.1' }).catch((err) => {
  console.error(err);
  process.exit(1);
});
