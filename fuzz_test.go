package gqlpush

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"
)

// FuzzSSEFraming: whatever an upstream sends as a result, the frame is one
// SSE event (no stray line breaks), and its payload is compact JSON holding
// exactly the result's data and errors.
func FuzzSSEFraming(f *testing.F) {
	for _, s := range []string{
		`{"data":{"a":1}}`,
		`{"data":null,"errors":[{"message":"x"}]}`,
		`{"errors":[{"message":"line\nbreak"}],"extensions":{"t":1}}`,
		"{\n  \"data\": {\n    \"a\": \"b\\r\\n\"\n  }\n}",
		`{"data":{"s":"\u2028 \u0000"}}`,
		`{"extensions":{}}`,
		`[]`,
		`{"data":`,
		`{"data":1,"data":2}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) { // what the reader checks before it frames
			return
		}
		ev, err := frameEvent(raw, "0123456789abcdef", 42)
		if err != nil {
			return
		}
		idLine := "id: 0123456789abcdef.42\ndata: "
		if !bytes.HasPrefix(ev.sse, []byte(idLine)) || !bytes.HasSuffix(ev.sse, []byte("\n\n")) {
			t.Fatalf("frame %q", ev.sse)
		}
		body := ev.sse[len(idLine) : len(ev.sse)-2]
		if bytes.ContainsAny(body, "\r\n") {
			t.Fatalf("line break inside the frame %q", ev.sse)
		}
		if !bytes.Equal(body, ev.json) || !bytes.Equal(ev.plain, append(bytes.Clone(ev.json), "\n\n"...)) {
			t.Fatalf("frames disagree: %q %q %q", ev.sse, ev.plain, ev.json)
		}
		want, err := referenceResult(raw)
		if err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", raw, err)
		}
		if !bytes.Equal(ev.json, want) {
			t.Fatalf("%q framed as %s, want %s", raw, ev.json, want)
		}
	})
}

// referenceResult is the framing's contract written with encoding/json:
// data then errors (null errors dropped), each compacted.
func referenceResult(raw []byte) ([]byte, error) {
	var r map[string]json.RawMessage
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteByte('{')
	data, hasData := r["data"]
	if hasData {
		b.WriteString(`"data":`)
		json.Compact(&b, data)
	}
	if errs, ok := r["errors"]; ok && string(errs) != "null" {
		if hasData {
			b.WriteByte(',')
		}
		b.WriteString(`"errors":`)
		json.Compact(&b, errs)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

const fuzzOperation = `subscription (
  $i: Int, $f: Float, $s: String!, $b: Boolean = true, $id: ID,
  $list: [Int!], $nested: [[String]], $in: MessageFilter, $any: JSON
) { gql_field(i: $i, f: $f, s: $s, b: $b, id: $id, list: $list, nested: $nested, in: $in, any: $any) }`

const fuzzSchema = `
scalar JSON
input MessageFilter { rooms: [String!], minLength: Int = 0, kind: Kind }
enum Kind { TEXT SYSTEM }
type Query { a: Int }
type Subscription { field(i: Int, f: Float, s: String!, b: Boolean, id: ID, list: [Int!], nested: [[String]], in: MessageFilter, any: JSON): Int }
`

func fuzzEndpoint(f *testing.F) *endpoint {
	op, err := ParseOperation("F", fuzzOperation)
	if err != nil {
		f.Fatal(err)
	}
	h, err := NewHandler(Config{
		Operations: []*Operation{op},
		Upstreams:  []Upstream{{Name: "gql", URL: "ws://127.0.0.1:1/", Schema: fuzzSchema}},
	})
	if err != nil {
		f.Fatal(err)
	}
	return h.endpoints["F"]
}

// FuzzCoerceVariables: any query string either fails with a client error or
// gives canonical variables: coercing them again, as wg_variables, gives the
// same bytes.
func FuzzCoerceVariables(f *testing.F) {
	ep := fuzzEndpoint(f)
	for _, s := range []string{
		"s=x",
		"s=x&i=3&f=1.5&b=false&id=7",
		"s=&list=1&list=2",
		"s=x&list=[1,2]",
		"s=x&nested=[[\"a\"],null]",
		`s=x&in={"rooms":["a"],"kind":"TEXT"}`,
		`s=x&in={"kind":"NOPE"}`,
		`s=x&any={"deep":[1,2.0,1e2]}`,
		"s=x&any=plain text",
		"s=x&i=99999999999",
		"s=x&f=NaN",
		"s=x&f=1e400",
		"wg_variables=" + url.QueryEscape(`{"s":"x","i":1.0,"any":[1,{"a":null}]}`),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, query string) {
		vals, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		var fromJSON map[string]any
		params := map[string][]string{}
		for k, v := range vals {
			if k == "wg_variables" {
				obj, err := decodeJSON(v[0])
				m, ok := obj.(map[string]any)
				if err != nil || !ok {
					return
				}
				fromJSON = m
				continue
			}
			params[k] = v
		}
		if fromJSON != nil {
			params = nil
		}
		vars, err := ep.coerceVariables(fromJSON, params, nil)
		if err != nil {
			var ie *inputError
			if !errors.As(err, &ie) {
				t.Fatalf("not a client error: %v", err)
			}
			return
		}
		b, err := encodeVariables(vars)
		if err != nil {
			t.Fatalf("encode %#v: %v", vars, err)
		}
		again, err := decodeJSON(string(b))
		if err != nil {
			t.Fatalf("canonical variables %s do not decode: %v", b, err)
		}
		vars2, err := ep.coerceVariables(again.(map[string]any), nil, nil)
		if err != nil {
			t.Fatalf("canonical variables %s do not coerce: %v", b, err)
		}
		b2, _ := encodeVariables(vars2)
		if !bytes.Equal(b, b2) {
			t.Fatalf("not canonical: %s became %s", b, b2)
		}
		if _, ok := vars["s"].(string); !ok {
			t.Fatalf("required $s missing from %s", b)
		}
	})
}

// FuzzDecodeMessage: the upstream decoder takes any bytes without panicking,
// and what it accepts survives a round trip.
func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"connection_ack"}`,
		`{"type":"next","id":"1","payload":{"data":{"a":1}}}`,
		`{"type":"error","id":"1","payload":[{"message":"x"}]}`,
		`{"type":"complete","id":"1"}`,
		`{"type":"ka"}`,
		`{"type":"data","id":"2","payload":null}`,
		`{"type":"ping","payload":{"x":1}}`,
		`{"type":"next"}`,
		`{"type":1}`,
		`{"id":"1"}`,
		`[]`,
		``,
		`{"type":"next","id":"1","payload":{"data":1},"extra":true}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fast, ferr := decodeMessage(b)
		slow, serr := referenceDecode(b)
		if (ferr == nil) != (serr == nil) {
			t.Fatalf("%q: fast decoder says %v, encoding/json says %v", b, ferr, serr)
		}
		if ferr != nil {
			return
		}
		if fast.Type != slow.Type || fast.ID != slow.ID || !bytes.Equal(fast.Payload, slow.Payload) {
			t.Fatalf("%q: fast %+v, encoding/json %+v", b, fast, slow)
		}
		if fast.Type == "" {
			t.Fatal("accepted a message without a type")
		}
		out, err := encodeMessage(fast)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", fast, err)
		}
		m2, err := decodeMessage(out)
		if err != nil || m2.Type != fast.Type || m2.ID != fast.ID || !jsonEqual(m2.Payload, fast.Payload) {
			t.Fatalf("round trip: %+v → %s → %+v (%v)", fast, out, m2, err)
		}
	})
}

// referenceDecode is the decoder's contract written with encoding/json: an
// object; "type" and "id" strings or null, matched exactly; the payload as
// written, null meaning none; a type; an id on the messages that need one.
func referenceDecode(b []byte) (message, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil || raw == nil {
		return message{}, errNotObject
	}
	var m message
	for key, dst := range map[string]*string{"type": &m.Type, "id": &m.ID} {
		if v, ok := raw[key]; ok && string(v) != "null" {
			if err := json.Unmarshal(v, dst); err != nil {
				return message{}, err
			}
		}
	}
	if p, ok := raw["payload"]; ok && string(p) != "null" {
		m.Payload = p
	}
	if m.Type == "" {
		return message{}, errNoType
	}
	switch m.Type {
	case msgNext, msgLegacyData, msgError, msgComplete:
		if m.ID == "" {
			return message{}, errors.New("no id")
		}
	}
	return m, nil
}

func jsonEqual(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return bytes.Equal(ja, jb)
}

// FuzzLookupClaim: a claim path finds the value a plain walk of its dotted
// parts finds, when there is one, and never panics.
func FuzzLookupClaim(f *testing.F) {
	for _, s := range []string{
		`{"sub":"u"}` + "\x00sub",
		`{"org":{"id":7}}` + "\x00org.id",
		`{"https://x.test/roles":["a"]}` + "\x00https://x.test/roles",
		`{"a.b":{"c":1},"a":{"b":{"c":2}}}` + "\x00a.b.c",
		`{"a":[1,2]}` + "\x00a.0",
		`{}` + "\x00.",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		doc, path, ok := strings.Cut(in, "\x00")
		if !ok {
			return
		}
		var claims map[string]any
		if json.Unmarshal([]byte(doc), &claims) != nil {
			return
		}
		got := lookupClaim(claims, path)
		var walk any = claims
		for _, part := range strings.Split(path, ".") {
			m, ok := walk.(map[string]any)
			if !ok {
				walk = nil
				break
			}
			walk = m[part]
		}
		if got == nil && walk != nil {
			t.Fatalf("path %q: nothing found, a plain walk finds %v", path, walk)
		}
	})
}
