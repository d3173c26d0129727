#!/usr/bin/env node
// Reference upstream GraphQL server for gqlpush Go interop tests: subscriptions
// over WebSocket or over Server-Sent Events, queries over HTTP.
//
// Usage:
//   node server.mjs --protocol graphql-transport-ws|graphql-ws|graphql-sse|yoga
//                   [--port 0] [--interval 100] [--keepalive 1000] [--ping 12000]
//                   [--init-timeout 3000] [--ignore-stdin-eof]
//
//   --protocol graphql-transport-ws  graphql-ws library (useServer from graphql-ws/use/ws)
//   --protocol graphql-ws            legacy subscriptions-transport-ws SubscriptionServer
//   Either way, the same port serves GraphQL over HTTP (graphql-http's
//   createHandler for node:http) at /graphql, for the same schema: a POST of
//   application/json (or a GET with ?query=...), answered with
//   application/graphql-response+json or application/json as the Accept
//   header asks.
//   --protocol graphql-sse  graphql-sse library (createHandler from
//                     graphql-sse/lib/use/http), as it comes: a request whose
//                     Accept header names text/event-stream goes to it, and
//                     without a stream token that is the distinct connections
//                     mode, one operation per request (GET with ?query=...&
//                     variables=..., or a POST of application/json) answered
//                     with "event: next" frames and one "event: complete".
//                     graphql-sse takes a request for an event stream only when
//                     Accept is exactly text/event-stream. Every other request
//                     at /graphql goes to graphql-http, as in the modes above.
//   --protocol yoga   a stock GraphQL Yoga server (createYoga, served by
//                     node:http) at /graphql for every request: its own
//                     GraphQL over HTTP, and its SSE subscriptions when Accept
//                     names text/event-stream, GET or POST ("event: next"
//                     frames, then "event: complete" with an empty data line).
//                     Yoga masks unexpected resolver errors: failing answers
//                     "Unexpected error." there.
//   Both SSE servers start a stream with a ":" comment and repeat it every 12 s.
//   --port N          listen port on 127.0.0.1 (0 = pick a free port); path is /graphql
//   --interval MS     messageCreated emission period (default 100)
//   --keepalive MS    legacy server only: "ka" message period (default 1000, 0 = off)
//   --ping MS         graphql-ws server only: WebSocket-level ping period, a client
//                     that does not pong within MS is terminated (default 12000, 0 = off)
//   --init-timeout MS graphql-ws server only: connectionInitWaitTimeout (default 3000)
//   --ignore-stdin-eof  do not exit when stdin reaches EOF
//
// stdout (one line each, nothing else is ever written to stdout):
//   LISTENING ws://127.0.0.1:<port>/graphql                     (always first;
//                                     http:// for graphql-sse and yoga)
//   {"event":"connect","conn":N,"protocol":"...","payload":...,"headers":{...}}
//   {"event":"subscribe","conn":N,"id":"...","query":"...","variables":...,"operationName":...,"extensions":...}
//   {"event":"complete","conn":N,"id":"..."}                     (onComplete / onOperationComplete hook)
//   {"event":"unsubscribe","conn":N,"id":"...","field":"...","args":{...}}
//   {"event":"disconnect","conn":N,"code":C,"reason":"..."}
//   {"event":"closed-all","count":K}
//   {"event":"query","n":N,"method":"POST","query":"...","variables":...,"operationName":...,"extensions":...,"headers":{...}}
//   {"event":"subscribe","conn":N,"id":null,"method":"GET","query":"...","variables":...,"operationName":...,"extensions":...,"headers":{...}}
//                                     (graphql-sse and yoga)
//   {"event":"posted","id":"...","room":"...","count":K}
//   {"event":"fail","mode":"..."}
//   {"event":"refused","conn":N,"method":"GET","status":S,"headers":{...}}
//   "conn" numbers WebSocket connections 1, 2, ... in accept order. "payload" is
//   the connection_init payload (null if absent), "variables"/"operationName"/
//   "extensions" are null if absent. "unsubscribe" is printed from the
//   subscription's async generator finally block only when it was stopped
//   before finishing on its own (client complete/stop, or connection closed),
//   never on natural completion. "complete" mirrors the library hook:
//   graphql-ws onComplete (every operation end except validation errors),
//   subscriptions-transport-ws onOperationComplete (stop, start-time failure,
//   and, on close, every id ever started on that connection). "disconnect":
//   graphql-ws onClose (every closed socket, incl. subprotocol rejections;
//   code/reason as received), subscriptions-transport-ws onDisconnect (not
//   called for sockets rejected for their subprotocol), printed after the
//   connection's "unsubscribe" lines.
//   With graphql-sse and yoga there is no connection but the HTTP request:
//   "conn" numbers the HTTP requests 1, 2, ... in arrival order, "id" is
//   null, and no "connect" or "disconnect" is printed. "subscribe" is a
//   request for an event stream that the library read as a GraphQL request
//   (graphql-sse onSubscribe, Yoga onParams), before it is parsed,
//   validated and executed, with "method" and "headers" (the request's)
//   added; "unsubscribe" is printed when the client went away before the
//   stream ended on its own. "complete": graphql-sse onComplete (after
//   every "event: complete" it sends, a validation error's included, and
//   after the "unsubscribe" of a client that went away), Yoga's
//   onSubscribe's onEnd (a subscription's source stream ended on its own,
//   or was stopped: then before the "unsubscribe" line). A request refused
//   with a status (a syntax error is 400 JSON with graphql-sse, Yoga
//   answers it over SSE) prints no "complete".
//   "query": a GraphQL-over-HTTP request that graphql-http read as one
//   (onSubscribe hook), before it is parsed, validated and executed; "n"
//   numbers them 1, 2, ... Requests it refused before (405, 406, 415, a body
//   that is no JSON object) print nothing; stderr logs every HTTP request
//   with its status. The query runs in the same turn of the event loop as
//   its line is printed, so a stdin command sent after reading the line
//   does not change that query's result. With graphql-sse and yoga, it has
//   "conn" too; with yoga, it is a request that does not ask for an event
//   stream, read by Yoga as a GraphQL request (onParams).
//   "posted": a "post" command added message "id" to "room"; "count" is
//   how many messages were posted in all.
//   "fail": a "fail" command took effect: the requests that arrive after
//   this line are answered as MODE says.
//   "refused": an HTTP request at /graphql answered as the fail mode says
//   (not WebSocket upgrades, which never reach the fail mode), with the
//   status it got; it reaches no GraphQL library and prints nothing else.
// Diagnostics go to stderr. Note: graphql-ws closes the socket with 4500 and
// the error message as reason when a query fails to parse ("Internal server
// error" instead if NODE_ENV=production).
//
// Query fields over HTTP: hello is "world"; messages(room) and
// messageCount(room) are the messages posted with "post" to room, or to any
// room when room is null, oldest first; failing resolves to an error
// ("failing on purpose"). Posted messages are apart from the ones that
// messageCreated emits.
//
// stdin commands (one per line):
//   close-all   terminate() every open WebSocket, then print {"event":"closed-all",...};
//               with graphql-sse and yoga, close every HTTP connection
//               (streams cut off as by a network failure), "count" being the
//               requests that were open
//   post [ROOM] add a message {id: "N", content: "posted N", room: ROOM}
//               (ROOM "general" by default), then print {"event":"posted",...}
//   fail MODE   answer the HTTP requests at /graphql that come next, before
//               any GraphQL library sees them, then print {"event":"fail",...}:
//                 500   status 500, text/plain
//                 html  status 200, text/html (a page, as a proxy's error page)
//                 get   a GET gets 405 with Allow: POST; other methods pass
//                 off   every request passes again (the default)
//   exit        exit the process
// The process also exits on SIGTERM, SIGINT and stdin EOF.

import http from 'node:http';
import readline from 'node:readline';
import { parseArgs } from 'node:util';

import { buildSchema, execute, subscribe } from 'graphql';
import { createHandler } from 'graphql-http/lib/use/http';
import { WebSocketServer } from 'ws';
import { useServer } from 'graphql-ws/use/ws';
import subscriptionsTransportWs from 'subscriptions-transport-ws';

const { SubscriptionServer } = subscriptionsTransportWs;

// ---------------------------------------------------------------------------
// flags

function intFlag(name, value, def) {
  if (value === undefined) return def;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) {
    process.stderr.write(`invalid --${name}: ${value}\n`);
    process.exit(2);
  }
  return n;
}

let flags;
try {
  ({ values: flags } = parseArgs({
    options: {
      protocol: { type: 'string' },
      port: { type: 'string' },
      interval: { type: 'string' },
      keepalive: { type: 'string' },
      ping: { type: 'string' },
      'init-timeout': { type: 'string' },
      'ignore-stdin-eof': { type: 'boolean' },
    },
    strict: true,
    allowPositionals: false,
  }));
} catch (err) {
  process.stderr.write(`${err.message}\n`);
  process.exit(2);
}

const PROTOCOL = flags.protocol;
if (!['graphql-transport-ws', 'graphql-ws', 'graphql-sse', 'yoga'].includes(PROTOCOL)) {
  process.stderr.write('--protocol must be graphql-transport-ws, graphql-ws, graphql-sse or yoga\n');
  process.exit(2);
}
// SSE: subscriptions come as HTTP requests, one per operation, answered
// with an event stream; there is no WebSocket server.
const SSE = PROTOCOL === 'graphql-sse' || PROTOCOL === 'yoga';
const PORT = intFlag('port', flags.port, 0);
const INTERVAL = intFlag('interval', flags.interval, 100);
const KEEPALIVE = intFlag('keepalive', flags.keepalive, 1000);
const PING = intFlag('ping', flags.ping, 12000);
const INIT_TIMEOUT = intFlag('init-timeout', flags['init-timeout'], 3000);
const HOST = '127.0.0.1';
const PATH = '/graphql';

// ---------------------------------------------------------------------------
// output

// Writes to a pipe are synchronous on Linux, so every line is flushed when
// write() returns.
function out(line) {
  process.stdout.write(line + '\n');
}
function emit(obj) {
  out(JSON.stringify(obj));
}
function log(...args) {
  process.stderr.write(`[interop ${PROTOCOL}] ${args.join(' ')}\n`);
}

process.stdout.on('error', (err) => {
  // Reader went away (EPIPE): nobody is listening any more.
  log('stdout error:', err.message);
  shutdown(0);
});

// ---------------------------------------------------------------------------
// connection bookkeeping (shared by both protocols)

const sockets = new Set(); // open WebSocket objects
const connInfo = new WeakMap(); // socket -> { conn, code, reason, disconnected }
let nextConn = 1;

function trackSocket(socket, request) {
  const info = { conn: nextConn++, code: undefined, reason: undefined, disconnected: false };
  connInfo.set(socket, info);
  sockets.add(socket);
  log(`conn ${info.conn} opened from ${request.socket.remoteAddress}:${request.socket.remotePort}` +
    ` subprotocol=${JSON.stringify(socket.protocol)} offered=${JSON.stringify(request.headers['sec-websocket-protocol'] ?? null)}`);
  socket.on('close', (code, reason) => {
    info.code = code;
    info.reason = String(reason);
    sockets.delete(socket);
    log(`conn ${info.conn} closed code=${code} reason=${JSON.stringify(String(reason))}`);
  });
}
function connOf(socket) {
  return connInfo.get(socket)?.conn ?? null;
}

// ---------------------------------------------------------------------------
// schema

const schema = buildSchema(/* GraphQL */ `
  type Query {
    hello: String!
    messages(room: String): [Message!]!
    messageCount(room: String): Int!
    failing: String
  }

  type Message {
    id: ID!
    content: String!
    room: String!
  }

  type Subscription {
    messageCreated(room: String): Message!
    countdown(from: Int!): Int!
    greetings: String!
  }
`);

function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

// observed wraps an async generator so that the server can tell when it was
// stopped before running to completion (client unsubscribed, connection
// closed). The generator's finally block prints the "unsubscribe" event.
// return()/throw() also abort a pending sleep so that a stop takes effect at
// once instead of after the current --interval.
function observed(field, args, context, body) {
  const ac = new AbortController();
  const state = { finished: false };
  async function* gen() {
    try {
      yield* body(ac.signal);
      // body returns early (without yielding more) when aborted by return()/throw().
      state.finished = !ac.signal.aborted;
    } finally {
      if (!state.finished) {
        emit({
          event: 'unsubscribe',
          conn: context?.conn ?? null,
          id: context?.opId ?? null,
          field,
          args,
        });
      }
    }
  }
  const it = gen();
  return {
    next: (v) => it.next(v),
    return: (v) => {
      ac.abort();
      return it.return(v);
    },
    throw: (e) => {
      ac.abort();
      return it.throw(e);
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}

const identity = (payload) => payload;

// posted holds the messages of the "post" command, which the query fields
// read.
const posted = [];
function postedTo(room) {
  return room == null ? posted : posted.filter((m) => m.room === room);
}

const queryFields = schema.getQueryType().getFields();
queryFields.hello.resolve = () => 'world';
queryFields.messages.resolve = (_root, args) => postedTo(args.room);
queryFields.messageCount.resolve = (_root, args) => postedTo(args.room).length;
queryFields.failing.resolve = () => {
  throw new Error('failing on purpose');
};

const subFields = schema.getSubscriptionType().getFields();

subFields.messageCreated.subscribe = (_root, args, context) =>
  observed('messageCreated', args, context, async function* (signal) {
    const room = args.room ?? 'general';
    for (let n = 1; ; n++) {
      await sleep(INTERVAL, signal);
      if (signal.aborted) return;
      yield { id: String(n), content: `message ${n}`, room };
    }
  });
subFields.messageCreated.resolve = identity;

subFields.countdown.subscribe = (_root, args, context) =>
  observed('countdown', args, context, async function* (signal) {
    for (let i = args.from; i >= 1; i--) {
      await null;
      if (signal.aborted) return;
      yield i;
    }
  });
subFields.countdown.resolve = identity;

subFields.greetings.subscribe = (_root, args, context) =>
  observed('greetings', args, context, async function* (signal) {
    for (const g of ['Hi', 'Bonjour', 'Hola']) {
      await null;
      if (signal.aborted) return;
      yield g;
    }
  });
subFields.greetings.resolve = identity;

// ---------------------------------------------------------------------------
// servers

let nextQuery = 1;
// queryEvent prints the "query" line of req, an http.IncomingMessage.
function queryEvent(req, params) {
  emit({
    event: 'query',
    n: nextQuery++,
    ...(SSE ? { conn: requestConn.get(req) ?? null } : {}),
    method: req.method,
    query: params.query,
    variables: params.variables ?? null,
    operationName: params.operationName ?? null,
    extensions: params.extensions ?? null,
    headers: req.headers,
  });
}

const graphqlOverHTTP = createHandler({
  schema,
  onSubscribe: (req, params) => {
    queryEvent(req.raw, params);
    // undefined -> default parse/validate/execute
  },
});

// In the SSE modes each HTTP request is a connection of its own: requestConn
// maps it to its number, and openRequests holds those whose response is not
// over yet.
const requestConn = new WeakMap(); // http.IncomingMessage -> conn
const openRequests = new Set(); // http.IncomingMessage

// subscribeEvent prints the "subscribe" line of an SSE-mode request.
function subscribeEvent(req, params) {
  emit({
    event: 'subscribe',
    conn: requestConn.get(req) ?? null,
    id: null,
    method: req.method,
    query: params.query,
    variables: params.variables ?? null,
    operationName: params.operationName ?? null,
    extensions: params.extensions ?? null,
    headers: req.headers,
  });
}

const acceptsEventStream = (req) => (req.headers.accept ?? '').includes('text/event-stream');

// failMode is set by the "fail" command: how the requests at /graphql are
// answered before any GraphQL library sees them.
let failMode = 'off';
const failModes = ['500', 'html', 'get', 'off'];

// refuse answers req as failMode says and returns true, or returns false
// when the request passes.
function refuse(req, res) {
  let status;
  let headers;
  let body;
  if (failMode === '500') {
    status = 500;
    headers = { 'content-type': 'text/plain; charset=utf-8' };
    body = 'failing on purpose\n';
  } else if (failMode === 'html') {
    status = 200;
    headers = { 'content-type': 'text/html; charset=utf-8' };
    body = '<!doctype html>\n<title>Down for maintenance</title>\n<p>Back soon.</p>\n';
  } else if (failMode === 'get' && req.method === 'GET') {
    status = 405;
    headers = { allow: 'POST', 'content-type': 'text/plain; charset=utf-8' };
    body = 'GET refused on purpose\n';
  } else {
    return false;
  }
  emit({
    event: 'refused',
    conn: requestConn.get(req) ?? null,
    method: req.method,
    status,
    headers: req.headers,
  });
  res.writeHead(status, headers);
  res.end(body);
  return true;
}

// graphqlHandler serves a request at /graphql that passed the fail mode; it
// is set below for the mode.
let graphqlHandler = graphqlOverHTTP;

// WebSocket upgrades never reach this listener: the ws servers take them.
const httpServer = http.createServer((req, res) => {
  if (SSE) {
    requestConn.set(req, nextConn++);
    openRequests.add(req);
    res.on('close', () => openRequests.delete(req));
  }
  const conn = requestConn.get(req);
  res.on('close', () => {
    const end = res.writableFinished ? '' : ' (cut off)';
    log(`http${conn ? ` conn ${conn}` : ''} ${req.method} ${req.url} ${res.statusCode}${end}`);
  });
  if (new URL(req.url, 'http://localhost').pathname !== PATH) {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found\n');
    return;
  }
  if (refuse(req, res)) return;
  graphqlHandler(req, res);
});

function disconnectEvent(socket, code, reason) {
  const info = connInfo.get(socket);
  if (info) {
    if (info.disconnected) return;
    info.disconnected = true;
  }
  emit({
    event: 'disconnect',
    conn: info?.conn ?? null,
    code: code ?? info?.code ?? null,
    reason: reason ?? info?.reason ?? '',
  });
}

let wsServer; // the underlying ws WebSocketServer (ws@8 or ws@7)

if (PROTOCOL === 'graphql-sse') {
  // Loaded in its mode only, so that the other modes start as fast as before.
  const { createHandler: createSSEHandler } = await import('graphql-sse/lib/use/http');
  const sseHandler = createSSEHandler({
    schema,
    execute,
    subscribe,
    context: (req) => ({ conn: requestConn.get(req.raw) ?? null, opId: null }),
    onSubscribe: (req, params) => {
      subscribeEvent(req.raw, params);
      // undefined -> default parse/validate/execute
    },
    onComplete: (ctx) => {
      emit({ event: 'complete', conn: ctx?.conn ?? null, id: null });
    },
  });
  graphqlHandler = (req, res) => {
    if (!acceptsEventStream(req)) {
      graphqlOverHTTP(req, res);
      return;
    }
    sseHandler(req, res).catch((err) => {
      log(`conn ${requestConn.get(req)}: graphql-sse:`, err?.stack ?? err);
      if (res.headersSent) {
        res.destroy();
        return;
      }
      res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
      res.end('internal error\n');
    });
  };
} else if (PROTOCOL === 'yoga') {
  const { createYoga } = await import('graphql-yoga');
  const yogaLog = (level) => (...args) => log(`yoga ${level}:`, ...args.map((a) => a?.stack ?? String(a)));
  const yoga = createYoga({
    schema,
    // Yoga logs to the console, stdout included: the lines go to stderr.
    logging: { debug: () => {}, info: yogaLog('info'), warn: yogaLog('warn'), error: yogaLog('error') },
    context: ({ req }) => ({ conn: requestConn.get(req) ?? null, opId: null }),
    plugins: [
      {
        onParams: ({ params, context }) => {
          if (acceptsEventStream(context.req)) {
            subscribeEvent(context.req, params);
          } else {
            queryEvent(context.req, params);
          }
        },
        onSubscribe: ({ args }) => {
          const conn = args.contextValue?.conn ?? null;
          return {
            onSubscribeResult: () => ({
              onEnd: () => emit({ event: 'complete', conn, id: null }),
            }),
          };
        },
      },
    ],
  });
  graphqlHandler = yoga;
} else if (PROTOCOL === 'graphql-transport-ws') {
  wsServer = new WebSocketServer({ server: httpServer, path: PATH });
  wsServer.on('connection', trackSocket); // registered before useServer's listener
  useServer(
    {
      schema,
      execute,
      subscribe,
      connectionInitWaitTimeout: INIT_TIMEOUT,
      context: (ctx, id) => ({ conn: connOf(ctx.extra.socket), opId: id }),
      onConnect: (ctx) => {
        emit({
          event: 'connect',
          conn: connOf(ctx.extra.socket),
          protocol: ctx.extra.socket.protocol,
          payload: ctx.connectionParams ?? null,
          headers: ctx.extra.request.headers,
        });
        // undefined -> connection_ack without payload
      },
      onSubscribe: (ctx, id, payload) => {
        emit({
          event: 'subscribe',
          conn: connOf(ctx.extra.socket),
          id,
          query: payload.query,
          variables: payload.variables ?? null,
          operationName: payload.operationName ?? null,
          extensions: payload.extensions ?? null,
        });
        // undefined -> default parse/validate/execute
      },
      onComplete: (ctx, id) => {
        emit({ event: 'complete', conn: connOf(ctx.extra.socket), id });
      },
      onClose: (ctx, code, reason) => {
        disconnectEvent(ctx.extra.socket, code, reason);
      },
    },
    wsServer,
    PING,
  );
} else {
  const subscriptionServer = SubscriptionServer.create(
    {
      schema,
      execute,
      subscribe,
      keepAlive: KEEPALIVE,
      onConnect: (payload, socket, connectionContext) => {
        emit({
          event: 'connect',
          conn: connOf(socket),
          protocol: socket.protocol,
          payload: payload ?? null,
          headers: connectionContext.request.headers,
        });
        return true;
      },
      onOperation: (message, params, socket) => {
        const p = message.payload ?? {};
        emit({
          event: 'subscribe',
          conn: connOf(socket),
          id: message.id,
          query: p.query,
          variables: p.variables ?? null,
          operationName: p.operationName ?? null,
          extensions: p.extensions ?? null,
        });
        return {
          ...params,
          context: { ...params.context, conn: connOf(socket), opId: message.id },
        };
      },
      onOperationComplete: (socket, opId) => {
        emit({ event: 'complete', conn: connOf(socket), id: opId });
      },
      onDisconnect: (socket) => {
        // subscriptions-transport-ws calls this on both 'error' and 'close';
        // disconnectEvent de-duplicates. It calls this right after asking the
        // operations' iterators to return, before their finally blocks have
        // run; defer so that "unsubscribe" lines precede "disconnect" as they
        // do with graphql-ws.
        setImmediate(() => disconnectEvent(socket));
      },
    },
    { server: httpServer, path: PATH },
  );
  wsServer = subscriptionServer.server; // ws@7 server created by the library
  // Run before the library's connection handler so that our 'close' listener
  // (recording the close code) fires before the library calls onDisconnect.
  wsServer.prependListener('connection', trackSocket);
}

wsServer?.on('error', (err) => log('ws server error:', err.message));

// ---------------------------------------------------------------------------
// lifecycle

let shuttingDown = false;
function shutdown(code) {
  if (shuttingDown) return;
  shuttingDown = true;
  for (const s of sockets) {
    try {
      s.terminate();
    } catch {
      // ignore
    }
  }
  try {
    httpServer.close();
    httpServer.closeAllConnections();
  } catch {
    // ignore
  }
  process.exit(code);
}

process.on('SIGTERM', () => shutdown(0));
process.on('SIGINT', () => shutdown(0));
process.on('SIGHUP', () => shutdown(0));

httpServer.on('error', (err) => {
  log('http server error:', err.message);
  process.exit(1);
});

httpServer.listen(PORT, HOST, () => {
  const { port } = httpServer.address();
  const scheme = SSE ? 'http' : 'ws';
  out(`LISTENING ${scheme}://${HOST}:${port}${PATH}`);
  log(`listening on ${scheme}://${HOST}:${port}${PATH} interval=${INTERVAL} keepalive=${KEEPALIVE} ping=${PING}`);

  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  rl.on('line', (line) => {
    const cmd = line.trim();
    if (cmd === '') return;
    if (cmd === 'close-all') {
      let count;
      if (SSE) {
        count = openRequests.size;
        httpServer.closeAllConnections();
      } else {
        count = sockets.size;
        for (const s of [...sockets]) s.terminate();
      }
      emit({ event: 'closed-all', count });
    } else if (cmd.startsWith('fail ')) {
      const mode = cmd.slice('fail'.length).trim();
      if (!failModes.includes(mode)) {
        log('unknown fail mode:', JSON.stringify(mode));
        return;
      }
      failMode = mode;
      emit({ event: 'fail', mode });
    } else if (cmd === 'post' || cmd.startsWith('post ')) {
      const room = cmd.slice('post'.length).trim() || 'general';
      const id = String(posted.length + 1);
      posted.push({ id, content: `posted ${id}`, room });
      emit({ event: 'posted', id, room, count: posted.length });
    } else if (cmd === 'exit') {
      shutdown(0);
    } else {
      log('unknown stdin command:', JSON.stringify(cmd));
    }
  });
  rl.on('close', () => {
    if (flags['ignore-stdin-eof']) {
      log('stdin closed (ignored)');
      return;
    }
    log('stdin closed, exiting');
    shutdown(0);
  });
});
