package gqlpush

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/vektah/gqlparser/v2/ast"
)

// Completion: a message-queue source receives the JSON value of a
// subscription's root field, not a GraphQL result. A completer turns it into
// the result a GraphQL server would have sent for the operation, following
// the GraphQL spec's "Executing Selection Sets", "Value Completion" and
// "Handling Field Errors": only the selected fields, in selection order,
// under their response names; __typename; result coercion of scalars and
// enums; null propagation, with one error and its path per failed field.
//
// The work is split in two. What depends only on the operation is planned
// once: fields collected (fragments, type conditions, merging, @skip and
// @include), each set's member names, the pre-encoded keys. Since @skip and
// @include may read variables, there is one plan per combination of the
// variables they read, built on first use. What depends on the message is a
// single pass over its bytes: checked once with json.Valid, then walked with
// the scanner of jsonscan.go, descending only where the plan descends, so
// that the work is linear in the payload and the recursion bounded by the
// selection set, never by the payload. The result is appended to one buffer;
// a value that must become null is cut off from it again.
//
// Values are written in one canonical form, as encoding/json would write
// them after decoding: compact, strings valid UTF-8 with its escapes (<, >
// and & are not escaped), so that equal values give equal bytes.

// Bounds of a completer.
const (
	// maxCompletionFields bounds the fields of one plan, fragments and
	// the possible types of abstract types expanded: fragments can nest a
	// selection set exponentially in the size of a document.
	maxCompletionFields = 10000
	// maxConditionVariables is how many variables @skip and @include may
	// read with their plans cached: one plan per combination. Beyond it a
	// plan is built per message.
	maxConditionVariables = 8
	// quoteValueBytes is how much of a payload's value an error message
	// quotes.
	quoteValueBytes = 64
)

// A completer turns the payloads of one subscription field into GraphQL
// results, for one operation. It is immutable once built, but for its plan
// cache, and safe for concurrent use.
type completer struct {
	schema    *ast.Schema
	field     *ast.Field
	typ       *ast.Type
	fragments ast.FragmentDefinitionList
	parent    string // the subscription type's name, for messages

	condVars []string                         // variables @skip and @include read, in document order
	plans    []atomic.Pointer[completionPlan] // by condition bits; nil beyond maxConditionVariables
	runs     sync.Pool                        // *completionRun
}

// newCompleter prepares the completion of field, the operation's root field
// as written (alias, selection set; its name may carry an upstream's prefix,
// "shop_orderUpdated"), whose type in schema is typ; fragments are the
// operation document's fragment definitions. It fails, saying why and where
// ("line:col: message", for the caller to put the file name before), when
// the selection does not fit the schema: an unknown field, type or fragment,
// a selection on a leaf or none on an object, fields of one response name
// that select different fields, a fragment cycle, a @skip or @include whose
// if is neither a Boolean nor a variable, or @skip or @include on the root
// field.
func newCompleter(schema *ast.Schema, typ *ast.Type, field *ast.Field, fragments ast.FragmentDefinitionList) (*completer, error) {
	if schema == nil || typ == nil || field == nil {
		return nil, errors.New("completion needs a schema, a root field and its type")
	}
	c := &completer{schema: schema, field: field, typ: typ, fragments: fragments, parent: "Subscription"}
	if schema.Subscription != nil {
		c.parent = schema.Subscription.Name
	}
	for _, d := range field.Directives {
		if d.Name == "skip" || d.Name == "include" {
			return nil, completionErrorf(d.Position, "@%s on the root field of a subscription is not allowed", d.Name)
		}
	}
	if len(field.Name) >= 2 && field.Name[:2] == "__" {
		return nil, completionErrorf(field.Position, "the root field cannot be the introspection field %s", field.Name)
	}
	if err := checkFragmentCycles(fragments); err != nil {
		return nil, err
	}
	// The first plan takes every @skip or @include on a variable as
	// letting its selection in: it checks every selection that can ever be
	// executed against the schema, learns which variables the conditions
	// read, and bounds every later plan, each of which selects a part of
	// what it selects. Without such variables it is the only plan.
	b := &completionBuilder{c: c, all: true}
	p, err := b.plan()
	if err != nil {
		return nil, err
	}
	if len(c.condVars) <= maxConditionVariables {
		c.plans = make([]atomic.Pointer[completionPlan], 1<<len(c.condVars))
	}
	if len(c.condVars) == 0 {
		c.plans[0].Store(p)
	}
	c.runs.New = func() any { return new(completionRun) }
	return c, nil
}

// complete returns the compact JSON result of payload, the JSON value of the
// root field: {"data":{"<response name>":…}}, and "errors":[…] after
// "data" when there are field errors ({"data":null,"errors":[…]} when the
// root field is non-null and null). vars are the request's coerced
// variables: @skip and @include read booleans from them; a variable that is
// absent or not a boolean counts as false.
func (c *completer) complete(payload []byte, vars map[string]any) []byte {
	return c.appendComplete(make([]byte, 0, min(len(payload), 1<<16)+64), payload, vars)
}

// appendComplete appends the result of payload to dst, as [completer.complete]
// returns it, and returns the extended buffer.
func (c *completer) appendComplete(dst, payload []byte, vars map[string]any) []byte {
	p := c.planFor(vars)
	r := c.runs.Get().(*completionRun)
	r.out = append(dst, `{"data":`...)
	dataAt := len(r.out)
	if p == nil {
		// Cannot happen: the plan built when the completer was made
		// selects all that this one would.
		r.out = append(r.out, "null"...)
		r.path = append(r.path[:0], completionStep{name: c.responseName()})
		r.fail("The selection set could not be planned.")
	} else {
		root := p.root
		r.out = append(r.out, '{')
		r.out = append(r.out, root.key...)
		valueAt := len(r.out)
		r.path = append(r.path[:0], completionStep{name: root.resp})
		ok := false
		if v := trimJSONSpace(payload); !json.Valid(v) {
			r.fail(invalidPayloadMessage(payload))
		} else {
			ok = r.value(root, root.typ, v)
		}
		switch {
		case ok:
			r.out = append(r.out, '}')
		case root.typ.NonNull:
			r.out = append(r.out[:dataAt], "null"...)
		default:
			r.out = append(append(r.out[:valueAt], "null"...), '}')
		}
	}
	if r.nerr > 0 {
		r.out = append(r.out, `,"errors":[`...)
		r.out = append(r.out, r.errs...)
		r.out = append(r.out, ']')
	}
	out := append(r.out, '}')
	c.release(r)
	return out
}

func (c *completer) responseName() string {
	if c.field.Alias != "" {
		return c.field.Alias
	}
	return c.field.Name
}

// release returns a run to the pool without what it points into (the
// caller's buffer, the payload) and without buffers a huge payload grew.
func (c *completer) release(r *completionRun) {
	r.out = nil
	clear(r.slots[:cap(r.slots)])
	r.slots = r.slots[:0]
	r.nerr = 0
	r.errs = r.errs[:0]
	if cap(r.errs) > 1<<16 {
		r.errs = nil
	}
	if cap(r.scratch) > 1<<16 {
		r.scratch = nil
	}
	c.runs.Put(r)
}

// planFor returns the plan for the conditions vars make true.
func (c *completer) planFor(vars map[string]any) *completionPlan {
	var bits uint64
	for i, name := range c.condVars {
		if v, _ := vars[name].(bool); v && i < 64 {
			bits |= 1 << i
		}
	}
	if c.plans == nil {
		p, _ := (&completionBuilder{c: c, bits: bits}).plan()
		return p
	}
	if p := c.plans[bits].Load(); p != nil {
		return p
	}
	p, err := (&completionBuilder{c: c, bits: bits}).plan()
	if err != nil {
		return nil
	}
	// Two messages may build it at once: either plan serves.
	c.plans[bits].CompareAndSwap(nil, p)
	return p
}

// A completionPlan is what one operation selects, for one combination of
// its conditions.
type completionPlan struct {
	root *completionField
}

// Kinds of named types, as completion treats them.
type completionKind uint8

const (
	kindTypename completionKind = iota // the __typename meta-field
	kindInt
	kindFloat
	kindString
	kindBoolean
	kindID
	kindCustomScalar
	kindEnum
	kindObject
	kindAbstract // interface or union
)

// A completionField is one field of a selection set, its occurrences merged.
type completionField struct {
	key   []byte // `"responseName":`
	resp  string // response name, for paths
	owner string // "Order.id", for messages
	typ   *ast.Type
	kind  completionKind
	named *ast.Definition // the named type, for messages and enums
	slot  int             // of the member the value is read from
	enum  map[string]struct{}

	set    *completionSet            // kindObject
	byType map[string]*completionSet // kindAbstract: by concrete type name
}

// A completionSet is the selection of one object type: the collected fields
// and the payload members they read.
type completionSet struct {
	typename []byte // `"Order"`, for __typename
	fields   []*completionField
	names    []string       // members read, by slot
	index    map[string]int // names by slot, when there are many
}

// slotOf returns the slot of a member name, given a new one when it has none.
func (s *completionSet) slotOf(name string) int {
	for i, n := range s.names {
		if n == name {
			return i
		}
	}
	s.names = append(s.names, name)
	return len(s.names) - 1
}

// lookup returns the slot of the member whose key is name, canonical and
// unquoted, or -1.
func (s *completionSet) lookup(name []byte) int {
	if s.index != nil {
		if i, ok := s.index[string(name)]; ok {
			return i
		}
		return -1
	}
	for i, n := range s.names {
		if n == string(name) {
			return i
		}
	}
	return -1
}

// A completionBuilder builds one plan.
type completionBuilder struct {
	c      *completer
	all    bool   // conditions on variables hold: the checking plan
	bits   uint64 // which condition variables are true, when !all
	fields int
}

func (b *completionBuilder) plan() (*completionPlan, error) {
	c := b.c
	root, err := b.field(c.parent, []*ast.Field{c.field}, c.typ)
	if err != nil {
		return nil, err
	}
	return &completionPlan{root: root}, nil
}

// field plans the occurrences fs of one response name, whose type is typ;
// parent names the type that holds it, for messages.
func (b *completionBuilder) field(parent string, fs []*ast.Field, typ *ast.Type) (*completionField, error) {
	f0 := fs[0]
	resp := f0.Alias
	if resp == "" {
		resp = f0.Name
	}
	b.fields++
	if b.fields > maxCompletionFields {
		return nil, completionErrorf(f0.Position, "the selection set, fragments expanded, has more than %d fields", maxCompletionFields)
	}
	f := &completionField{
		key:   append(appendJSONString(nil, resp), ':'),
		resp:  resp,
		owner: parent + "." + f0.Name,
		typ:   typ,
	}
	named := b.c.schema.Types[typ.Name()]
	if named == nil {
		return nil, completionErrorf(f0.Position, "field %s has type %s, which the schema does not define", f.owner, typ.Name())
	}
	f.named = named
	var sel ast.SelectionSet
	for _, o := range fs {
		sel = append(sel, o.SelectionSet...)
	}
	if named.IsLeafType() {
		if len(sel) > 0 {
			return nil, completionErrorf(f0.Position, "field %s of type %s is a leaf: it takes no selection set", f.owner, typ.String())
		}
		f.kind = leafKind(named)
		if f.kind == kindEnum && len(named.EnumValues) > 8 {
			f.enum = make(map[string]struct{}, len(named.EnumValues))
			for _, v := range named.EnumValues {
				f.enum[v.Name] = struct{}{}
			}
		}
		return f, nil
	}
	if len(sel) == 0 {
		return nil, completionErrorf(f0.Position, "field %s of type %s needs a selection set", f.owner, typ.String())
	}
	var err error
	switch named.Kind {
	case ast.Object:
		f.kind = kindObject
		f.set, err = b.set(named, named, sel)
	case ast.Interface, ast.Union:
		f.kind = kindAbstract
		f.byType = map[string]*completionSet{}
		for _, pt := range b.c.schema.GetPossibleTypes(named) {
			if pt == nil || pt.Kind != ast.Object {
				continue // an interface implementing this one
			}
			if f.byType[pt.Name], err = b.set(pt, named, sel); err != nil {
				break
			}
		}
	default:
		err = completionErrorf(f0.Position, "field %s has type %s, of kind %s, which is not an output type", f.owner, typ.String(), named.Kind)
	}
	if err != nil {
		return nil, err
	}
	return f, nil
}

func leafKind(def *ast.Definition) completionKind {
	if def.Kind == ast.Enum {
		return kindEnum
	}
	switch def.Name {
	case "Int":
		return kindInt
	case "Float":
		return kindFloat
	case "String":
		return kindString
	case "Boolean":
		return kindBoolean
	case "ID":
		return kindID
	}
	return kindCustomScalar
}

// set plans the selection sel, written in scope (the field's type), as
// executed on objects of type obj.
func (b *completionBuilder) set(obj, scope *ast.Definition, sel ast.SelectionSet) (*completionSet, error) {
	var g completionGroups
	if err := b.collect(obj, scope, sel, map[string]bool{}, &g); err != nil {
		return nil, err
	}
	s := &completionSet{typename: appendJSONString(nil, obj.Name)}
	for _, fs := range g.fields {
		f0 := fs[0]
		for _, o := range fs[1:] {
			if o.Name != f0.Name {
				return nil, completionErrorf(o.Position, "response name %s selects both %s and %s: use different aliases", g.name(f0), f0.Name, o.Name)
			}
		}
		if f0.Name == "__typename" {
			b.fields++
			resp := g.name(f0)
			s.fields = append(s.fields, &completionField{key: append(appendJSONString(nil, resp), ':'), resp: resp, kind: kindTypename, slot: -1})
			continue
		}
		def := obj.Fields.ForName(f0.Name)
		if def == nil {
			return nil, completionErrorf(f0.Position, "type %s has no field %s", obj.Name, f0.Name)
		}
		f, err := b.field(obj.Name, fs, def.Type)
		if err != nil {
			return nil, err
		}
		f.slot = s.slotOf(f0.Name)
		s.fields = append(s.fields, f)
	}
	if len(s.names) > 8 {
		s.index = make(map[string]int, len(s.names))
		for i, n := range s.names {
			s.index[n] = i
		}
	}
	return s, nil
}

// completionGroups are collected fields by response name, in order.
type completionGroups struct {
	fields [][]*ast.Field
	at     map[string]int
}

func (g *completionGroups) name(f *ast.Field) string {
	if f.Alias != "" {
		return f.Alias
	}
	return f.Name
}

func (g *completionGroups) add(f *ast.Field) {
	name := g.name(f)
	if i, ok := g.at[name]; ok {
		g.fields[i] = append(g.fields[i], f)
		return
	}
	if g.at == nil {
		g.at = map[string]int{}
	}
	g.at[name] = len(g.fields)
	g.fields = append(g.fields, []*ast.Field{f})
}

// collect is the spec's CollectFields for an object of type obj: sel is
// written in scope, the type its fields are checked against.
func (b *completionBuilder) collect(obj, scope *ast.Definition, sel ast.SelectionSet, visited map[string]bool, g *completionGroups) error {
	for _, s := range sel {
		switch s := s.(type) {
		case *ast.Field:
			if ok, err := b.included(s.Directives); err != nil || !ok {
				if err != nil {
					return err
				}
				continue
			}
			if s.Name != "__typename" && scope.Fields.ForName(s.Name) == nil {
				if len(s.Name) >= 2 && s.Name[:2] == "__" {
					return completionErrorf(s.Position, "the introspection field %s is served only on the query type", s.Name)
				}
				return completionErrorf(s.Position, "type %s has no field %s", scope.Name, s.Name)
			}
			g.add(s)
		case *ast.InlineFragment:
			if ok, err := b.included(s.Directives); err != nil || !ok {
				if err != nil {
					return err
				}
				continue
			}
			inner := scope
			if s.TypeCondition != "" {
				cond, applies, err := b.applies(obj, s.TypeCondition, s.Position)
				if err != nil {
					return err
				}
				if !applies {
					continue
				}
				inner = cond
			}
			if err := b.collect(obj, inner, s.SelectionSet, visited, g); err != nil {
				return err
			}
		case *ast.FragmentSpread:
			if ok, err := b.included(s.Directives); err != nil || !ok {
				if err != nil {
					return err
				}
				continue
			}
			if visited[s.Name] {
				continue
			}
			visited[s.Name] = true
			fd := b.c.fragments.ForName(s.Name)
			if fd == nil {
				return completionErrorf(s.Position, "unknown fragment %s", s.Name)
			}
			cond, applies, err := b.applies(obj, fd.TypeCondition, fd.Position)
			if err != nil {
				return err
			}
			if !applies {
				continue
			}
			if err := b.collect(obj, cond, fd.SelectionSet, visited, g); err != nil {
				return err
			}
		}
	}
	return nil
}

// applies reports whether a fragment on cond applies to an object of type
// obj, and returns cond's definition.
func (b *completionBuilder) applies(obj *ast.Definition, cond string, pos *ast.Position) (*ast.Definition, bool, error) {
	def := b.c.schema.Types[cond]
	if def == nil {
		return nil, false, completionErrorf(pos, "fragment on unknown type %s", cond)
	}
	switch def.Kind {
	case ast.Object:
		return def, def.Name == obj.Name, nil
	case ast.Interface, ast.Union:
		for _, pt := range b.c.schema.GetPossibleTypes(def) {
			if pt != nil && pt.Name == obj.Name {
				return def, true, nil
			}
		}
		return def, false, nil
	}
	return nil, false, completionErrorf(pos, "fragment on %s, which is not an object, interface or union type", cond)
}

// included evaluates @skip and @include. The first plan counts every
// condition on a variable as met, and notes the variable.
func (b *completionBuilder) included(ds ast.DirectiveList) (bool, error) {
	for _, d := range ds {
		if d.Name != "skip" && d.Name != "include" {
			continue // another's directive: not gqlpush's to execute
		}
		arg := d.Arguments.ForName("if")
		if arg == nil || arg.Value == nil {
			return false, completionErrorf(d.Position, "@%s needs an if argument", d.Name)
		}
		var cond bool
		switch arg.Value.Kind {
		case ast.BooleanValue:
			cond = arg.Value.Raw == "true"
		case ast.Variable:
			i := b.conditionVariable(arg.Value.Raw)
			if b.all {
				cond = d.Name == "include"
			} else {
				cond = i >= 0 && i < 64 && b.bits&(1<<i) != 0
			}
		default:
			return false, completionErrorf(arg.Value.Position, "@%s(if:) takes a Boolean or a variable", d.Name)
		}
		if cond == (d.Name == "skip") {
			return false, nil
		}
	}
	return true, nil
}

func (b *completionBuilder) conditionVariable(name string) int {
	for i, n := range b.c.condVars {
		if n == name {
			return i
		}
	}
	if !b.all {
		return -1
	}
	b.c.condVars = append(b.c.condVars, name)
	return len(b.c.condVars) - 1
}

// checkFragmentCycles rejects fragments that spread themselves, directly or
// not: their expansion would never end.
func checkFragmentCycles(fragments ast.FragmentDefinitionList) error {
	const (
		unseen = iota
		open
		done
	)
	state := map[string]int{}
	var visit func(fd *ast.FragmentDefinition) error
	var walk func(sel ast.SelectionSet) error
	walk = func(sel ast.SelectionSet) error {
		for _, s := range sel {
			switch s := s.(type) {
			case *ast.Field:
				if err := walk(s.SelectionSet); err != nil {
					return err
				}
			case *ast.InlineFragment:
				if err := walk(s.SelectionSet); err != nil {
					return err
				}
			case *ast.FragmentSpread:
				switch state[s.Name] {
				case open:
					return completionErrorf(s.Position, "fragment %s spreads itself", s.Name)
				case unseen:
					if fd := fragments.ForName(s.Name); fd != nil {
						if err := visit(fd); err != nil {
							return err
						}
					}
				}
			}
		}
		return nil
	}
	visit = func(fd *ast.FragmentDefinition) error {
		state[fd.Name] = open
		if err := walk(fd.SelectionSet); err != nil {
			return err
		}
		state[fd.Name] = done
		return nil
	}
	for _, fd := range fragments {
		if state[fd.Name] == unseen {
			if err := visit(fd); err != nil {
				return err
			}
		}
	}
	return nil
}

// A completionError is a selection that does not fit the schema, at its
// place in the operation (nil when it has none).
type completionError struct {
	pos *ast.Position
	msg string
}

func (e *completionError) Error() string {
	if e.pos == nil {
		return e.msg
	}
	return fmt.Sprintf("%d:%d: %s", e.pos.Line, e.pos.Column, e.msg)
}

func completionErrorf(pos *ast.Position, format string, args ...any) error {
	return &completionError{pos: pos, msg: fmt.Sprintf(format, args...)}
}

// A completionRun is the state of one completion, pooled.
type completionRun struct {
	out     []byte
	errs    []byte // the members of "errors", comma-separated
	nerr    int
	path    []completionStep
	slots   [][]byte // members found, a stack of one frame per object
	scratch []byte   // a key or a name with escapes, made canonical
}

// A completionStep is a response name, or a list index when name is "".
type completionStep struct {
	name  string
	index int
}

// fail records a field error at the current path.
func (r *completionRun) fail(msg string) {
	if r.nerr > 0 {
		r.errs = append(r.errs, ',')
	}
	r.nerr++
	r.errs = append(r.errs, `{"message":`...)
	r.errs = appendJSONString(r.errs, msg)
	r.errs = append(r.errs, `,"path":[`...)
	for i, s := range r.path {
		if i > 0 {
			r.errs = append(r.errs, ',')
		}
		if s.name == "" {
			r.errs = strconv.AppendInt(r.errs, int64(s.index), 10)
		} else {
			r.errs = appendJSONString(r.errs, s.name)
		}
	}
	r.errs = append(r.errs, "]}"...)
}

// value appends the completion of raw (nil for a missing member) as a value
// of type t of field f. It reports false when a field error makes the value
// null: the caller, which owns the position, then writes null there if its
// type is nullable, or fails in turn. The error is recorded once, where it
// arose.
func (r *completionRun) value(f *completionField, t *ast.Type, raw []byte) bool {
	if len(raw) == 0 || raw[0] == 'n' { // null, the only value starting with n
		if t.NonNull {
			r.fail("Cannot return null for non-nullable field " + f.owner + ".")
			return false
		}
		r.out = append(r.out, "null"...)
		return true
	}
	if t.Elem != nil {
		return r.list(f, t, raw)
	}
	switch f.kind {
	case kindObject:
		if raw[0] != '{' {
			r.fail("Expected an object for field " + f.owner + " of type " + f.named.Name + ", got " + quoteValue(raw))
			return false
		}
		return r.object(f.set, raw)
	case kindAbstract:
		return r.abstract(f, raw)
	case kindEnum:
		return r.enum(f, raw)
	}
	return r.scalar(f.kind, raw)
}

func (r *completionRun) list(f *completionField, t *ast.Type, raw []byte) bool {
	if raw[0] != '[' {
		r.fail("Expected a list for field " + f.owner + " of type " + t.String() + ", got " + quoteValue(raw))
		return false
	}
	r.out = append(r.out, '[')
	depth := len(r.path)
	r.path = append(r.path, completionStep{})
	n := 0
	for i := skipSpace(raw, 1); i < len(raw) && raw[i] != ']'; n++ {
		end := skipValue(raw, i)
		if n > 0 {
			r.out = append(r.out, ',')
		}
		r.path[depth] = completionStep{index: n}
		at := len(r.out)
		if !r.value(f, t.Elem, raw[i:end]) {
			if t.Elem.NonNull {
				r.path = r.path[:depth]
				return false
			}
			r.out = append(r.out[:at], "null"...)
		}
		r.path = r.path[:depth+1]
		if i = skipSpace(raw, end); i < len(raw) && raw[i] == ',' {
			i = skipSpace(raw, i+1)
		}
	}
	r.path = r.path[:depth]
	r.out = append(r.out, ']')
	return true
}

// object appends the selection s of the object raw.
func (r *completionRun) object(s *completionSet, raw []byte) bool {
	base := len(r.slots)
	for range s.names {
		r.slots = append(r.slots, nil)
	}
	members(raw, func(key, value []byte) {
		// The last of members of one name wins, as with encoding/json
		// and JSON.parse.
		if i := s.lookup(r.canonicalName(key)); i >= 0 {
			r.slots[base+i] = value
		}
	})
	r.out = append(r.out, '{')
	depth := len(r.path)
	r.path = append(r.path, completionStep{})
	ok := true
	for i, f := range s.fields {
		if i > 0 {
			r.out = append(r.out, ',')
		}
		r.out = append(r.out, f.key...)
		if f.kind == kindTypename {
			r.out = append(r.out, s.typename...)
			continue
		}
		r.path[depth] = completionStep{name: f.resp}
		at := len(r.out)
		if !r.value(f, f.typ, r.slots[base+f.slot]) {
			if f.typ.NonNull {
				ok = false // the object is null: the fields after it are not completed
				break
			}
			r.out = append(r.out[:at], "null"...)
		}
		r.path = r.path[:depth+1]
	}
	r.path = r.path[:depth]
	clear(r.slots[base:])
	r.slots = r.slots[:base]
	if ok {
		r.out = append(r.out, '}')
	}
	return ok
}

// abstract completes a value of an interface or union type: its
// "__typename" member names its object type.
func (r *completionRun) abstract(f *completionField, raw []byte) bool {
	kind := "interface"
	if f.named.Kind == ast.Union {
		kind = "union"
	}
	if raw[0] != '{' {
		r.fail("Expected an object for field " + f.owner + " of " + kind + " type " + f.named.Name + ", got " + quoteValue(raw))
		return false
	}
	var typename []byte
	members(raw, func(key, value []byte) {
		if string(r.canonicalName(key)) == "__typename" {
			typename = value
		}
	})
	if len(typename) == 0 || typename[0] != '"' {
		r.fail("Could not determine the concrete type of field " + f.owner + " of " + kind + " type " + f.named.Name + `: the value has no "__typename" string member`)
		return false
	}
	s := f.byType[string(r.canonicalName(typename))]
	if s == nil {
		r.fail("Could not determine the concrete type of field " + f.owner + ": __typename " + quoteValue(typename) + " is not a possible type of " + kind + " type " + f.named.Name)
		return false
	}
	return r.object(s, raw)
}

func (r *completionRun) enum(f *completionField, raw []byte) bool {
	if raw[0] == '"' {
		name := r.canonicalName(raw)
		known := false
		if f.enum != nil {
			_, known = f.enum[string(name)]
		} else {
			for _, v := range f.named.EnumValues {
				if v.Name == string(name) {
					known = true
					break
				}
			}
		}
		if known {
			r.out = append(append(append(r.out, '"'), name...), '"')
			return true
		}
	}
	r.fail(`Enum "` + f.named.Name + `" cannot represent value: ` + quoteValue(raw))
	return false
}

// scalar applies the result coercion of a scalar type to raw, not null.
func (r *completionRun) scalar(kind completionKind, raw []byte) bool {
	switch kind {
	case kindInt:
		if isNumberStart(raw[0]) {
			if out, ok := appendInt32(r.out, raw); ok {
				r.out = out
				return true
			}
			if !isIntegral(raw) {
				r.fail("Int cannot represent non-integer value: " + quoteValue(raw))
			} else {
				r.fail("Int cannot represent non 32-bit signed integer value: " + quoteValue(raw))
			}
			return false
		}
		r.fail("Int cannot represent non-integer value: " + quoteValue(raw))
	case kindFloat:
		if isNumberStart(raw[0]) {
			if out, ok := appendNumber(r.out, raw, false); ok {
				r.out = out
				return true
			}
		}
		r.fail("Float cannot represent non numeric value: " + quoteValue(raw))
	case kindString:
		switch raw[0] {
		case '"':
			r.out = appendCanonicalString(r.out, raw)
			return true
		case 't', 'f':
			r.out = append(append(append(r.out, '"'), raw...), '"')
			return true
		case '{', '[':
		default:
			// A number becomes its text, as a JavaScript server's
			// String(value) would write it.
			if out, ok := appendNumber(append(r.out, '"'), raw, true); ok {
				r.out = append(out, '"')
				return true
			}
		}
		r.fail("String cannot represent value: " + quoteValue(raw))
	case kindBoolean:
		if raw[0] == 't' || raw[0] == 'f' {
			r.out = append(r.out, raw...)
			return true
		}
		r.fail("Boolean cannot represent a non boolean value: " + quoteValue(raw))
	case kindID:
		if raw[0] == '"' {
			r.out = appendCanonicalString(r.out, raw)
			return true
		}
		if isNumberStart(raw[0]) && isIntegral(raw) {
			if out, ok := appendNumber(append(r.out, '"'), raw, true); ok {
				r.out = append(out, '"')
				return true
			}
		}
		r.fail("ID cannot represent value: " + quoteValue(raw))
	default: // a custom scalar: the value as it is
		r.out = appendCompact(r.out, raw, true)
		return true
	}
	return false
}

// canonicalName returns the content of the JSON string raw, canonical: as
// is when it has no escapes, else in r.scratch. A GraphQL name is equal to
// it exactly when it is equal to the decoded string.
func (r *completionRun) canonicalName(raw []byte) []byte {
	if s, ok := unquoted(raw); ok {
		return s
	}
	if len(raw) < 2 {
		return nil
	}
	r.scratch = appendCanonicalString(r.scratch[:0], raw)
	return r.scratch[1 : len(r.scratch)-1]
}

func isNumberStart(c byte) bool { return c == '-' || (c >= '0' && c <= '9') }

// isPlainInteger reports whether the JSON number raw is written without a
// fraction or an exponent.
func isPlainInteger(raw []byte) bool {
	if len(raw) > 0 && raw[0] == '-' {
		raw = raw[1:]
	}
	for _, c := range raw {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(raw) > 0
}

// isIntegral reports whether the JSON number raw has an integer value.
func isIntegral(raw []byte) bool {
	if isPlainInteger(raw) {
		return true
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	return err == nil && f == math.Trunc(f)
}

// appendInt32 appends the JSON number raw as an Int, when it is an integer
// within 32 bits, whatever its notation (3, 3.0, 3e0).
func appendInt32(dst, raw []byte) ([]byte, bool) {
	if isPlainInteger(raw) && len(raw) <= 11 {
		var n int64
		for _, c := range raw[bytes.IndexByte(raw, '-')+1:] {
			n = n*10 + int64(c-'0')
		}
		if raw[0] == '-' {
			n = -n
		}
		if n < math.MinInt32 || n > math.MaxInt32 {
			return dst, false
		}
		return strconv.AppendInt(dst, n, 10), true
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f != math.Trunc(f) || f < math.MinInt32 || f > math.MaxInt32 {
		return dst, false
	}
	return strconv.AppendInt(dst, int64(f), 10), true
}

// appendNumber appends the JSON number raw in its canonical form: an
// integer written plainly keeps its digits (-0 becomes 0), all of them when
// exact is set, else up to 15, what a float64 holds exactly; any other
// number is written as the float64 it is, shortest, as encoding/json and
// JavaScript write it (3.0 → 3, 1.50 → 1.5, 1e21 → 1e+21). It fails on a
// number beyond float64's range.
func appendNumber(dst, raw []byte, exact bool) ([]byte, bool) {
	if isPlainInteger(raw) && (exact || len(raw) <= 15) {
		if string(raw) == "-0" {
			return append(dst, '0'), true
		}
		return append(dst, raw...), true
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) || math.IsInf(f, 0) || math.IsNaN(f) {
		return dst, false
	}
	return appendFloat(dst, f), true
}

// appendFloat writes f as encoding/json does (and JavaScript, but for -0,
// which JavaScript writes 0, as here).
func appendFloat(dst []byte, f float64) []byte {
	if f == 0 {
		return append(dst, '0')
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs < 1e-6 || abs >= 1e21 {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// 1e-07 → 1e-7
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// quoteValue shows a payload's value in an error message: compact, its first
// quoteValueBytes bytes at most.
func quoteValue(raw []byte) string {
	if len(raw) > 4*quoteValueBytes {
		raw = raw[:4*quoteValueBytes] // compacting only shortens it
	}
	return clipTo(string(appendCompact(nil, raw, false)), quoteValueBytes)
}

func invalidPayloadMessage(payload []byte) string {
	if len(trimJSONSpace(payload)) == 0 {
		return "The payload is empty, not a JSON value."
	}
	var se *json.SyntaxError
	if err := json.Unmarshal(payload, new(json.RawMessage)); errors.As(err, &se) {
		return fmt.Sprintf("The payload is not valid JSON: syntax error at byte %d.", se.Offset)
	}
	return "The payload is not valid JSON."
}

// appendCanonicalString appends the JSON string raw (quotes included, as
// json.Valid accepts it) as encoding/json writes the string it decodes to,
// without HTML escaping: escapes only where needed (\" \\ \b \f \n \r \t,
// \u00XX for other control characters, \u2028 and \u2029), invalid UTF-8
// and lone surrogates as U+FFFD. Most strings need no change and are
// copied.
func appendCanonicalString(dst, raw []byte) []byte {
	body := raw[1 : len(raw)-1]
	if isCanonicalStringBody(body) {
		return append(dst, raw...)
	}
	dst = append(dst, '"')
	for i := 0; i < len(body); {
		c := body[i]
		switch {
		case c == '\\' && i+1 < len(body):
			var r rune
			switch body[i+1] {
			case 'u':
				var n int
				r, n = decodeEscapedRune(body[i:])
				i += n
				dst = appendStringRune(dst, r)
				continue
			case 'b':
				r = '\b'
			case 'f':
				r = '\f'
			case 'n':
				r = '\n'
			case 'r':
				r = '\r'
			case 't':
				r = '\t'
			default: // " \ /
				r = rune(body[i+1])
			}
			dst = appendStringRune(dst, r)
			i += 2
		case c < utf8.RuneSelf:
			dst = appendStringRune(dst, rune(c))
			i++
		default:
			r, size := utf8.DecodeRune(body[i:])
			dst = appendStringRune(dst, r)
			i += size
		}
	}
	return append(dst, '"')
}

// isCanonicalStringBody reports whether the content of a valid JSON string
// is what appendCanonicalString would write: no escapes, valid UTF-8,
// neither U+2028 nor U+2029. (Valid JSON has no raw control characters or
// quotes in its strings.)
func isCanonicalStringBody(b []byte) bool {
	if bytes.IndexByte(b, '\\') >= 0 || !utf8.Valid(b) {
		return false
	}
	// U+2028 and U+2029 are E2 80 A8 and E2 80 A9.
	for i := 0; ; i++ {
		j := bytes.IndexByte(b[i:], 0xe2)
		if j < 0 {
			return true
		}
		i += j
		if i+2 < len(b) && b[i+1] == 0x80 && (b[i+2] == 0xa8 || b[i+2] == 0xa9) {
			return false
		}
	}
}

// trimJSONSpace trims the white space JSON allows around a value.
func trimJSONSpace(b []byte) []byte {
	b = b[skipSpace(b, 0):]
	for n := len(b); n > 0; n-- {
		switch b[n-1] {
		case ' ', '\t', '\n', '\r':
			continue
		}
		return b[:n]
	}
	return b[:0]
}

// decodeEscapedRune decodes the \uXXXX escape at the start of b, with the
// low surrogate that follows a high one, as encoding/json does: a lone
// surrogate is U+FFFD. It returns the rune and the bytes read.
func decodeEscapedRune(b []byte) (rune, int) {
	r := hex4(b)
	if r < 0 {
		return utf8.RuneError, 2
	}
	if utf16.IsSurrogate(r) {
		if len(b) >= 12 && b[6] == '\\' && b[7] == 'u' {
			if r2 := hex4(b[6:]); r2 >= 0 {
				if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
					return d, 12
				}
			}
		}
		return utf8.RuneError, 6
	}
	return r, 6
}

// hex4 reads the four hex digits of the \uXXXX escape at the start of b, or
// returns -1.
func hex4(b []byte) rune {
	if len(b) < 6 {
		return -1
	}
	var r rune
	for _, c := range b[2:6] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

const hexDigits = "0123456789abcdef"

// appendStringRune appends r inside a JSON string as encoding/json does,
// without HTML escaping.
func appendStringRune(dst []byte, r rune) []byte {
	switch r {
	case '"', '\\':
		return append(dst, '\\', byte(r))
	case '\b':
		return append(dst, '\\', 'b')
	case '\f':
		return append(dst, '\\', 'f')
	case '\n':
		return append(dst, '\\', 'n')
	case '\r':
		return append(dst, '\\', 'r')
	case '\t':
		return append(dst, '\\', 't')
	case '\u2028', '\u2029':
		return append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
	}
	if r < 0x20 {
		return append(dst, '\\', 'u', '0', '0', hexDigits[r>>4], hexDigits[r&0xf])
	}
	return utf8.AppendRune(dst, r)
}

// appendJSONString appends s as a JSON string, as appendCanonicalString
// writes it; invalid UTF-8 becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for _, r := range s {
		dst = appendStringRune(dst, r)
	}
	return append(dst, '"')
}
