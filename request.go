package gqlpush

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Request flags.
const (
	flagSSE       = "wg_sse"
	flagSSEAlias  = "wg_see"
	flagOnce      = "wg_subscribe_once"
	flagJSONPatch = "wg_json_patch"
	flagDedupe    = "wg_deduplicate"
	flagVariables = "wg_variables"
	flagLive      = "wg_live"
)

// A request is a parsed, checked client request.
type request struct {
	ep        *endpoint
	principal *Principal // nil: anonymous
	sse       bool
	once      bool
	patch     bool   // wg_json_patch
	dedupe    bool   // wg_deduplicate
	live      bool   // wg_live: a query followed as a stream
	vars      []byte // canonical JSON

	// What goes upstream on the connection's handshake, and the digest of it
	// that keeps callers with different values apart.
	header        http.Header
	init          json.RawMessage
	forwardDigest string

	key   subKey // of its shared subscription
	owner string // its caller, for the stream caps
}

// ServeHTTP serves GET <prefix><operation>?<flags and variables>.
//
// The checks run in this order, and the first that fails answers: the
// operation exists (404), the method (405), the query string's size (414),
// the credentials (401), the operation's rules (401, 403), flags and
// variables (400), the stream caps (429).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.cors(w, r) {
		return // a preflight, answered
	}
	req, herr := h.parseRequest(r)
	if herr != nil {
		writeError(w, herr)
		return
	}
	req.key = subKey{ep: req.ep, forwardDigest: req.forwardDigest, vars: string(req.vars)}
	if req.once {
		// A one-shot request gets its own upstream subscription: it wants
		// the upstream's first result, not the next one of a running
		// subscription.
		req.key.nonce = h.hub.nonces.Add(1)
	}
	req.owner = h.limitKey(r, req.principal)
	anonymous := req.principal == nil
	release, byCaller, herr := h.limits.acquire(req.owner, anonymous)
	if byCaller && h.hub.makeRoom(req.owner, req.key) {
		release, _, herr = h.limits.acquire(req.owner, anonymous)
	}
	if herr != nil {
		writeError(w, herr)
		return
	}
	if !h.streams.add() {
		release()
		writeError(w, errShuttingDown)
		return
	}
	if req.ep.op.query && !req.live {
		defer release()
		defer h.streams.done()
		h.serveQuery(w, r, req)
		return
	}
	h.serveStream(w, r, req, func() {
		h.streams.done()
		release()
	})
}

func (h *Handler) parseRequest(r *http.Request) (*request, *httpError) {
	p := r.URL.Path
	if !strings.HasPrefix(p, h.cfg.Prefix) {
		return nil, refuse(probNotFound, "")
	}
	name := strings.TrimPrefix(p[len(h.cfg.Prefix):], "/")
	ep := h.endpoints[name]
	if ep == nil {
		return nil, refuse(probNotFound, "no operation "+quoteShort(name))
	}
	if r.Method != http.MethodGet {
		return nil, refuse(probMethodNotAllowed, "method "+quoteShort(r.Method)+" not allowed: operations are GET requests")
	}
	if len(r.URL.RawQuery) > h.cfg.MaxQueryBytes {
		return nil, refuse(probQueryTooLong, "query string longer than "+strconv.Itoa(h.cfg.MaxQueryBytes)+" bytes")
	}
	principal, herr := h.authenticate(r, ep)
	if herr != nil {
		return nil, herr
	}
	params, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badInput("malformed query string")
	}
	req := &request{ep: ep, principal: principal}
	var (
		varsJSON   map[string]any
		varsParams map[string][]string
		seenSSE    bool
	)
	for k, vals := range params {
		if !strings.HasPrefix(k, "wg_") {
			if k == "access_token" && !ep.declares(k) {
				// RFC 6750 allows it; gqlpush does not: URLs end up
				// in logs and in browser history.
				return nil, badInput("a token is not accepted in the query string: send it in the Authorization header or the cookie")
			}
			if varsParams == nil {
				varsParams = map[string][]string{}
			}
			varsParams[k] = vals
			continue
		}
		if len(vals) != 1 {
			return nil, badInput("parameter " + quoteShort(k) + " given " + strconv.Itoa(len(vals)) + " times")
		}
		v := vals[0]
		switch k {
		case flagSSE, flagSSEAlias:
			if seenSSE {
				return nil, badInput("give wg_sse once (wg_see is the same flag)")
			}
			seenSSE = true
			if req.sse, err = parseFlag(k, v); err != nil {
				return nil, badInput(err.Error())
			}
		case flagOnce:
			if req.once, err = parseFlag(k, v); err != nil {
				return nil, badInput(err.Error())
			}
		case flagJSONPatch:
			if req.patch, err = parseFlag(k, v); err != nil {
				return nil, badInput(err.Error())
			}
		case flagDedupe:
			if req.dedupe, err = parseFlag(k, v); err != nil {
				return nil, badInput(err.Error())
			}
		case flagLive:
			if req.live, err = parseFlag(k, v); err != nil {
				return nil, badInput(err.Error())
			}
		case flagVariables:
			obj, err := decodeJSON(v)
			m, isObj := obj.(map[string]any)
			if err != nil || !isObj {
				return nil, badInput("wg_variables is not a JSON object")
			}
			varsJSON = m
		default:
			return nil, badInput("unknown parameter " + quoteShort(k) + " (wg_ parameters: wg_sse, wg_subscribe_once, wg_live, wg_json_patch, wg_deduplicate, wg_variables)")
		}
	}
	switch {
	case !ep.op.query && req.live:
		return nil, badInput("wg_live is for queries: " + quoteShort(name) + " is a subscription, which streams already")
	case ep.op.query && req.once:
		return nil, badInput("wg_subscribe_once is for subscriptions: " + quoteShort(name) + " is a query, answered once without wg_live")
	case ep.op.query && !req.live && (req.sse || req.patch || req.dedupe):
		return nil, badInput("wg_sse, wg_json_patch and wg_deduplicate are for streams: add wg_live to follow the query " + quoteShort(name))
	}
	if varsJSON != nil && varsParams != nil {
		return nil, badInput("give variables either in wg_variables or as parameters, not both")
	}
	vars, err := ep.coerceVariables(varsJSON, varsParams, principal)
	if err != nil {
		var ie *inputError
		if errors.As(err, &ie) {
			return nil, badInput(ie.msg)
		}
		return nil, badInput("invalid variables")
	}
	if ep.nats != nil {
		// A value that would change a subject's shape is refused before
		// anything is subscribed.
		if _, err := ep.nats.subjects(vars); err != nil {
			var ie *inputError
			if errors.As(err, &ie) {
				return nil, badInput(ie.msg)
			}
			return nil, badInput("invalid variables")
		}
	}
	if req.vars, err = encodeVariables(vars); err != nil {
		return nil, badInput("invalid variables")
	}
	if req.header, req.init, req.forwardDigest, herr = h.forward(r, ep.up, principal); herr != nil {
		return nil, herr
	}
	return req, nil
}

// parseFlag reads a flag: on when empty, "true" or "1"; off when "false" or
// "0".
func parseFlag(name, v string) (bool, error) {
	switch v {
	case "", "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, errors.New(name + " must be true, false, 1, 0 or empty, not " + quoteShort(v))
}
