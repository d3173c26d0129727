package gqlpush

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/parser"
)

// directiveNATSSubscribe names, on a subscription field of a NATS upstream's
// schema, the subjects whose messages are its results, and the JetStream
// stream that holds them, if any. gqlpush declares it; schemas only use it:
//
//	orderUpdated(id: ID!): Order! @natsSubscribe(subjects: ["orders.{{ args.id }}.updated"], stream: "ORDERS")
const directiveNATSSubscribe = "natsSubscribe"

// natsSubscribeSDL declares the directive, appended to a NATS upstream's
// schema (appended, so that the positions of the schema's own lines stay
// those of its file).
const natsSubscribeSDL = "\ndirective @natsSubscribe(subjects: [String!]!, stream: String) on FIELD_DEFINITION\n"

// A natsField is what @natsSubscribe says of one subscription field.
type natsField struct {
	subjects []subjectTemplate
	stream   string // "" for core NATS
}

// A subjectTemplate is a subject with {{ args.NAME }} in it: literal parts
// and, between them, the field arguments whose values fill them in.
type subjectTemplate struct {
	text  string   // as written, for messages
	parts []string // len(args)+1 literals
	args  []string // argument names
}

// templateArg matches {{ args.NAME }}, spaces optional.
var templateArg = regexp.MustCompile(`\{\{\s*args\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}`)

// parseNATSFields reads @natsSubscribe on every subscription field of a
// NATS upstream's schema: each must have it, with subjects whose templates
// name arguments of the field. Errors name schema:line:col.
func parseNATSFields(types *ast.Schema) (map[string]*natsField, error) {
	out := map[string]*natsField{}
	for _, f := range types.Subscription.Fields {
		if strings.HasPrefix(f.Name, "__") {
			continue
		}
		fail := func(pos *ast.Position, format string, args ...any) error {
			line, col := 0, 0
			if pos != nil {
				line, col = pos.Line, pos.Column
			}
			return fmt.Errorf("schema:%d:%d: %s", line, col, fmt.Sprintf(format, args...))
		}
		d := f.Directives.ForName(directiveNATSSubscribe)
		if d == nil {
			return nil, fail(f.Position, "subscription field %s of a NATS upstream has no @natsSubscribe(subjects: [...]): gqlpush cannot tell which subjects feed it", f.Name)
		}
		nf := &natsField{}
		if a := d.Arguments.ForName("stream"); a != nil && a.Value.Kind == ast.StringValue {
			nf.stream = a.Value.Raw
			if !validStreamName(nf.stream) {
				return nil, fail(a.Value.Position, "@natsSubscribe: stream %q is not a JetStream stream name", clip(nf.stream))
			}
		}
		subjects := d.Arguments.ForName("subjects")
		if subjects == nil || len(subjects.Value.Children) == 0 {
			return nil, fail(d.Position, "@natsSubscribe on %s names no subjects", f.Name)
		}
		for _, c := range subjects.Value.Children {
			st, err := parseSubjectTemplate(c.Value.Raw, f.Arguments)
			if err != nil {
				return nil, fail(c.Value.Position, "@natsSubscribe on %s: %v", f.Name, err)
			}
			nf.subjects = append(nf.subjects, st)
		}
		out[f.Name] = nf
	}
	return out, nil
}

// validStreamName reports a name JetStream takes for a stream: no
// whitespace, dots, wildcards or path separators.
func validStreamName(s string) bool {
	return s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune(".*>/\\", r)
	})
}

// parseSubjectTemplate reads one subject of @natsSubscribe. Its literal
// parts may hold wildcards (orders.*.updated, orders.>); {{ args.NAME }}
// must name an argument of the field.
func parseSubjectTemplate(text string, args ast.ArgumentDefinitionList) (subjectTemplate, error) {
	st := subjectTemplate{text: text}
	rest := text
	for {
		loc := templateArg.FindStringSubmatchIndex(rest)
		if loc == nil {
			st.parts = append(st.parts, rest)
			break
		}
		name := rest[loc[2]:loc[3]]
		if args.ForName(name) == nil {
			return st, fmt.Errorf("subject %q: the field has no argument %q", clip(text), name)
		}
		st.parts = append(st.parts, rest[:loc[0]])
		st.args = append(st.args, name)
		rest = rest[loc[1]:]
	}
	whole := strings.Join(st.parts, "x")
	if strings.Contains(whole, "{{") || strings.Contains(whole, "}}") {
		return st, fmt.Errorf("subject %q: a template is written {{ args.NAME }}", clip(text))
	}
	if whole == "" || strings.ContainsFunc(whole, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return st, fmt.Errorf("subject %q is empty or holds white space", clip(text))
	}
	for i, tok := range strings.Split(whole, ".") {
		if tok == "" {
			return st, fmt.Errorf("subject %q has an empty token", clip(text))
		}
		if tok == ">" && i != strings.Count(whole, ".") {
			return st, fmt.Errorf("subject %q: > must be its last token", clip(text))
		}
	}
	return st, nil
}

// A natsBinding is a natsField as one operation uses it: where each
// templated argument's value comes from.
type natsBinding struct {
	// raw: the stream holds results as they are, and the ends and markers
	// of a cluster's owners (cluster.go), rather than payloads to complete.
	raw      bool
	observer *Observer // raw: told of each result's lag
	field    *natsField
	complete *completer            // a message's payload into a result
	name     string                // the field's name upstream
	sources  map[string]argSource  // by argument name
	defaults map[string]*ast.Value // the schema's defaults of the arguments
}

// An argSource is where an argument's value comes from in an operation: a
// literal written in it, or a variable.
type argSource struct {
	literal  *ast.Value // nil for a variable
	variable string
}

// bindNATS checks that the operation gives every argument the field's
// subjects need, and that literals render safely.
func bindNATS(op *Operation, nf *natsField, name string, def *ast.FieldDefinition) (*natsBinding, error) {
	b := &natsBinding{field: nf, name: name, sources: map[string]argSource{}, defaults: map[string]*ast.Value{}}
	fail := func(pos *ast.Position, format string, args ...any) error {
		e := &OperationError{File: op.file, Message: fmt.Sprintf(format, args...)}
		if pos != nil {
			e.Line, e.Column = pos.Line, pos.Column
		}
		return e
	}
	for _, st := range nf.subjects {
		for _, arg := range st.args {
			if _, seen := b.sources[arg]; seen {
				continue
			}
			if a := op.rootField.Arguments.ForName(arg); a != nil {
				if a.Value.Kind == ast.Variable {
					b.sources[arg] = argSource{variable: a.Value.Raw}
					continue
				}
				if _, err := subjectToken(literalJSON(a.Value)); err != nil {
					return nil, fail(a.Value.Position, "argument %s renders the NATS subject %q: %v", arg, clip(st.text), err)
				}
				b.sources[arg] = argSource{literal: a.Value}
				continue
			}
			if ad := def.Arguments.ForName(arg); ad != nil && ad.DefaultValue != nil {
				b.defaults[arg] = ad.DefaultValue
				continue
			}
			return nil, fail(op.rootField.Position, "argument %s is not given, and the NATS subject %q needs it", arg, clip(st.text))
		}
	}
	return b, nil
}

// subjects renders the binding's subjects with the request's coerced
// variables. A value that would change a subject's shape (empty, or holding
// ".", "*", ">", white space or a control character) is an *inputError
// naming the variable: a caller must not choose what it subscribes to
// beyond its own token.
func (b *natsBinding) subjects(vars map[string]any) ([]string, error) {
	out := make([]string, 0, len(b.field.subjects))
	for _, st := range b.field.subjects {
		var s strings.Builder
		for i, part := range st.parts {
			s.WriteString(part)
			if i == len(st.args) {
				break
			}
			arg := st.args[i]
			var (
				v    any
				from = "argument " + arg
			)
			switch src, ok := b.sources[arg]; {
			case ok && src.literal != nil:
				v = literalJSON(src.literal)
			case ok:
				v = vars[src.variable]
				from = "variable " + quoteShort(src.variable)
			default:
				v = literalJSON(b.defaults[arg])
			}
			tok, err := subjectToken(v)
			if err != nil {
				return nil, inputErrorf("%s cannot stand in a NATS subject: %v", from, err)
			}
			s.WriteString(tok)
		}
		out = append(out, s.String())
	}
	return out, nil
}

// subjectToken renders a value as one token of a subject: a string as it
// is, a number or a boolean in its canonical JSON text.
func subjectToken(v any) (string, error) {
	var tok string
	switch v := v.(type) {
	case string:
		tok = v
	case json.Number:
		tok = v.String()
	case int64, float64: // as the request's variables hold numbers
		b, err := json.Marshal(v)
		if err != nil {
			return "", fmt.Errorf("it is not a finite number")
		}
		tok = string(b)
	case bool:
		tok = strconv.FormatBool(v)
	case nil:
		return "", fmt.Errorf("it is null")
	default:
		return "", fmt.Errorf("it is not a scalar")
	}
	if tok == "" {
		return "", fmt.Errorf("it is empty")
	}
	if i := strings.IndexFunc(tok, func(r rune) bool {
		return r == '.' || r == '*' || r == '>' || unicode.IsSpace(r) || unicode.IsControl(r)
	}); i >= 0 {
		r := []rune(tok[i:])[0]
		return "", fmt.Errorf("it holds %q, which subjects reserve", r)
	}
	return tok, nil
}

// usesNATSDirective finds @natsSubscribe in the SDL of an upstream that is
// not a NATS upstream, where it means nothing: its position, or nil.
func usesNATSDirective(sdl string) *ast.Position {
	doc, err := parser.ParseSchema(&ast.Source{Name: "schema", Input: sdl})
	if err != nil {
		return nil // the schema's own parse reports it
	}
	for _, defs := range []ast.DefinitionList{doc.Definitions, doc.Extensions} {
		for _, d := range defs {
			for _, f := range d.Fields {
				if dir := f.Directives.ForName(directiveNATSSubscribe); dir != nil {
					return dir.Position
				}
			}
		}
	}
	return nil
}
