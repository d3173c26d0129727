package gqlpush

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	graphql "github.com/graph-gophers/graphql-go"
	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/formatter"
	"github.com/vektah/gqlparser/v2/parser"
)

// ownDirectivesSDL declares gqlpush's directives, so that operations that use
// them validate against an upstream schema. Roles are a custom scalar because
// they are written as enum names or as strings.
var ownDirectivesSDL = map[string]string{
	directiveAuth:              `directive @auth on QUERY | SUBSCRIPTION`,
	directiveRBAC:              `directive @rbac(requireMatchAll: [GqlpushRole!], requireMatchAny: [GqlpushRole!], denyMatchAll: [GqlpushRole!], denyMatchAny: [GqlpushRole!]) on QUERY | SUBSCRIPTION`,
	directiveLive:              `directive @live(pollingIntervalSeconds: Int) on QUERY`,
	directiveFromClaim:         `directive @fromClaim(name: GqlpushClaim!) on VARIABLE_DEFINITION`,
	directiveInternal:          `directive @internal on QUERY | MUTATION | SUBSCRIPTION`,
	directiveInternalOperation: `directive @internalOperation on QUERY | MUTATION | SUBSCRIPTION`,
}

// An upstreamSchema is what gqlpush knows of an upstream's schema.
type upstreamSchema struct {
	types     *ast.Schema     // the schema as the upstream has it: input types for variables
	validator *graphql.Schema // root subscription fields renamed as operations write them
}

// parseUpstreamSchema reads an upstream's SDL. Operations name its
// subscription and query fields <name>_<field>, so they are validated
// against a copy of the schema whose root fields carry that prefix and that
// declares gqlpush's directives.
func parseUpstreamSchema(name, sdl string) (*upstreamSchema, error) {
	// Errors read "schema:line:col: …", after the upstream's name.
	types, err := gqlparser.LoadSchema(&ast.Source{Name: "schema", Input: sdl})
	if err != nil {
		return nil, err
	}
	doc, err := parser.ParseSchema(&ast.Source{Name: "schema", Input: sdl})
	if err != nil {
		return nil, err
	}
	if name != "" {
		rename := func(defs ast.DefinitionList) {
			for _, d := range defs {
				if types.Subscription != nil && d.Name == types.Subscription.Name || types.Query != nil && d.Name == types.Query.Name {
					for _, f := range d.Fields {
						f.Name = name + "_" + f.Name
					}
				}
			}
		}
		rename(doc.Definitions)
		rename(doc.Extensions)
	}
	var b bytes.Buffer
	formatter.NewFormatter(&b).FormatSchemaDocument(doc)
	for _, n := range []string{directiveAuth, directiveRBAC, directiveFromClaim, directiveInternal, directiveInternalOperation, directiveLive} {
		if doc.Directives.ForName(n) == nil {
			b.WriteString("\n" + ownDirectivesSDL[n] + "\n")
		}
	}
	for _, scalar := range []string{"GqlpushRole", "GqlpushClaim"} {
		if doc.Definitions.ForName(scalar) == nil {
			b.WriteString("scalar " + scalar + "\n")
		}
	}
	v, err := graphql.ParseSchema(b.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	return &upstreamSchema{types: types, validator: v}, nil
}

// validate checks an operation against the schema. Two checks are left out:
// variable values (known only per request), and graph-gophers' refusal of a
// default on a non-null variable, which the GraphQL spec allows and which
// gqlpush fills in itself.
func (s *upstreamSchema) validate(o *Operation) error {
	var errs []error
	for _, qe := range s.validator.Validate(o.source) {
		if qe.Rule == "VariablesOfCorrectType" {
			continue
		}
		if qe.Rule == "DefaultValuesOfCorrectType" && strings.Contains(qe.Message, "will not use the default value") {
			continue
		}
		e := &OperationError{File: o.file, Message: "invalid against the upstream schema: " + qe.Message}
		if len(qe.Locations) > 0 {
			e.Line, e.Column = qe.Locations[0].Line, qe.Locations[0].Column
		}
		errs = append(errs, e)
	}
	return errors.Join(errs...)
}
