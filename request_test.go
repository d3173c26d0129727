package gqlpush_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/gqlpush/gqlpush"
)

func TestBadRequests(t *testing.T) {
	g := newGateway(t, nil)
	long := strings.Repeat("x", gqlpush.DefaultMaxQueryBytes)
	tests := []struct {
		name     string
		method   string
		path     string
		status   int
		code     string
		mentions string // the message names the problem
	}{
		{"unknown operation", "GET", "/operations/Nope?wg_sse", 404, "NOT_FOUND", `"Nope"`},
		{"no operation name", "GET", "/operations/", 404, "NOT_FOUND", `""`},
		{"operation name with trailing slash", "GET", "/operations/Sub/", 404, "NOT_FOUND", `"Sub/"`},
		{"case matters in names", "GET", "/operations/sub", 404, "NOT_FOUND", `"sub"`},
		{"unknown nested operation", "GET", "/operations/chat/Nope", 404, "NOT_FOUND", `"chat/Nope"`},
		{"POST", "POST", "/operations/Sub?wg_sse", 405, "METHOD_NOT_ALLOWED", "POST"},
		{"PUT", "PUT", "/operations/Sub", 405, "METHOD_NOT_ALLOWED", "PUT"},
		{"DELETE", "DELETE", "/operations/Sub", 405, "METHOD_NOT_ALLOWED", "DELETE"},
		{"HEAD", "HEAD", "/operations/Sub", 405, "", ""},
		{"flag value not a boolean", "GET", "/operations/Sub?wg_sse=yes", 400, "BAD_USER_INPUT", "wg_sse"},
		{"once flag value not a boolean", "GET", "/operations/Sub?wg_subscribe_once=2", 400, "BAD_USER_INPUT", "wg_subscribe_once"},
		{"flag given twice", "GET", "/operations/Sub?wg_sse&wg_sse=false", 400, "BAD_USER_INPUT", "wg_sse"},
		{"flag and its alias", "GET", "/operations/Sub?wg_sse&wg_see", 400, "BAD_USER_INPUT", "wg_see"},
		{"unknown wg_ parameter", "GET", "/operations/Sub?wg_foo=1", 400, "BAD_USER_INPUT", "wg_foo"},
		{"flag names are case-sensitive", "GET", "/operations/Sub?wg_SSE=1", 400, "BAD_USER_INPUT", "wg_SSE"},
		{"malformed query string", "GET", "/operations/Sub?wg_sse=%zz", 400, "BAD_USER_INPUT", "query string"},
		{"semicolon in query string", "GET", "/operations/Sub?wg_sse;x=1", 400, "BAD_USER_INPUT", "query string"},
		{"oversized query string", "GET", "/operations/Sub?x=" + long, 414, "BAD_USER_INPUT", "longer than"},
		{"wg_variables not JSON", "GET", "/operations/Count?wg_variables=" + url.QueryEscape(`{from:1}`), 400, "BAD_USER_INPUT", "wg_variables"},
		{"wg_variables a list", "GET", "/operations/Count?wg_variables=" + url.QueryEscape(`[1]`), 400, "BAD_USER_INPUT", "wg_variables"},
		{"wg_variables with trailing data", "GET", "/operations/Count?wg_variables=" + url.QueryEscape(`{}{}`), 400, "BAD_USER_INPUT", "wg_variables"},
		{"wg_variables given twice", "GET", "/operations/Count?wg_variables=%7B%7D&wg_variables=%7B%7D", 400, "BAD_USER_INPUT", "wg_variables"},
		{"wrong type in parameter", "GET", "/operations/Count?from=abc", 400, "BAD_USER_INPUT", `"from"`},
		{"float for Int", "GET", "/operations/Count?from=1.5", 400, "BAD_USER_INPUT", "Int"},
		{"Int out of 32-bit range", "GET", "/operations/Count?from=3000000000", 400, "BAD_USER_INPUT", "Int"},
		{"wrong type in wg_variables", "GET", "/operations/Count?wg_variables=" + url.QueryEscape(`{"from":"3"}`), 400, "BAD_USER_INPUT", `"from"`},
		{"null for a non-null variable", "GET", "/operations/Count?wg_variables=" + url.QueryEscape(`{"from":null}`), 400, "BAD_USER_INPUT", "null"},
		{"missing required variable", "GET", "/operations/CountReq?wg_sse", 400, "BAD_USER_INPUT", `"from"`},
		{"unknown variable", "GET", "/operations/Count?frm=3", 400, "BAD_USER_INPUT", `"frm"`},
		{"unknown variable in wg_variables", "GET", "/operations/Sub?wg_variables=" + url.QueryEscape(`{"x":1}`), 400, "BAD_USER_INPUT", `"x"`},
		{"mixed variable styles", "GET", "/operations/Count?wg_variables=" + url.QueryEscape(`{"from":1}`) + "&from=1", 400, "BAD_USER_INPUT", "either"},
		{"scalar variable repeated", "GET", "/operations/Count?from=1&from=2", 400, "BAD_USER_INPUT", "2 times"},
		{"list element of the wrong type", "GET", "/operations/chat/Rooms?rooms=" + url.QueryEscape(`["a",2]`), 400, "BAD_USER_INPUT", `"rooms[1]"`},
		{"input object not JSON", "GET", "/operations/Filter?filter=rooms", 400, "BAD_USER_INPUT", "MessageFilter"},
		{"input object with an unknown field", "GET", "/operations/Filter?filter=" + url.QueryEscape(`{"roomz":["a"]}`), 400, "BAD_USER_INPUT", `"roomz"`},
		{"input object field of the wrong type", "GET", "/operations/Filter?wg_variables=" + url.QueryEscape(`{"filter":{"minLength":"long"}}`), 400, "BAD_USER_INPUT", `"filter.minLength"`},
	}
	if len(tests) < 20 {
		t.Fatal("the table should hold at least 20 bad requests")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := g.get(t, tt.method, tt.path)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d; body %q", resp.StatusCode, tt.status, body)
			}
			if tt.status == 405 && resp.Header.Get("Allow") != "GET" {
				t.Errorf("Allow = %q, want GET", resp.Header.Get("Allow"))
			}
			if tt.method == "HEAD" {
				return // no body to read
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			msg, code := errorOf(t, body)
			if code != tt.code {
				t.Errorf("code %q, want %q (message %q)", code, tt.code, msg)
			}
			if !strings.Contains(msg, tt.mentions) {
				t.Errorf("message %q does not mention %s", msg, tt.mentions)
			}
		})
	}
	// Nothing was started for any of them.
	if got := g.up.Received(); len(got) != 0 {
		t.Errorf("the upstream received %v", got)
	}
	if s := g.h.Stats(); s != (gqlpush.Stats{}) {
		t.Errorf("handler holds %+v", s)
	}
}

func TestVariablesReachUpstream(t *testing.T) {
	g := newGateway(t, nil)
	tests := []struct {
		name string
		path string
		want string // variables the upstream received
	}{
		{"default applied", "/operations/Count?wg_sse", `{"from":3}`},
		{"parameter coerced", "/operations/Count?wg_sse&from=7", `{"from":7}`},
		{"wg_variables", "/operations/Count?wg_sse&wg_variables=" + url.QueryEscape(`{"from":7.0}`), `{"from":7}`},
		{"repeated parameter is a list", "/operations/chat/Rooms?wg_sse&rooms=a&rooms=b", `{"rooms":["a","b"]}`},
		{"one value for a list", "/operations/chat/Rooms?wg_sse&rooms=a", `{"rooms":["a"]}`},
		{"JSON list parameter", "/operations/chat/Rooms?wg_sse&rooms=" + url.QueryEscape(`["a","b"]`), `{"rooms":["a","b"]}`},
		{"input object, default field filled", "/operations/Filter?wg_sse&filter=" + url.QueryEscape(`{"rooms":["x"]}`), `{"filter":{"minLength":0,"rooms":["x"]}}`},
		{"nullable left out", "/operations/Room?wg_sse", ``},
		{"explicit null", "/operations/Room?wg_sse&wg_variables=" + url.QueryEscape(`{"room":null}`), `{"room":null}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := g.up.WaitMatches(waitCtx(t), 0, isType("subscribe"))
			c := g.open(t, tt.path)
			subs, err := g.up.WaitMatches(waitCtx(t), len(before)+1, isType("subscribe"))
			if err != nil {
				t.Fatalf("no subscribe: %v", err)
			}
			if got := string(subs[len(before)].Variables()); got != tt.want {
				t.Errorf("upstream variables %s, want %s", got, tt.want)
			}
			c.leave()
			g.waitIdle(t)
		})
	}
}
