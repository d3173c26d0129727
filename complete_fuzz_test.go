package gqlpush

import (
	"bytes"
	"encoding/json"
	"io"
	"reflect"
	"testing"
	"unicode/utf8"
)

// fuzzCompletionSelection selects a bit of everything from an Order.
const fuzzCompletionSelection = `{
  __typename id status state total count paid note placedAt meta
  customer { id name email vip }
  shipTo { street city }
  items { quantity note product { id title price tags } }
  tags scores
  discount { __typename ... on Coupon { code percent } ... on Product { id } }
  owner { id ... on Customer { name } ...P }
  again: customer @include(if: $more) { name t: __typename }
}`

// FuzzComplete: whatever a message holds, completion does not panic and
// gives a GraphQL result: valid UTF-8 JSON, "data" first, then, if present,
// "errors", a non-empty list of objects with a message and a path from the
// root field; a nullable root field's data is never null, a non-null one's
// is null only with errors; equal payloads give equal bytes.
func FuzzComplete(f *testing.F) {
	for _, s := range []string{
		benchCompletionPayload,
		`{"id":"o","status":"PENDING","items":[]}`,
		`{"id":"o","status":"PENDING","items":[{"quantity":1,"product":{"id":"p","title":"t","price":1}}],"again":1}`,
		`{"id":7,"status":"NOPE","items":{},"customer":[],"owner":{"__typename":"Product","title":"x","price":"1"}}`,
		`{"id":"o","status":"SHIPPED","items":[null],"discount":{"__typename":"Nope"},"owner":{"id":"c"}}`,
		`{"id":"\ud800","status":"SHIPPED","items":[],"note":"\u2028<&>\"","meta":{"k" : [1 , 2.50e1, "\u00e9"]}}`,
		"{\"id\":\"\xff\",\"status\":\"SHIPPED\",\"items\":[],\"note\":\"\xe2\x80\xa8\"}",
		`{"total":1e400,"count":2147483648,"scores":[1.0,-0,3e0,"4",null]}`,
		`{"\u0069d":"o","id":"p","status":"DELIVERED","items":[],"tags":["a",null]}`,
		`null`, `[]`, `"x"`, `1`, ``, ` `, `{`, `{"id":`, `nope`, `{"a":1}{}`, "\v{}",
		`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`,
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	schema := completionSchema(f)
	nonNull := mustCompleter(f, schema, `subscription($more: Boolean!) { shop_orderPlaced `+fuzzCompletionSelection+` } fragment P on Product { title price }`)
	nullable := mustCompleter(f, schema, `subscription($more: Boolean!) { o: orderUpdated(id: 1) `+fuzzCompletionSelection+` } fragment P on Product { title price }`)
	f.Fuzz(func(t *testing.T, payload []byte, more bool) {
		vars := map[string]any{"more": more}
		for _, c := range []*completer{nonNull, nullable} {
			got := c.complete(payload, vars)
			checkCompletionResult(t, payload, got, c.responseName(), c.typ.NonNull)
			if again := c.complete(payload, vars); !bytes.Equal(again, got) {
				t.Fatalf("%q completed as %s, then as %s", payload, got, again)
			}
		}
		// Custom scalars pass as they are: the same value, compact and
		// canonical; a string as encoding/json writes what it decodes.
		v := trimJSONSpace(payload)
		if !json.Valid(v) {
			return
		}
		out := appendCompact(nil, v, true)
		var compact bytes.Buffer
		if !utf8.Valid(out) || json.Compact(&compact, out) != nil || !bytes.Equal(compact.Bytes(), out) {
			t.Fatalf("%q made canonical as %q", v, out)
		}
		if !reflect.DeepEqual(decodeFuzzJSON(t, v), decodeFuzzJSON(t, out)) {
			t.Fatalf("%q made canonical as %q, another value", v, out)
		}
		if v[0] == '"' {
			if got, want := string(appendCanonicalString(nil, v)), referenceString(t, string(v)); got != want {
				t.Fatalf("string %q: got %q, want %q", v, got, want)
			}
		}
	})
}

func decodeFuzzJSON(t *testing.T, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%q: %v", b, err)
	}
	return v
}

// checkCompletionResult checks the shape of a result.
func checkCompletionResult(t *testing.T, payload, got []byte, root string, nonNull bool) {
	t.Helper()
	fail := func(why string) {
		t.Helper()
		t.Fatalf("%s\npayload %q\nresult  %s", why, payload, got)
	}
	if !json.Valid(got) || !utf8.Valid(got) {
		fail("not valid UTF-8 JSON")
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, got); err != nil || !bytes.Equal(compact.Bytes(), got) {
		fail("not compact")
	}
	dec := json.NewDecoder(bytes.NewReader(got))
	dec.UseNumber()
	if tok, _ := dec.Token(); tok != json.Delim('{') {
		fail("not an object")
	}
	if tok, _ := dec.Token(); tok != "data" {
		fail(`"data" is not first`)
	}
	var data any
	if err := dec.Decode(&data); err != nil {
		fail(err.Error())
	}
	hasErrors := false
	if dec.More() {
		if tok, _ := dec.Token(); tok != "errors" {
			fail(`a member other than "errors" after "data"`)
		}
		var errs []map[string]any
		if err := dec.Decode(&errs); err != nil || len(errs) == 0 {
			fail(`"errors" is not a non-empty list of objects`)
		}
		for _, e := range errs {
			msg, ok := e["message"].(string)
			path, _ := e["path"].([]any)
			if !ok || msg == "" || len(path) == 0 || path[0] != root || len(e) != 2 {
				fail("an error without a message and a path from the root field")
			}
			if len(msg) > 400 {
				fail("an error message too long")
			}
		}
		hasErrors = true
	}
	if tok, err := dec.Token(); tok != json.Delim('}') || err != nil {
		fail("more after errors")
	}
	if _, err := dec.Token(); err != io.EOF {
		fail("trailing data")
	}
	switch d := data.(type) {
	case nil:
		if !nonNull || !hasErrors {
			fail("data null without a non-null root in error")
		}
	case map[string]any:
		if _, ok := d[root]; !ok || len(d) != 1 {
			fail("data does not hold the root field alone")
		}
		if d[root] == nil && nonNull {
			fail("a non-null root field is null")
		}
	default:
		fail("data is neither an object nor null")
	}
}
