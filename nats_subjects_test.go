package gqlpush

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"
)

// Every value renders as one token of a subject, or not at all.
func TestSubjectToken(t *testing.T) {
	for _, tt := range []struct {
		v    any
		want string
	}{
		{"7", "7"},
		{"ORD-7_x", "ORD-7_x"},
		{"é", "é"},
		{json.Number("7"), "7"},
		{json.Number("-15"), "-15"},
		{int64(7), "7"}, // as a request's variables hold them
		{int64(-15), "-15"},
		{float64(2), "2"},
		{float64(1e21), "1e+21"},
		{float64(-1e-7), "-1e-7"},
		{true, "true"},
		{false, "false"},
	} {
		if got, err := subjectToken(tt.v); err != nil || got != tt.want {
			t.Errorf("%#v: %q, %v; want %q", tt.v, got, err, tt.want)
		}
	}
	for _, tt := range []struct {
		v    any
		want string
	}{
		{"", "empty"},
		{nil, "null"},
		{[]any{"a"}, "not a scalar"},
		{map[string]any{}, "not a scalar"},
		{"a.b", `'.'`},
		{"*", `'*'`},
		{">", `'>'`},
		{"a b", `' '`},
		{"a\tb", `'\t'`},
		{"a\nb", `'\n'`},
		{"a\rb", `'\r'`},
		{"a\x00b", `'\x00'`},
		{"a\x7fb", `'\x7f'`},
		{"a\u00a0b", `'\u00a0'`},
		{"a\u2028b", `'\u2028'`},
		{json.Number("1.5"), `'.'`}, // a Float with a fraction is two tokens
		{float64(1.5), `'.'`},
	} {
		if got, err := subjectToken(tt.v); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%#v: %q, %v; want an error with %s", tt.v, got, err, tt.want)
		}
	}
}

// Literal, variable and default arguments fill their templates, each
// subject in its order.
func TestBindingSubjects(t *testing.T) {
	types, err := gqlparser.LoadSchema(&ast.Source{Name: "schema", Input: `
type Query { x: Int }
type Subscription {
  t(a: ID!, n: Int!, b: Boolean = true): Int @natsSubscribe(subjects: ["x.{{args.a}}.{{ args.n }}.{{ args.b }}", "y.*.{{ args.a }}", "z.>"])
}` + natsSubscribeSDL})
	if err != nil {
		t.Fatal(err)
	}
	fields, err := parseNATSFields(types)
	if err != nil {
		t.Fatal(err)
	}
	op, err := ParseOperation("Op", `subscription ($n: Int!) { up_t(a: "A", n: $n) }`)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bindNATS(op, fields["t"], "t", types.Subscription.Fields.ForName("t"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.subjects(map[string]any{"n": json.Number("42")})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"x.A.42.true", "y.*.A", "z.>"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("got %q, want %q", got, want)
	}
	if _, err := b.subjects(map[string]any{"n": nil}); err == nil || !strings.Contains(err.Error(), `variable "n"`) {
		t.Fatalf("a null: %v", err)
	}
}
