// Package gqlpush serves persisted GraphQL subscriptions as plain HTTP
// streams. A subscription written in a .graphql file becomes an endpoint
// that any browser or HTTP client follows with a GET — results pushed as
// Server-Sent Events, or as a stream of JSON documents — while gqlpush
// subscribes upstream to the GraphQL server over WebSocket or over
// Server-Sent Events, or to NATS subjects, and unsubscribes the moment the client leaves. Query operations
// are answered once, or followed live: polled upstream over GraphQL over
// HTTP, once per distinct query for all its clients, and pushed when their
// result changed.
//
// Mount it in an existing server:
//
//	//go:embed operations
//	var files embed.FS
//
//	dir, err := fs.Sub(files, "operations")
//	if err != nil {
//		return err
//	}
//	ops, err := gqlpush.LoadOperations(dir) // every *.graphql below, checked
//	if err != nil {
//		return err // names file:line:col and the rule broken
//	}
//	h, err := gqlpush.NewHandler(gqlpush.Config{
//		Operations: ops,
//		Upstreams:  []gqlpush.Upstream{{Name: "gql", URL: "ws://localhost:4000/graphql"}},
//		Prefix:     "/operations/",
//	})
//	if err != nil {
//		return err // a *ConfigError or an *OperationError
//	}
//	mux.Handle("/operations/", h)
//	...
//	h.Close(ctx)      // on shutdown: every stream ends with its end frame,
//	srv.Shutdown(ctx) // then the server's other requests
//
// operations/Sub.graphql is then served at /operations/Sub:
//
//	subscription MyQuery {
//	  gql_messageCreated { content id }
//	}
//
// # Operations
//
// One file holds one subscription with exactly one root field, or one query
// with root fields of one upstream. Its endpoint name is its path without
// .graphql (chat/New.graphql → chat/New). Root fields are namespaced by the
// upstream's name: gql_messageCreated reaches field messageCreated of the
// upstream named "gql"; the query sent upstream aliases it back, so results
// keep the name the operation wrote. Loading fails, naming file:line:col, on
// a syntax error, a mutation, a subscription with more or fewer than one
// root field, @internal (served operations cannot be internal), @live on a
// subscription, a prefix that names no upstream, or — when the upstream's
// schema is given — anything the schema rejects.
//
// # Queries
//
//	GET /operations/Count                           the upstream's result as the whole body
//	GET /operations/Count?wg_live=true&wg_sse=true  the result now, then each change
//
// Queries are posted to [Upstream.HTTPURL] (GraphQL over HTTP). A live
// query's clients with the same variables and forwarded values share one
// poller, which asks every [Config.LivePollInterval], or at the interval of
// the operation's @live(pollingIntervalSeconds: N), never twice at once,
// and pushes a result only when it changed.
//
// # Requests
//
//	GET /operations/Sub?wg_sse=true                 Server-Sent Events
//	GET /operations/Sub                             JSON documents, each followed by a blank line
//	GET /operations/Sub?wg_subscribe_once=true      the first result as the whole body
//	GET /operations/Room?room=a                     variables, one parameter each
//	GET /operations/Room?wg_variables={"room":"a"}  or as one JSON object
//
// A flag is on when present and empty, "true" or "1", off when "false" or
// "0". Variables are coerced to their declared types; defaults apply.
// Before a stream starts, errors are JSON —
// {"errors":[{"message":"…","extensions":{"code":"…"}}]} — with status 404
// (NOT_FOUND), 405 (METHOD_NOT_ALLOWED), 400 or 414 (BAD_USER_INPUT), 401
// (UNAUTHENTICATED), 403 (FORBIDDEN), 429 (TOO_MANY_STREAMS,
// TOO_MANY_SUBSCRIPTIONS, TOO_MANY_UPSTREAM_CONNECTIONS, with Retry-After),
// 503 (SHUTTING_DOWN). A wg_subscribe_once request with no result within
// [Config.OnceTimeout] gets 504 (UPSTREAM_TIMEOUT).
//
// # Server-Sent Events
//
// The frames follow the SSE part of the HTML standard
// (https://html.spec.whatwg.org/multipage/server-sent-events.html), each
// followed by a blank line:
//
//	:                                   opens the stream, and is the heartbeat
//	event: reset                        after the opening comment, when a
//	data:                               Last-Event-ID cannot be resumed
//	id: 7w4g2cxq3hj5kmzp.41             one per result: an opaque id,
//	data: {"data":{…}}                  and the result as compact JSON
//	data: {"errors":[…]}                before the end, when it ends in error
//	event: complete                     the end; the response ends with it
//	data:
//
// A client that reconnects with the Last-Event-ID of a result still in the
// resume window (browsers' EventSource does it on its own) gets what it
// missed, then the live results. Errors that end a stream carry a code:
// UPSTREAM_UNAVAILABLE (the upstream is lost for good, or refused the
// subscription), RESULT_TOO_LARGE (a result over the upstream's read
// limit), SLOW_CONSUMER (the client fell too far behind), UNAUTHENTICATED
// (its token expired), SHUTTING_DOWN ([Handler.Close]). Errors the upstream
// sends pass through as it sent them. [Code] and [Reason] list them all.
//
// # Authentication
//
// With a [Config.Authenticator] (such as the JSON Web Token one of package
// gqlpushjwt), operations declare who may follow them: @auth (a login is
// needed), @rbac(...) (role rules), and @fromClaim(name: ...) on a variable,
// whose value then comes from the verified token, never from the client.
// Missing or invalid credentials get 401 (UNAUTHENTICATED), a failed role
// rule 403 (FORBIDDEN). A stream ends when its credentials expire.
//
// # Limits
//
// Everything a client or an upstream can make a Handler hold is bounded:
// unread results per client in number and bytes ([Config.QueueSize],
// [Config.QueueBytes]), the resume window, one upstream message
// ([WebSocketDialer.ReadLimit], [Config.MaxResponseBytes] over SSE), streams in all, per caller and for
// anonymous callers, upstream subscriptions, upstream connections. The
// fields of [Config] give each default.
//
// # Connections
//
// Over HTTP/1.x a stream takes its connection over from net/http: it writes
// its frames straight to the socket, in the chunked coding, and ServeHTTP
// returns while the stream goes on, owned by the [Handler] until it ends.
// http.Server.Shutdown therefore does not wait for streams: call
// [Handler.Close] for that. [Config.UseResponseWriter] keeps streams on the
// ResponseWriter, as HTTP/2 always does.
//
// # Upstreams
//
// gqlpush speaks graphql-transport-ws
// (https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md) and the
// older graphql-ws protocol of subscriptions-transport-ws. One WebSocket per
// upstream and forwarded values carries every subscription; it opens with
// the first and closes soon after the last. A lost connection is redialled
// with backoff and its subscriptions resubscribed while clients stay
// connected; an upstream that refuses for good ends them at once.
//
// An upstream of [ProtocolSSE] (GraphQL Yoga, the graphql-sse library)
// serves subscriptions over Server-Sent Events, in the distinct
// connections mode of https://github.com/enisdenjo/graphql-sse/blob/master/PROTOCOL.md:
// one HTTP request per upstream subscription, cancelled when its last
// client leaves, asked again with the same backoff when it is lost.
//
// # NATS
//
// An upstream whose URL is nats:// or tls://, or that has a NATS
// connection, feeds subscription fields from NATS subjects, with no GraphQL
// server: its schema, required, names them on each subscription field,
//
//	orderUpdated(id: ID!): Order! @natsSubscribe(subjects: ["orders.{{ args.id }}.updated"])
//
// with stream: "NAME" for a JetStream stream, whose sequences become the
// event ids so that clients resume from the stream itself. A message's
// payload is the field's JSON value, completed through the operation's
// selection set as a GraphQL server would execute it. A value rendered into
// a subject that would change its shape (empty, or holding ".", "*", ">",
// white space or a control character) is refused with 400.
package gqlpush
