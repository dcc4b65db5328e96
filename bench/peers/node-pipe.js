'use strict';
// Not a proxy: each client connection gets one upstream connection of its own, and the bytes are
// copied both ways with no HTTP parsing, routing or header work at all. It measures what Node's
// socket layer alone costs per request (two reads and two writes through net.Socket), so it is
// the ceiling for any proxy written on node:net, keel included.
// Env: PORT (listen, 127.0.0.1), UPSTREAM_PORT (127.0.0.1).
const net = require('node:net');

const port = Number(process.env.PORT);
const upstreamPort = Number(process.env.UPSTREAM_PORT);

net.createServer({ noDelay: true }, (down) => {
  const up = net.connect({ host: '127.0.0.1', port: upstreamPort, noDelay: true });
  // Backpressure both ways, as a proxy must: stop reading one side while the other is full.
  down.on('data', (b) => { if (!up.write(b)) down.pause(); });
  up.on('data', (b) => { if (!down.write(b)) up.pause(); });
  up.on('drain', () => down.resume());
  down.on('drain', () => up.resume());
  down.on('error', () => up.destroy());
  up.on('error', () => down.destroy());
  down.on('close', () => up.destroy());
  up.on('close', () => down.destroy());
}).listen(port, '127.0.0.1');
