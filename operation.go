package gqlpush

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/formatter"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"github.com/vektah/gqlparser/v2/parser"
)

// OperationExt is the file name extension of operation files.
const OperationExt = ".graphql"

// An Operation is one persisted GraphQL subscription or query, the content
// of one `.graphql` file. Build it with [ParseOperation] or
// [LoadOperations]; it is immutable and safe to share.
type Operation struct {
	name   string // endpoint name: "chat/New"
	file   string // where it came from, for messages: "chat/New.graphql"
	source string

	query      bool                       // a query: served once, or live; else a subscription
	live       time.Duration              // a query's @live(pollingIntervalSeconds:); 0 for none
	opName     string                     // the name after `subscription` or `query`, may be empty
	rootField  *ast.Field                 // the first root field, as written: a subscription's only one
	rootFields []*ast.Field               // every root field, as written
	fragments  ast.FragmentDefinitionList // of the document, for completing results
	vars       []*variableDef             // declared variables, in order
	rules      accessRules                // from @auth, @rbac
}

// Name returns the endpoint name: the file path below the operations root,
// without the .graphql extension ("chat/New").
func (o *Operation) Name() string { return o.name }

// Source returns the operation's text as written.
func (o *Operation) Source() string { return o.source }

// IsQuery reports whether the operation is a query (served once, or as a
// live stream with wg_live) rather than a subscription.
func (o *Operation) IsQuery() bool { return o.query }

// An OperationError reports an operation that cannot be served, with the
// place in its file that breaks the rule.
type OperationError struct {
	File    string // "chat/New.graphql"
	Line    int    // 1-based; 0 when the problem has no place
	Column  int    // 1-based
	Message string
	// Err is the kind of problem, for errors.Is: ErrNoAuthenticator for an
	// operation that needs a login no Authenticator can check; nil for a
	// problem in the operation itself.
	Err error
}

func (e *OperationError) Unwrap() error { return e.Err }

func (e *OperationError) Error() string {
	if e.Line == 0 {
		return e.File + ": " + e.Message
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, e.Message)
}

// Directive names gqlpush reads in operation files. They are removed from the
// query sent upstream.
const (
	directiveAuth              = "auth"
	directiveRBAC              = "rbac"
	directiveFromClaim         = "fromClaim"
	directiveInternal          = "internal"
	directiveInternalOperation = "internalOperation"
	directiveLive              = "live"
)

// MaxLivePollingInterval is the longest @live(pollingIntervalSeconds:) an
// operation may ask for.
const MaxLivePollingInterval = time.Hour

func isOwnDirective(name string) bool {
	switch name {
	case directiveAuth, directiveRBAC, directiveFromClaim, directiveInternal, directiveInternalOperation, directiveLive:
		return true
	}
	return false
}

// ParseOperation parses one subscription or query operation. name is its
// endpoint name ("chat/New"); error messages call the source name +
// ".graphql". It fails with an [*OperationError] when the source is not
// valid GraphQL or breaks a rule: exactly one operation, a subscription or
// a query (never a mutation), never marked internal; a subscription selects
// exactly one root field, a query one or more; only a query may be @live.
func ParseOperation(name, source string) (*Operation, error) {
	file := name + OperationExt
	if err := checkOperationName(name); err != nil {
		return nil, &OperationError{File: file, Message: err.Error()}
	}
	doc, err := parser.ParseQuery(&ast.Source{Name: file, Input: source})
	if err != nil {
		return nil, gqlparserError(file, err)
	}
	o := &Operation{name: name, file: file, source: source}
	fail := func(pos *ast.Position, format string, args ...any) error {
		e := &OperationError{File: file, Message: fmt.Sprintf(format, args...)}
		if pos != nil {
			e.Line, e.Column = pos.Line, pos.Column
		}
		return e
	}
	switch len(doc.Operations) {
	case 1:
	case 0:
		return nil, fail(&ast.Position{Line: 1, Column: 1}, "no operation: a file holds exactly one subscription or query")
	default:
		return nil, fail(doc.Operations[1].Position, "%d operations: a file holds exactly one subscription or query", len(doc.Operations))
	}
	op := doc.Operations[0]
	switch op.Operation {
	case ast.Subscription:
	case ast.Query:
		o.query = true
	default:
		return nil, fail(op.Position, "operation is a %s: only subscriptions and queries are served", op.Operation)
	}
	o.opName = op.Name
	for _, d := range op.Directives {
		switch d.Name {
		case directiveInternal, directiveInternalOperation:
			return nil, fail(d.Position, "@%s: served operations cannot be internal", d.Name)
		case directiveFromClaim:
			return nil, fail(d.Position, "@%s belongs on a variable definition, not on the operation", d.Name)
		case directiveLive:
			if !o.query {
				return nil, fail(d.Position, "@%s is for queries: a subscription pushes its results already", d.Name)
			}
			if o.live, err = liveInterval(d); err != nil {
				return nil, fail(d.Position, "@%s: %v", d.Name, err)
			}
		}
	}
	rules, err := parseAccessRules(op.Directives, fail)
	if err != nil {
		return nil, err
	}
	o.rules = rules

	if n := len(op.SelectionSet); n != 1 && !o.query {
		pos := op.Position
		if n > 1 {
			pos = selectionPosition(op.SelectionSet[1])
		}
		return nil, fail(pos, "a subscription selects exactly one root field, this one selects %d", n)
	}
	for _, sel := range op.SelectionSet {
		root, ok := sel.(*ast.Field)
		if !ok {
			return nil, fail(selectionPosition(sel), "a root selection must be a field, not a fragment")
		}
		if strings.HasPrefix(root.Name, "__") {
			return nil, fail(root.Position, "a root field cannot be the introspection field %s", root.Name)
		}
		for _, d := range root.Directives {
			if !o.query && (d.Name == "skip" || d.Name == "include") {
				return nil, fail(d.Position, "@%s on the root field of a subscription is not allowed", d.Name)
			}
			if isOwnDirective(d.Name) {
				return nil, fail(d.Position, "@%s is not allowed on a field", d.Name)
			}
		}
		o.rootFields = append(o.rootFields, root)
	}
	o.rootField = o.rootFields[0]
	o.fragments = doc.Fragments

	for _, vd := range op.VariableDefinitions {
		v, err := newVariableDef(vd, fail)
		if err != nil {
			return nil, err
		}
		o.vars = append(o.vars, v)
	}
	if err := checkNoMisplacedDirectives(doc, fail); err != nil {
		return nil, err
	}
	return o, nil
}

// checkNoMisplacedDirectives rejects gqlpush's directives anywhere below the
// operation: they would reach the upstream, which does not know them.
func checkNoMisplacedDirectives(doc *ast.QueryDocument, fail func(*ast.Position, string, ...any) error) error {
	var walk func(ast.SelectionSet) error
	check := func(ds ast.DirectiveList) error {
		for _, d := range ds {
			if isOwnDirective(d.Name) {
				return fail(d.Position, "@%s is not allowed here", d.Name)
			}
		}
		return nil
	}
	walk = func(set ast.SelectionSet) error {
		for _, s := range set {
			var ds ast.DirectiveList
			var sub ast.SelectionSet
			switch s := s.(type) {
			case *ast.Field:
				ds, sub = s.Directives, s.SelectionSet
			case *ast.InlineFragment:
				ds, sub = s.Directives, s.SelectionSet
			case *ast.FragmentSpread:
				ds = s.Directives
			}
			if err := check(ds); err != nil {
				return err
			}
			if err := walk(sub); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(doc.Operations[0].SelectionSet); err != nil {
		return err
	}
	for _, f := range doc.Fragments {
		if err := check(f.Directives); err != nil {
			return err
		}
		if err := walk(f.SelectionSet); err != nil {
			return err
		}
	}
	return nil
}

func selectionPosition(s ast.Selection) *ast.Position {
	switch s := s.(type) {
	case *ast.Field:
		return s.Position
	case *ast.InlineFragment:
		return s.Position
	case *ast.FragmentSpread:
		return s.Position
	}
	return nil
}

// checkOperationName accepts slash-separated names of non-empty segments, the
// shape a path below the operations root has.
func checkOperationName(name string) error {
	if name == "" {
		return errors.New("empty operation name")
	}
	if !fs.ValidPath(name) || name == "." {
		return fmt.Errorf("operation name %q is not a clean slash-separated path", name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '?' || r == '#' || r == '%' {
			return fmt.Errorf("operation name %q has a character that cannot stand in a URL path", name)
		}
	}
	return nil
}

func gqlparserError(file string, err error) error {
	var ge *gqlerror.Error
	if errors.As(err, &ge) {
		e := &OperationError{File: file, Message: "syntax error: " + ge.Message}
		if len(ge.Locations) > 0 {
			e.Line, e.Column = ge.Locations[0].Line, ge.Locations[0].Column
		}
		return e
	}
	return &OperationError{File: file, Message: "syntax error: " + err.Error()}
}

// LoadOperations parses every *.graphql file below the root of fsys (use
// [fs.Sub] to start lower). The endpoint name of each is its path without
// the extension: chat/New.graphql serves /operations/chat/New. Every file
// that breaks a rule is reported; the error joins one [*OperationError] per
// file. It works with [os.DirFS] and [embed.FS].
func LoadOperations(fsys fs.FS) ([]*Operation, error) {
	var ops []*Operation
	var errs []error
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || path.Ext(p) != OperationExt {
			return nil
		}
		src, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		op, err := ParseOperation(strings.TrimSuffix(p, OperationExt), string(src))
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		ops = append(ops, op)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("gqlpush: load operations: %w", err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(ops) == 0 {
		return nil, errors.New("gqlpush: load operations: no *.graphql files found")
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].name < ops[j].name })
	return ops, nil
}

// upstreamQuery renders the document sent upstream: gqlpush's directives
// removed, variable defaults removed (gqlpush always sends a value, and some
// servers reject a default on a non-null variable), and, for a named
// upstream (prefix "gql_"), each root field renamed to the upstream's own
// name with an alias that keeps the key the operation wrote:
// `gql_messageCreated: messageCreated`.
func (o *Operation) upstreamQuery(prefix string) (string, error) {
	// Parse again so the shared, parsed form is never mutated.
	doc, err := parser.ParseQuery(&ast.Source{Name: o.file, Input: o.source})
	if err != nil {
		return "", gqlparserError(o.file, err)
	}
	op := doc.Operations[0]
	op.Directives = withoutOwnDirectives(op.Directives)
	for _, vd := range op.VariableDefinitions {
		vd.Directives = withoutOwnDirectives(vd.Directives)
		vd.DefaultValue = nil
	}
	for _, sel := range op.SelectionSet {
		root := sel.(*ast.Field)
		root.Name = strings.TrimPrefix(root.Name, prefix)
	}
	var b bytes.Buffer
	formatter.NewFormatter(&b, formatter.WithIndent("  ")).FormatQueryDocument(doc)
	return strings.TrimSpace(b.String()), nil
}

// liveInterval reads @live(pollingIntervalSeconds: N): a whole number of
// seconds, at least 1, at most MaxLivePollingInterval. Without the
// argument, it is 0: the Handler's LivePollInterval.
func liveInterval(d *ast.Directive) (time.Duration, error) {
	var out time.Duration
	for _, a := range d.Arguments {
		if a.Name != "pollingIntervalSeconds" {
			return 0, fmt.Errorf("unknown argument %s (it takes pollingIntervalSeconds)", a.Name)
		}
		n, err := strconv.Atoi(a.Value.Raw)
		if a.Value.Kind != ast.IntValue || err != nil || n < 1 || time.Duration(n)*time.Second > MaxLivePollingInterval {
			return 0, fmt.Errorf("pollingIntervalSeconds must be a whole number of seconds from 1 to %d", int(MaxLivePollingInterval/time.Second))
		}
		out = time.Duration(n) * time.Second
	}
	return out, nil
}

func withoutOwnDirectives(ds ast.DirectiveList) ast.DirectiveList {
	var out ast.DirectiveList
	for _, d := range ds {
		if !isOwnDirective(d.Name) {
			out = append(out, d)
		}
	}
	return out
}
