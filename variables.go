package gqlpush

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/vektah/gqlparser/v2/ast"
)

// A variableDef is one variable an operation declares.
type variableDef struct {
	name       string
	typ        *ast.Type
	pos        *ast.Position
	defaultLit *ast.Value // as written, coerced when the operation is bound
	claim      string     // @fromClaim(name: ...), "" when the client supplies it
}

func newVariableDef(vd *ast.VariableDefinition, fail func(*ast.Position, string, ...any) error) (*variableDef, error) {
	v := &variableDef{name: vd.Variable, typ: vd.Type, pos: vd.Position, defaultLit: vd.DefaultValue}
	if strings.HasPrefix(v.name, "wg_") {
		return nil, fail(vd.Position, "variable $%s: the wg_ prefix is reserved for request flags", v.name)
	}
	for _, d := range vd.Directives {
		switch d.Name {
		case directiveFromClaim:
			claim, err := parseFromClaim(d, fail)
			if err != nil {
				return nil, err
			}
			if v.claim != "" {
				return nil, fail(d.Position, "@%s given twice on $%s", d.Name, v.name)
			}
			v.claim = claim
		default:
			if isOwnDirective(d.Name) {
				return nil, fail(d.Position, "@%s is not allowed on a variable definition", d.Name)
			}
		}
	}
	return v, nil
}

// An inputError is a problem with what the client sent: a 400 whose message
// is shown to the client as is.
type inputError struct{ msg string }

func (e *inputError) Error() string { return e.msg }

func inputErrorf(format string, args ...any) error {
	return &inputError{msg: fmt.Sprintf(format, args...)}
}

// A coercer turns client input into variable values of the declared types, as
// the GraphQL spec's input coercion does. With the upstream's schema it knows
// enums and input objects; without one, values of other named types pass as
// the client gave them, with their numbers normalised.
//
// Values come out as int64 (Int), float64 (Float), string (String, ID, enum
// values), bool, nil, []any and map[string]any, so that encoding them gives one
// canonical form: equal inputs give equal bytes.
type coercer struct {
	schema *ast.Schema // nil when the upstream's schema is unknown
}

func (c coercer) typeKind(name string) (*ast.Definition, bool) {
	if c.schema == nil {
		return nil, false
	}
	def, ok := c.schema.Types[name]
	return def, ok
}

// fromJSON coerces a value decoded from JSON with UseNumber.
func (c coercer) fromJSON(t *ast.Type, v any, path string) (any, error) {
	if v == nil {
		if t.NonNull {
			return nil, inputErrorf("variable %q of type %s must not be null", path, t.String())
		}
		return nil, nil
	}
	if t.Elem != nil {
		list, ok := v.([]any)
		if !ok {
			// Input coercion accepts one value where a list is expected.
			one, err := c.fromJSON(t.Elem, v, path+"[0]")
			if err != nil {
				return nil, err
			}
			return []any{one}, nil
		}
		out := make([]any, len(list))
		for i, e := range list {
			ce, err := c.fromJSON(t.Elem, e, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			out[i] = ce
		}
		return out, nil
	}
	switch t.NamedType {
	case "Int":
		if n, ok := v.(json.Number); ok {
			if i, ok := toInt32(n); ok {
				return i, nil
			}
		}
		return nil, expected(path, "Int", v)
	case "Float":
		if n, ok := v.(json.Number); ok {
			if f, err := strconv.ParseFloat(n.String(), 64); err == nil && !math.IsInf(f, 0) {
				return f, nil
			}
		}
		return nil, expected(path, "Float", v)
	case "String":
		if s, ok := v.(string); ok {
			return s, nil
		}
		return nil, expected(path, "String", v)
	case "Boolean":
		if b, ok := v.(bool); ok {
			return b, nil
		}
		return nil, expected(path, "Boolean", v)
	case "ID":
		switch v := v.(type) {
		case string:
			return v, nil
		case json.Number:
			if _, err := strconv.ParseInt(v.String(), 10, 64); err == nil {
				return v.String(), nil
			}
		}
		return nil, expected(path, "ID", v)
	}
	def, known := c.typeKind(t.NamedType)
	if !known {
		return normalizeJSON(v), nil
	}
	switch def.Kind {
	case ast.Enum:
		if s, ok := v.(string); ok && def.EnumValues.ForName(s) != nil {
			return s, nil
		}
		return nil, inputErrorf("variable %q expects a value of enum %s (%s), got %s", path, def.Name, enumNames(def), describe(v))
	case ast.InputObject:
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, expected(path, def.Name, v)
		}
		return c.inputObject(def, obj, path)
	default:
		return normalizeJSON(v), nil
	}
}

func (c coercer) inputObject(def *ast.Definition, obj map[string]any, path string) (any, error) {
	for k := range obj {
		if def.Fields.ForName(k) == nil {
			return nil, inputErrorf("variable %q: input %s has no field %s", path, def.Name, quoteShort(k))
		}
	}
	out := make(map[string]any, len(def.Fields))
	for _, f := range def.Fields {
		fv, present := obj[f.Name]
		if !present {
			if f.DefaultValue != nil {
				dv, err := c.fromJSON(f.Type, literalJSON(f.DefaultValue), path+"."+f.Name)
				if err != nil {
					return nil, err
				}
				out[f.Name] = dv
				continue
			}
			if f.Type.NonNull {
				return nil, inputErrorf("variable %q: field %q of type %s is required", path, f.Name, f.Type.String())
			}
			continue
		}
		cv, err := c.fromJSON(f.Type, fv, path+"."+f.Name)
		if err != nil {
			return nil, err
		}
		out[f.Name] = cv
	}
	return out, nil
}

// fromParams coerces the values of one query parameter (?id=3&tags=a&tags=b).
func (c coercer) fromParams(t *ast.Type, vals []string, path string) (any, error) {
	if t.Elem != nil {
		if len(vals) == 1 && strings.HasPrefix(strings.TrimSpace(vals[0]), "[") {
			if v, err := decodeJSON(vals[0]); err == nil {
				return c.fromJSON(t, v, path)
			}
		}
		out := make([]any, len(vals))
		for i, s := range vals {
			e, err := c.fromParams(t.Elem, []string{s}, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			out[i] = e
		}
		return out, nil
	}
	if len(vals) != 1 {
		return nil, inputErrorf("variable %q of type %s given %d times", path, t.String(), len(vals))
	}
	s := vals[0]
	if !utf8.ValidString(s) {
		return nil, inputErrorf("variable %q is not valid UTF-8", path)
	}
	switch t.NamedType {
	case "Int":
		if isDecimalInteger(s) {
			if i, err := strconv.ParseInt(s, 10, 32); err == nil {
				return i, nil
			}
		}
		return nil, expected(path, "Int", s)
	case "Float":
		if isJSONNumber(s) {
			if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsInf(f, 0) {
				return f, nil
			}
		}
		return nil, expected(path, "Float", s)
	case "Boolean":
		switch s {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
		return nil, expected(path, "Boolean", s)
	case "String", "ID":
		return s, nil
	}
	def, known := c.typeKind(t.NamedType)
	if known {
		switch def.Kind {
		case ast.Enum:
			return c.fromJSON(t, s, path)
		case ast.InputObject:
			v, err := decodeJSON(s)
			if err != nil {
				return nil, inputErrorf("variable %q expects a JSON object of input %s: %v", path, def.Name, err)
			}
			return c.fromJSON(t, v, path)
		}
	}
	// An enum or custom scalar whose kind is unknown, or a custom scalar:
	// JSON when the text is JSON, else the text as a string.
	if v, err := decodeJSON(s); err == nil {
		return normalizeJSON(v), nil
	}
	return s, nil
}

// coerceVariables checks the client's values against the operation's
// declarations and returns the variables sent upstream, in canonical form.
func (e *endpoint) coerceVariables(fromJSON map[string]any, fromParams map[string][]string, p *Principal) (map[string]any, error) {
	for name := range fromJSON {
		if err := e.checkClientVariable(name); err != nil {
			return nil, err
		}
	}
	for name := range fromParams {
		if err := e.checkClientVariable(name); err != nil {
			return nil, err
		}
	}
	out := make(map[string]any, len(e.vars))
	for _, v := range e.vars {
		var (
			cv  any
			err error
		)
		if v.claim != "" {
			// From the verified token, never from the client.
			var claim any
			if p != nil {
				claim = lookupClaim(p.Claims, v.claim)
			}
			if claim == nil {
				return nil, inputErrorf("the token has no claim %q, which variable %q needs", v.claim, v.name)
			}
			cv, err = e.coerce.fromJSON(v.typ, claimJSON(claim), v.name)
		} else if raw, ok := fromJSON[v.name]; ok {
			cv, err = e.coerce.fromJSON(v.typ, raw, v.name)
		} else if vals, ok := fromParams[v.name]; ok {
			cv, err = e.coerce.fromParams(v.typ, vals, v.name)
		} else if d, ok := e.defaults[v.name]; ok {
			cv = d
		} else if v.typ.NonNull {
			err = inputErrorf("variable %q of type %s is required", v.name, v.typ.String())
		} else {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[v.name] = cv
	}
	return out, nil
}

func (e *endpoint) checkClientVariable(name string) error {
	v, ok := e.byName[name]
	if !ok {
		return inputErrorf("unknown variable %s: operation %s declares %s", quoteShort(name), e.op.name, declaredNames(e.vars))
	}
	if v.claim != "" {
		return inputErrorf("variable %q is set from the caller's token and cannot be given", name)
	}
	return nil
}

func declaredNames(vars []*variableDef) string {
	var names []string
	for _, v := range vars {
		if v.claim == "" {
			names = append(names, "$"+v.name)
		}
	}
	if len(names) == 0 {
		return "no variables"
	}
	return strings.Join(names, ", ")
}

// claimJSON gives a claim, whatever Go types an Authenticator used, the
// shape decodeJSON gives, so that the one coercion serves.
func claimJSON(v any) any {
	if _, ok := v.(json.Number); ok {
		return v
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	out, err := decodeJSON(string(b))
	if err != nil {
		return nil
	}
	return out
}

// encodeVariables renders variables canonically: keys sorted (encoding/json
// sorts map keys), numbers in their shortest form, no HTML escaping.
func encodeVariables(vars map[string]any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(vars); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// decodeJSON decodes one JSON value, keeping numbers as json.Number, and
// rejects trailing data.
func decodeJSON(s string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data after the JSON value")
	}
	return v, nil
}

// normalizeJSON gives numbers of unknown type one form, so that 1, 1.0 and
// 1e0 make the same variables: integers that fit int64 as int64, other finite
// numbers as float64, and anything else as written.
func normalizeJSON(v any) any {
	switch v := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(v.String(), 10, 64); err == nil {
			return i
		}
		if f, err := strconv.ParseFloat(v.String(), 64); err == nil && !math.IsInf(f, 0) {
			if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
				return int64(f)
			}
			return f
		}
		return v
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = normalizeJSON(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = normalizeJSON(e)
		}
		return out
	}
	return v
}

// literalJSON turns a constant GraphQL literal (a default value) into the
// shape decodeJSON gives, so one coercion serves both.
func literalJSON(v *ast.Value) any {
	switch v.Kind {
	case ast.IntValue, ast.FloatValue:
		return json.Number(v.Raw)
	case ast.StringValue, ast.BlockValue, ast.EnumValue:
		return v.Raw
	case ast.BooleanValue:
		return v.Raw == "true"
	case ast.ListValue:
		out := make([]any, len(v.Children))
		for i, c := range v.Children {
			out[i] = literalJSON(c.Value)
		}
		return out
	case ast.ObjectValue:
		out := make(map[string]any, len(v.Children))
		for _, c := range v.Children {
			out[c.Name] = literalJSON(c.Value)
		}
		return out
	}
	return nil // NullValue; a Variable cannot appear in a constant
}

func toInt32(n json.Number) (int64, bool) {
	if i, err := strconv.ParseInt(n.String(), 10, 32); err == nil {
		return i, true
	}
	f, err := strconv.ParseFloat(n.String(), 64)
	if err != nil || f != math.Trunc(f) || f < math.MinInt32 || f > math.MaxInt32 {
		return 0, false
	}
	return int64(f), true
}

func isDecimalInteger(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isJSONNumber(s string) bool {
	if s == "" || !(s[0] == '-' || (s[0] >= '0' && s[0] <= '9')) {
		return false
	}
	return json.Valid([]byte(s))
}

func expected(path, typ string, got any) error {
	return inputErrorf("variable %q expects %s, got %s", path, typ, describe(got))
}

func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return quoteShort(v)
	case json.Number:
		return "number " + v.String()
	case bool:
		return strconv.FormatBool(v)
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// quoteShort quotes a client's name or value in an error message: its first
// 64 bytes at most, so that a client cannot make a response or a log line as
// long as its request.
func quoteShort(s string) string {
	return strconv.Quote(clipTo(s, 64))
}

func enumNames(def *ast.Definition) string {
	names := make([]string, 0, len(def.EnumValues))
	for _, v := range def.EnumValues {
		names = append(names, v.Name)
	}
	return strings.Join(names, ", ")
}
