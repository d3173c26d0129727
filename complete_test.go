package gqlpush

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/parser"
)

// completionSDL is an upstream's schema with a bit of everything completion
// deals with.
const completionSDL = `
scalar DateTime
scalar JSON

enum Status { PENDING SHIPPED DELIVERED }

interface Node { id: ID! }

type Customer implements Node {
  id: ID!
  name: String!
  email: String
  vip: Boolean
}

type Product implements Node {
  id: ID!
  title: String!
  price: Float!
  tags: [String!]
}

type Coupon { code: String! percent: Int! }

union Discount = Coupon | Product

type Address { street: String! city: String }

type LineItem { product: Product! quantity: Int! note: String }

type Order implements Node {
  id: ID!
  status: Status!
  state: Status
  total: Float
  count: Int
  paid: Boolean
  note: String
  placedAt: DateTime
  meta: JSON
  customer: Customer
  shipTo: Address
  items: [LineItem!]!
  tags: [String!]
  scores: [Int]
  discount: Discount
  owner: Node
}

type Query { order: Order }

type Subscription {
  orderUpdated(id: ID!): Order
  orderPlaced: Order!
  nodeChanged: Node
  discountOffered: Discount
  counter: Int!
  ticks: [Int!]
  statusChanged: Status
}
`

func completionSchema(t testing.TB) *ast.Schema {
	t.Helper()
	s, err := gqlparser.LoadSchema(&ast.Source{Name: "schema", Input: completionSDL})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newTestCompleter builds the completer of the operation in query, whose
// root field may carry the prefix "shop_", as the operations of an upstream
// named shop do.
func newTestCompleter(t testing.TB, schema *ast.Schema, query string) (*completer, error) {
	t.Helper()
	doc, err := parser.ParseQuery(&ast.Source{Name: "op.graphql", Input: query})
	if err != nil {
		t.Fatal(err)
	}
	root := doc.Operations[0].SelectionSet[0].(*ast.Field)
	def := schema.Subscription.Fields.ForName(strings.TrimPrefix(root.Name, "shop_"))
	if def == nil {
		t.Fatalf("no subscription field %s", root.Name)
	}
	return newCompleter(schema, def.Type, root, doc.Fragments)
}

func mustCompleter(t testing.TB, schema *ast.Schema, query string) *completer {
	t.Helper()
	c, err := newTestCompleter(t, schema, query)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const (
	orderOp    = `subscription($id: ID!) { shop_orderUpdated(id: $id) { %s } }`
	completeOK = `{"data":{"shop_orderUpdated":%s}}`
)

func TestComplete(t *testing.T) {
	schema := completionSchema(t)
	order := func(sel string) string { return fmt.Sprintf(orderOp, sel) }
	ok := func(v string) string { return fmt.Sprintf(completeOK, v) }
	tests := []struct {
		name    string
		op      string
		vars    map[string]any
		payload string
		want    string
	}{
		// Selection.
		{
			name:    "scalars and nested objects, extra members ignored",
			op:      order(`id status total count paid placedAt meta customer { id name email vip }`),
			payload: `{"id":"o1","status":"SHIPPED","total":12.5,"count":3,"paid":true,"placedAt":"2025-01-02T03:04:05Z","meta":{"a": [1, 2.50, "x"]},"customer":{"id":7,"name":"Ada","email":null,"vip":false},"extra":{"ignored":true}}`,
			want:    ok(`{"id":"o1","status":"SHIPPED","total":12.5,"count":3,"paid":true,"placedAt":"2025-01-02T03:04:05Z","meta":{"a":[1,2.50,"x"]},"customer":{"id":"7","name":"Ada","email":null,"vip":false}}`),
		},
		{
			name:    "root alias",
			op:      `subscription { order: shop_orderUpdated(id: 1) { id } }`,
			payload: `{"id":"1"}`,
			want:    `{"data":{"order":{"id":"1"}}}`,
		},
		{
			name:    "root name without a prefix",
			op:      `subscription { orderUpdated(id: 1) { id } }`,
			payload: `{"id":"1"}`,
			want:    `{"data":{"orderUpdated":{"id":"1"}}}`,
		},
		{
			name:    "aliases name the result, fields name the member read",
			op:      order(`ref: id who: customer { n: name }`),
			payload: `{"id":"a","customer":{"name":"B"},"ref":"wrong","who":"wrong","n":"wrong"}`,
			want:    ok(`{"ref":"a","who":{"n":"B"}}`),
		},
		{
			name:    "one field under two aliases",
			op:      order(`a: id b: id`),
			payload: `{"id":"x"}`,
			want:    ok(`{"a":"x","b":"x"}`),
		},
		{
			name:    "selection order, not payload order",
			op:      order(`id count`),
			payload: `{"count":1,"id":"x"}`,
			want:    ok(`{"id":"x","count":1}`),
		},
		{
			name:    "missing members are null",
			op:      order(`id note customer { email }`),
			payload: `{"id":"x","customer":{}}`,
			want:    ok(`{"id":"x","note":null,"customer":{"email":null}}`),
		},
		{
			name:    "__typename on objects is the type's name, whatever the payload says",
			op:      order(`__typename id customer { __typename t: __typename }`),
			payload: `{"id":"x","__typename":"Bogus","customer":{"__typename":"Bogus"}}`,
			want:    ok(`{"__typename":"Order","id":"x","customer":{"__typename":"Customer","t":"Customer"}}`),
		},
		{
			name:    "merging fields of one response name",
			op:      order(`customer { name } customer { email } ... on Order { customer { name vip } }`),
			payload: `{"customer":{"name":"A","email":"e","vip":true}}`,
			want:    ok(`{"customer":{"name":"A","email":"e","vip":true}}`),
		},
		{
			name:    "fragment on an interface, spread in an object and in an interface",
			op:      `subscription { shop_orderUpdated(id: 1) { ...NodeID owner { ...NodeID } } } fragment NodeID on Node { id }`,
			payload: `{"id":"o","owner":{"__typename":"Customer","id":"c"}}`,
			want:    ok(`{"id":"o","owner":{"id":"c"}}`),
		},
		{
			name:    "a fragment spread twice is collected once",
			op:      `subscription { shop_orderUpdated(id: 1) { ...F note ...F } } fragment F on Order { id }`,
			payload: `{"id":"o","note":"n"}`,
			want:    ok(`{"id":"o","note":"n"}`),
		},
		{
			name:    "type condition that does not apply",
			op:      order(`owner { id ... on Product { title } }`),
			payload: `{"owner":{"__typename":"Customer","id":"c","title":"t"}}`,
			want:    ok(`{"owner":{"id":"c"}}`),
		},
		{
			name:    "interface: inline fragments, customer",
			op:      `subscription { shop_nodeChanged { __typename id ... on Customer { name } ... on Product { title price } } }`,
			payload: `{"__typename":"Customer","id":"c1","name":"Ada","title":"no"}`,
			want:    `{"data":{"shop_nodeChanged":{"__typename":"Customer","id":"c1","name":"Ada"}}}`,
		},
		{
			name:    "interface: inline fragments, product",
			op:      `subscription { shop_nodeChanged { __typename id ... on Customer { name } ... on Product { title price } } }`,
			payload: `{"id":"p1","title":"Pen","price":2,"__typename":"Product"}`,
			want:    `{"data":{"shop_nodeChanged":{"__typename":"Product","id":"p1","title":"Pen","price":2}}}`,
		},
		{
			name:    "union: named fragments, coupon",
			op:      `subscription { shop_discountOffered { ...CouponFields ... on Product { ...ProductFields } } } fragment CouponFields on Coupon { __typename code percent } fragment ProductFields on Product { kind: __typename id }`,
			payload: `{"__typename":"Coupon","code":"SAVE","percent":10}`,
			want:    `{"data":{"shop_discountOffered":{"__typename":"Coupon","code":"SAVE","percent":10}}}`,
		},
		{
			name:    "union: named fragments, product",
			op:      `subscription { shop_discountOffered { ...CouponFields ... on Product { ...ProductFields } } } fragment CouponFields on Coupon { __typename code percent } fragment ProductFields on Product { kind: __typename id }`,
			payload: `{"__typename":"Product","id":"p"}`,
			want:    `{"data":{"shop_discountOffered":{"kind":"Product","id":"p"}}}`,
		},
		{
			name:    "__typename alone on a union",
			op:      `subscription { shop_discountOffered { __typename } }`,
			payload: `{"__typename":"Product"}`,
			want:    `{"data":{"shop_discountOffered":{"__typename":"Product"}}}`,
		},
		{
			name:    "escaped __typename",
			op:      `subscription { shop_discountOffered { __typename } }`,
			payload: `{"\u005f_typename":"Pr\u006fduct"}`,
			want:    `{"data":{"shop_discountOffered":{"__typename":"Product"}}}`,
		},
		{
			name:    "a union inside an object",
			op:      order(`discount { ... on Coupon { code } ... on Product { title } }`),
			payload: `{"discount":{"__typename":"Product","title":"Pen","code":"no"}}`,
			want:    ok(`{"discount":{"title":"Pen"}}`),
		},

		// @skip and @include.
		{
			name:    "skip and include literals",
			op:      order(`id @skip(if: true) count @include(if: false) note @include(if: true) paid @skip(if: false)`),
			payload: `{"id":"x","count":1,"note":"n","paid":true}`,
			want:    ok(`{"note":"n","paid":true}`),
		},
		{
			name:    "skip and include variables, all in",
			op:      `subscription($withCustomer: Boolean!, $hideId: Boolean!) { shop_orderUpdated(id: 1) { id @skip(if: $hideId) customer @include(if: $withCustomer) { name } ... @include(if: $withCustomer) { note } } }`,
			vars:    map[string]any{"withCustomer": true, "hideId": false},
			payload: `{"id":"x","customer":{"name":"A"},"note":"n"}`,
			want:    ok(`{"id":"x","customer":{"name":"A"},"note":"n"}`),
		},
		{
			name:    "skip and include variables, all out",
			op:      `subscription($withCustomer: Boolean!, $hideId: Boolean!) { shop_orderUpdated(id: 1) { id @skip(if: $hideId) customer @include(if: $withCustomer) { name } ... @include(if: $withCustomer) { note } } }`,
			vars:    map[string]any{"withCustomer": false, "hideId": true},
			payload: `{"id":"x","customer":{"name":"A"},"note":"n"}`,
			want:    ok(`{}`),
		},
		{
			name:    "absent condition variables count as false",
			op:      `subscription($withCustomer: Boolean, $hideId: Boolean) { shop_orderUpdated(id: 1) { id @skip(if: $hideId) customer @include(if: $withCustomer) { name } } }`,
			payload: `{"id":"x","customer":{"name":"A"}}`,
			want:    ok(`{"id":"x"}`),
		},
		{
			name:    "a condition on a spread decides what merges, in",
			op:      `subscription($more: Boolean!) { shop_orderUpdated(id: 1) { customer { name } ...Extra @include(if: $more) } } fragment Extra on Order { customer { email } }`,
			vars:    map[string]any{"more": true},
			payload: `{"customer":{"name":"A","email":"e"}}`,
			want:    ok(`{"customer":{"name":"A","email":"e"}}`),
		},
		{
			name:    "a condition on a spread decides what merges, out",
			op:      `subscription($more: Boolean!) { shop_orderUpdated(id: 1) { customer { name } ...Extra @include(if: $more) } } fragment Extra on Order { customer { email } }`,
			vars:    map[string]any{"more": false},
			payload: `{"customer":{"name":"A","email":"e"}}`,
			want:    ok(`{"customer":{"name":"A"}}`),
		},
		{
			name:    "skip wins over include",
			op:      `subscription($a: Boolean!) { shop_orderUpdated(id: 1) { id note @include(if: $a) @skip(if: $a) } }`,
			vars:    map[string]any{"a": true},
			payload: `{"id":"x","note":"n"}`,
			want:    ok(`{"id":"x"}`),
		},

		// Int.
		{name: "Int", op: `subscription { shop_counter }`, payload: `3`, want: `{"data":{"shop_counter":3}}`},
		{name: "Int with a zero fraction", op: `subscription { shop_counter }`, payload: `3.0`, want: `{"data":{"shop_counter":3}}`},
		{name: "Int with an exponent", op: `subscription { shop_counter }`, payload: `2e3`, want: `{"data":{"shop_counter":2000}}`},
		{name: "Int minus zero", op: `subscription { shop_counter }`, payload: `-0`, want: `{"data":{"shop_counter":0}}`},
		{name: "Int smallest", op: `subscription { shop_counter }`, payload: `-2147483648`, want: `{"data":{"shop_counter":-2147483648}}`},
		{name: "Int largest", op: `subscription { shop_counter }`, payload: `2147483647`, want: `{"data":{"shop_counter":2147483647}}`},
		{
			name:    "Int beyond 32 bits, non-null root",
			op:      `subscription { shop_counter }`,
			payload: `2147483648`,
			want:    `{"data":null,"errors":[{"message":"Int cannot represent non 32-bit signed integer value: 2147483648","path":["shop_counter"]}]}`,
		},
		{
			name:    "Int beyond 32 bits in an exponent",
			op:      order(`count`),
			payload: `{"count":1e10}`,
			want:    `{"data":{"shop_orderUpdated":{"count":null}},"errors":[{"message":"Int cannot represent non 32-bit signed integer value: 1e10","path":["shop_orderUpdated","count"]}]}`,
		},
		{
			name:    "Int with a fraction",
			op:      order(`count`),
			payload: `{"count":3.5}`,
			want:    `{"data":{"shop_orderUpdated":{"count":null}},"errors":[{"message":"Int cannot represent non-integer value: 3.5","path":["shop_orderUpdated","count"]}]}`,
		},
		{
			name:    "Int from a string",
			op:      order(`count`),
			payload: `{"count":"3"}`,
			want:    `{"data":{"shop_orderUpdated":{"count":null}},"errors":[{"message":"Int cannot represent non-integer value: \"3\"","path":["shop_orderUpdated","count"]}]}`,
		},
		{
			name:    "Int from a boolean",
			op:      order(`count`),
			payload: `{"count":true}`,
			want:    `{"data":{"shop_orderUpdated":{"count":null}},"errors":[{"message":"Int cannot represent non-integer value: true","path":["shop_orderUpdated","count"]}]}`,
		},

		// Float.
		{
			name:    "Float in canonical form",
			op:      order(`total`),
			payload: `{"total":1.50}`,
			want:    ok(`{"total":1.5}`),
		},
		{name: "Float integral stays integral", op: order(`total`), payload: `{"total":3}`, want: ok(`{"total":3}`)},
		{name: "Float with a zero fraction", op: order(`total`), payload: `{"total":3.0}`, want: ok(`{"total":3}`)},
		{name: "Float minus zero", op: order(`total`), payload: `{"total":-0.0}`, want: ok(`{"total":0}`)},
		{name: "Float large", op: order(`total`), payload: `{"total":1E21}`, want: ok(`{"total":1e+21}`)},
		{name: "Float small", op: order(`total`), payload: `{"total":1E-7}`, want: ok(`{"total":1e-7}`)},
		{name: "Float small written plainly", op: order(`total`), payload: `{"total":0.000001}`, want: ok(`{"total":0.000001}`)},
		{name: "Float beyond float64's precision", op: order(`total`), payload: `{"total":12345678901234567890}`, want: ok(`{"total":12345678901234567000}`)},
		{name: "Float of 15 digits", op: order(`total`), payload: `{"total":-123456789012345}`, want: ok(`{"total":-123456789012345}`)},
		{
			name:    "Float from a string",
			op:      order(`total`),
			payload: `{"total":"1.5"}`,
			want:    `{"data":{"shop_orderUpdated":{"total":null}},"errors":[{"message":"Float cannot represent non numeric value: \"1.5\"","path":["shop_orderUpdated","total"]}]}`,
		},
		{
			name:    "Float beyond float64",
			op:      order(`total`),
			payload: `{"total":1e400}`,
			want:    `{"data":{"shop_orderUpdated":{"total":null}},"errors":[{"message":"Float cannot represent non numeric value: 1e400","path":["shop_orderUpdated","total"]}]}`,
		},
		{
			name:    "Float from an object",
			op:      order(`total`),
			payload: `{"total":{"amount": 1}}`,
			want:    `{"data":{"shop_orderUpdated":{"total":null}},"errors":[{"message":"Float cannot represent non numeric value: {\"amount\":1}","path":["shop_orderUpdated","total"]}]}`,
		},

		// String.
		{name: "String", op: order(`note`), payload: `{"note":"hello"}`, want: ok(`{"note":"hello"}`)},
		{name: "String from an integer", op: order(`note`), payload: `{"note":42}`, want: ok(`{"note":"42"}`)},
		{name: "String from a long integer keeps its digits", op: order(`note`), payload: `{"note":12345678901234567890}`, want: ok(`{"note":"12345678901234567890"}`)},
		{name: "String from a float", op: order(`note`), payload: `{"note":4.50}`, want: ok(`{"note":"4.5"}`)},
		{name: "String from true", op: order(`note`), payload: `{"note":true}`, want: ok(`{"note":"true"}`)},
		{name: "String from false", op: order(`note`), payload: `{"note":false}`, want: ok(`{"note":"false"}`)},
		{name: "String HTML is not escaped", op: order(`note`), payload: `{"note":"<a href='x'>&</a>"}`, want: ok(`{"note":"<a href='x'>&</a>"}`)},
		{
			name:    "String escapes made canonical",
			op:      order(`note`),
			payload: `{"note":"a\u0041\/\"\n\u2028é\u00e9\ud83d\ude00\u001f"}`,
			want:    ok(`{"note":"aA/\"\n\u2028éé😀\u001f"}`),
		},
		{
			name:    "String with raw U+2028, invalid UTF-8 and a lone surrogate",
			op:      order(`note`),
			payload: "{\"note\":\"a\u2028b\xffc\\ud800d\"}",
			want:    ok("{\"note\":\"a\\u2028b\ufffdc\ufffdd\"}"),
		},
		{
			name:    "String from an object",
			op:      order(`note`),
			payload: `{"note":{"x":1}}`,
			want:    `{"data":{"shop_orderUpdated":{"note":null}},"errors":[{"message":"String cannot represent value: {\"x\":1}","path":["shop_orderUpdated","note"]}]}`,
		},
		{
			name:    "String from a list",
			op:      order(`note`),
			payload: `{"note":[1]}`,
			want:    `{"data":{"shop_orderUpdated":{"note":null}},"errors":[{"message":"String cannot represent value: [1]","path":["shop_orderUpdated","note"]}]}`,
		},

		// Boolean.
		{name: "Boolean", op: order(`a: paid`), payload: `{"paid":false}`, want: ok(`{"a":false}`)},
		{
			name:    "Boolean from a number",
			op:      order(`paid`),
			payload: `{"paid":1}`,
			want:    `{"data":{"shop_orderUpdated":{"paid":null}},"errors":[{"message":"Boolean cannot represent a non boolean value: 1","path":["shop_orderUpdated","paid"]}]}`,
		},
		{
			name:    "Boolean from a string",
			op:      order(`paid`),
			payload: `{"paid":"true"}`,
			want:    `{"data":{"shop_orderUpdated":{"paid":null}},"errors":[{"message":"Boolean cannot represent a non boolean value: \"true\"","path":["shop_orderUpdated","paid"]}]}`,
		},

		// ID.
		{name: "ID from a string", op: order(`id`), payload: `{"id":"x\u0031"}`, want: ok(`{"id":"x1"}`)},
		{name: "ID from an integer", op: order(`id`), payload: `{"id":7}`, want: ok(`{"id":"7"}`)},
		{name: "ID from a long integer keeps its digits", op: order(`id`), payload: `{"id":12345678901234567890}`, want: ok(`{"id":"12345678901234567890"}`)},
		{name: "ID from an integer with an exponent", op: order(`id`), payload: `{"id":1e3}`, want: ok(`{"id":"1000"}`)},
		{name: "ID from an integer with a zero fraction", op: order(`id`), payload: `{"id":-7.0}`, want: ok(`{"id":"-7"}`)},
		{
			name:    "ID from a fraction nulls the nullable parent",
			op:      order(`id`),
			payload: `{"id":7.5}`,
			want:    `{"data":{"shop_orderUpdated":null},"errors":[{"message":"ID cannot represent value: 7.5","path":["shop_orderUpdated","id"]}]}`,
		},
		{
			name:    "ID from a boolean",
			op:      order(`id`),
			payload: `{"id":true}`,
			want:    `{"data":{"shop_orderUpdated":null},"errors":[{"message":"ID cannot represent value: true","path":["shop_orderUpdated","id"]}]}`,
		},

		// Enums.
		{name: "enum", op: order(`state`), payload: `{"state":"PENDING"}`, want: ok(`{"state":"PENDING"}`)},
		{name: "enum escaped", op: order(`state`), payload: `{"state":"\u0050ENDING"}`, want: ok(`{"state":"PENDING"}`)},
		{name: "enum at the root", op: `subscription { shop_statusChanged }`, payload: `"DELIVERED"`, want: `{"data":{"shop_statusChanged":"DELIVERED"}}`},
		{
			name:    "enum value unknown",
			op:      order(`state`),
			payload: `{"state":"pending"}`,
			want:    `{"data":{"shop_orderUpdated":{"state":null}},"errors":[{"message":"Enum \"Status\" cannot represent value: \"pending\"","path":["shop_orderUpdated","state"]}]}`,
		},
		{
			name:    "enum from a number",
			op:      order(`state`),
			payload: `{"state":1}`,
			want:    `{"data":{"shop_orderUpdated":{"state":null}},"errors":[{"message":"Enum \"Status\" cannot represent value: 1","path":["shop_orderUpdated","state"]}]}`,
		},

		// Custom scalars.
		{
			name:    "custom scalars pass as they are, compact",
			op:      order(`placedAt meta`),
			payload: `{"placedAt": 1700000000, "meta": { "nested" : [ true , null , {"k":"v\u0041 b"}, 1.50e3 ] } }`,
			want:    ok(`{"placedAt":1700000000,"meta":{"nested":[true,null,{"k":"vA b"},1.50e3]}}`),
		},

		// Lists.
		{
			name:    "lists of scalars",
			op:      order(`tags scores`),
			payload: `{"tags":["a","b"],"scores":[1,null,3]}`,
			want:    ok(`{"tags":["a","b"],"scores":[1,null,3]}`),
		},
		{
			name:    "lists with white space, empty",
			op:      order(`tags scores`),
			payload: "{\"tags\" : [ ] ,\n \"scores\":[ 1 ,\t2 ]}",
			want:    ok(`{"tags":[],"scores":[1,2]}`),
		},
		{
			name:    "list of objects",
			op:      order(`items { quantity note product { id } }`),
			payload: `{"items":[{"quantity":1,"product":{"id":"p1"}},{"quantity":2,"note":"gift","product":{"id":"p2"}}]}`,
			want:    ok(`{"items":[{"quantity":1,"note":null,"product":{"id":"p1"}},{"quantity":2,"note":"gift","product":{"id":"p2"}}]}`),
		},
		{
			name:    "nullable item error, with its index",
			op:      order(`scores`),
			payload: `{"scores":[1,"two",3]}`,
			want:    `{"data":{"shop_orderUpdated":{"scores":[1,null,3]}},"errors":[{"message":"Int cannot represent non-integer value: \"two\"","path":["shop_orderUpdated","scores",1]}]}`,
		},
		{
			name:    "non-null item null nulls the list",
			op:      order(`tags note`),
			payload: `{"tags":["a",null,"c"],"note":"n"}`,
			want:    `{"data":{"shop_orderUpdated":{"tags":null,"note":"n"}},"errors":[{"message":"Cannot return null for non-nullable field Order.tags.","path":["shop_orderUpdated","tags",1]}]}`,
		},
		{
			name:    "not a list where a list is expected",
			op:      order(`tags`),
			payload: `{"tags":"a"}`,
			want:    `{"data":{"shop_orderUpdated":{"tags":null}},"errors":[{"message":"Expected a list for field Order.tags of type [String!], got \"a\"","path":["shop_orderUpdated","tags"]}]}`,
		},
		{
			name:    "list at the root",
			op:      `subscription { shop_ticks }`,
			payload: `[1, 2 ,3]`,
			want:    `{"data":{"shop_ticks":[1,2,3]}}`,
		},
		{
			name:    "list at the root with a null item",
			op:      `subscription { shop_ticks }`,
			payload: `[1,null]`,
			want:    `{"data":{"shop_ticks":null},"errors":[{"message":"Cannot return null for non-nullable field Subscription.shop_ticks.","path":["shop_ticks",1]}]}`,
		},
		{
			name:    "errors in several items",
			op:      order(`scores`),
			payload: `{"scores":["a",2,true,4]}`,
			want:    `{"data":{"shop_orderUpdated":{"scores":[null,2,null,4]}},"errors":[{"message":"Int cannot represent non-integer value: \"a\"","path":["shop_orderUpdated","scores",0]},{"message":"Int cannot represent non-integer value: true","path":["shop_orderUpdated","scores",2]}]}`,
		},
		{
			name:    "an error in an item of non-null objects stops the list",
			op:      order(`items { quantity }`),
			payload: `{"items":[{"quantity":"1"},{"quantity":2},{"quantity":3.5}]}`,
			want:    `{"data":{"shop_orderUpdated":null},"errors":[{"message":"Int cannot represent non-integer value: \"1\"","path":["shop_orderUpdated","items",0,"quantity"]}]}`,
		},

		// Objects and abstract types.
		{
			name:    "not an object where an object is expected",
			op:      order(`customer { name }`),
			payload: `{"customer":"Ada"}`,
			want:    `{"data":{"shop_orderUpdated":{"customer":null}},"errors":[{"message":"Expected an object for field Order.customer of type Customer, got \"Ada\"","path":["shop_orderUpdated","customer"]}]}`,
		},
		{
			name:    "unknown __typename",
			op:      `subscription { shop_nodeChanged { id } }`,
			payload: `{"__typename":"Coupon","id":"c"}`,
			want:    `{"data":{"shop_nodeChanged":null},"errors":[{"message":"Could not determine the concrete type of field Subscription.shop_nodeChanged: __typename \"Coupon\" is not a possible type of interface type Node","path":["shop_nodeChanged"]}]}`,
		},
		{
			name:    "missing __typename",
			op:      `subscription { shop_nodeChanged { id } }`,
			payload: `{"id":"c"}`,
			want:    `{"data":{"shop_nodeChanged":null},"errors":[{"message":"Could not determine the concrete type of field Subscription.shop_nodeChanged of interface type Node: the value has no \"__typename\" string member","path":["shop_nodeChanged"]}]}`,
		},
		{
			name:    "__typename not a string",
			op:      order(`discount { __typename }`),
			payload: `{"discount":{"__typename":1}}`,
			want:    `{"data":{"shop_orderUpdated":{"discount":null}},"errors":[{"message":"Could not determine the concrete type of field Order.discount of union type Discount: the value has no \"__typename\" string member","path":["shop_orderUpdated","discount"]}]}`,
		},
		{
			name:    "abstract value not an object",
			op:      order(`discount { __typename }`),
			payload: `{"discount":[]}`,
			want:    `{"data":{"shop_orderUpdated":{"discount":null}},"errors":[{"message":"Expected an object for field Order.discount of union type Discount, got []","path":["shop_orderUpdated","discount"]}]}`,
		},

		// Null propagation.
		{
			name:    "a missing non-null leaf nulls its nullable parent",
			op:      order(`id shipTo { street city }`),
			payload: `{"id":"x","shipTo":{"city":"Paris"}}`,
			want:    `{"data":{"shop_orderUpdated":{"id":"x","shipTo":null}},"errors":[{"message":"Cannot return null for non-nullable field Address.street.","path":["shop_orderUpdated","shipTo","street"]}]}`,
		},
		{
			name:    "a null non-null leaf nulls its nullable parent",
			op:      order(`shipTo { city street } id`),
			payload: `{"id":"x","shipTo":{"city":"Paris","street":null}}`,
			want:    `{"data":{"shop_orderUpdated":{"shipTo":null,"id":"x"}},"errors":[{"message":"Cannot return null for non-nullable field Address.street.","path":["shop_orderUpdated","shipTo","street"]}]}`,
		},
		{
			name:    "up to the nullable root",
			op:      order(`id status`),
			payload: `{"id":"x"}`,
			want:    `{"data":{"shop_orderUpdated":null},"errors":[{"message":"Cannot return null for non-nullable field Order.status.","path":["shop_orderUpdated","status"]}]}`,
		},
		{
			name:    "non-null all the way up",
			op:      `subscription { shop_orderPlaced { id items { product { title } } } }`,
			payload: `{"id":"o","items":[{"product":{"title":"A"}},{"product":{}}]}`,
			want:    `{"data":null,"errors":[{"message":"Cannot return null for non-nullable field Product.title.","path":["shop_orderPlaced","items",1,"product","title"]}]}`,
		},
		{
			name:    "non-null root, nested error stops at a nullable field",
			op:      `subscription { shop_orderPlaced { id customer { name } } }`,
			payload: `{"id":"o","customer":{}}`,
			want:    `{"data":{"shop_orderPlaced":{"id":"o","customer":null}},"errors":[{"message":"Cannot return null for non-nullable field Customer.name.","path":["shop_orderPlaced","customer","name"]}]}`,
		},
		{
			name:    "errors before the failing field stay, fields after it are not completed",
			op:      order(`count status note`),
			payload: `{"count":"x","note":5}`,
			want:    `{"data":{"shop_orderUpdated":null},"errors":[{"message":"Int cannot represent non-integer value: \"x\"","path":["shop_orderUpdated","count"]},{"message":"Cannot return null for non-nullable field Order.status.","path":["shop_orderUpdated","status"]}]}`,
		},
		{
			name:    "several errors in document order",
			op:      order(`count paid state customer { name vip } note`),
			payload: `{"count":1.5,"paid":"yes","state":"NOPE","customer":{"vip":0},"note":"n"}`,
			want:    `{"data":{"shop_orderUpdated":{"count":null,"paid":null,"state":null,"customer":null,"note":"n"}},"errors":[{"message":"Int cannot represent non-integer value: 1.5","path":["shop_orderUpdated","count"]},{"message":"Boolean cannot represent a non boolean value: \"yes\"","path":["shop_orderUpdated","paid"]},{"message":"Enum \"Status\" cannot represent value: \"NOPE\"","path":["shop_orderUpdated","state"]},{"message":"Cannot return null for non-nullable field Customer.name.","path":["shop_orderUpdated","customer","name"]}]}`,
		},

		// Payloads.
		{
			name:    "payload not JSON, nullable root",
			op:      order(`id`),
			payload: `{"id":`,
			want:    `{"data":{"shop_orderUpdated":null},"errors":[{"message":"The payload is not valid JSON: syntax error at byte 6.","path":["shop_orderUpdated"]}]}`,
		},
		{
			name:    "payload not JSON, non-null root",
			op:      `subscription { shop_orderPlaced { id } }`,
			payload: `nope`,
			want:    `{"data":null,"errors":[{"message":"The payload is not valid JSON: syntax error at byte 2.","path":["shop_orderPlaced"]}]}`,
		},
		{
			name:    "payload with trailing data",
			op:      order(`id`),
			payload: `{"id":"x"} {}`,
			want:    `{"data":{"shop_orderUpdated":null},"errors":[{"message":"The payload is not valid JSON: syntax error at byte 12.","path":["shop_orderUpdated"]}]}`,
		},
		{
			name:    "payload empty",
			op:      order(`id`),
			payload: " \n",
			want:    `{"data":{"shop_orderUpdated":null},"errors":[{"message":"The payload is empty, not a JSON value.","path":["shop_orderUpdated"]}]}`,
		},
		{
			name:    "payload with a vertical tab, not JSON white space",
			op:      `subscription { shop_counter }`,
			payload: "\v1",
			want:    `{"data":null,"errors":[{"message":"The payload is not valid JSON: syntax error at byte 1.","path":["shop_counter"]}]}`,
		},
		{
			name:    "payload null, nullable root",
			op:      order(`id`),
			payload: `null`,
			want:    `{"data":{"shop_orderUpdated":null}}`,
		},
		{
			name:    "payload null, non-null root",
			op:      `subscription { shop_orderPlaced { id } }`,
			payload: ` null `,
			want:    `{"data":null,"errors":[{"message":"Cannot return null for non-nullable field Subscription.shop_orderPlaced.","path":["shop_orderPlaced"]}]}`,
		},
		{
			name:    "payload in white space",
			op:      order(`id`),
			payload: " \r\n{ \"id\" : \"x\" }\t\n",
			want:    ok(`{"id":"x"}`),
		},
		{
			name:    "duplicate members: the last wins",
			op:      order(`id`),
			payload: `{"id":"a","id":"b"}`,
			want:    ok(`{"id":"b"}`),
		},
		{
			name:    "escaped member names",
			op:      order(`id`),
			payload: `{"\u0069d":"x"}`,
			want:    ok(`{"id":"x"}`),
		},
		{
			name:    "long values are quoted short",
			op:      order(`paid`),
			payload: `{"paid":"` + strings.Repeat("x", 1000) + `"}`,
			want:    `{"data":{"shop_orderUpdated":{"paid":null}},"errors":[{"message":"Boolean cannot represent a non boolean value: \"` + strings.Repeat("x", 63) + `…","path":["shop_orderUpdated","paid"]}]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustCompleter(t, schema, tt.op)
			got := c.complete([]byte(tt.payload), tt.vars)
			if string(got) != tt.want {
				t.Errorf("payload %s\n got %s\nwant %s", tt.payload, got, tt.want)
			}
			if !json.Valid(got) {
				t.Errorf("not JSON: %s", got)
			}
			// Again, from a pooled run, after the first: same bytes.
			if again := c.complete([]byte(tt.payload), tt.vars); !bytes.Equal(again, got) {
				t.Errorf("second run: %s", again)
			}
		})
	}
}

// TestCompleteAppends: appendComplete keeps what dst holds.
func TestCompleteAppends(t *testing.T) {
	c := mustCompleter(t, completionSchema(t), `subscription { shop_counter }`)
	got := c.appendComplete([]byte("data: "), []byte(`7`), nil)
	if want := `data: {"data":{"shop_counter":7}}`; string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// TestCompleteConcurrent: one completer serves many subscriptions at once,
// each with its own variables, while its plans are built.
func TestCompleteConcurrent(t *testing.T) {
	c := mustCompleter(t, completionSchema(t), `subscription($a: Boolean!, $b: Boolean!) { shop_orderUpdated(id: 1) { id @include(if: $a) note @skip(if: $b) } }`)
	payload := []byte(`{"id":"x","note":"n"}`)
	want := map[[2]bool]string{
		{false, false}: `{"data":{"shop_orderUpdated":{"note":"n"}}}`,
		{false, true}:  `{"data":{"shop_orderUpdated":{}}}`,
		{true, false}:  `{"data":{"shop_orderUpdated":{"id":"x","note":"n"}}}`,
		{true, true}:   `{"data":{"shop_orderUpdated":{"id":"x"}}}`,
	}
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for g := range 16 {
		wg.Go(func() {
			for i := range 200 {
				k := [2]bool{(g+i)%2 == 0, (g+i)%3 == 0}
				if got := c.complete(payload, map[string]any{"a": k[0], "b": k[1]}); string(got) != want[k] {
					select {
					case errs <- fmt.Sprintf("%v: got %s, want %s", k, got, want[k]):
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestNewCompleterErrors: a selection that does not fit the schema is
// refused when the completer is made, with where and why.
func TestNewCompleterErrors(t *testing.T) {
	schema := completionSchema(t)
	tests := []struct {
		name string
		op   string
		want string
	}{
		{
			name: "unknown field",
			op:   `subscription { shop_orderUpdated(id: 1) { id nope } }`,
			want: `1:46: type Order has no field nope`,
		},
		{
			name: "unknown field in a fragment",
			op:   `subscription { shop_orderUpdated(id: 1) { ...F } } fragment F on Order { customer { nope } }`,
			want: `1:85: type Customer has no field nope`,
		},
		{
			name: "a field of an implementation selected on the interface",
			op:   `subscription { shop_nodeChanged { name } }`,
			want: `1:35: type Node has no field name`,
		},
		{
			name: "a field selected on a union",
			op:   `subscription { shop_discountOffered { code } }`,
			want: `1:39: type Discount has no field code`,
		},
		{
			name: "selection on a leaf",
			op:   `subscription { shop_orderUpdated(id: 1) { id { x } } }`,
			want: `1:43: field Order.id of type ID! is a leaf: it takes no selection set`,
		},
		{
			name: "no selection on an object",
			op:   `subscription { shop_orderUpdated(id: 1) { customer } }`,
			want: `1:43: field Order.customer of type Customer needs a selection set`,
		},
		{
			name: "no selection on the root object",
			op:   `subscription { shop_orderUpdated(id: 1) }`,
			want: `1:16: field Subscription.shop_orderUpdated of type Order needs a selection set`,
		},
		{
			name: "unknown fragment",
			op:   `subscription { shop_orderUpdated(id: 1) { ...Nope } }`,
			want: `1:46: unknown fragment Nope`,
		},
		{
			name: "fragment on an unknown type",
			op:   `subscription { shop_orderUpdated(id: 1) { ... on Nope { id } } }`,
			want: `1:47: fragment on unknown type Nope`,
		},
		{
			name: "fragment on a scalar",
			op:   `subscription { shop_orderUpdated(id: 1) { ... on Int { id } } }`,
			want: `1:47: fragment on Int, which is not an object, interface or union type`,
		},
		{
			name: "fragment cycle",
			op:   `subscription { shop_orderUpdated(id: 1) { ...A } } fragment A on Order { customer { ...B } } fragment B on Customer { ...A }`,
			want: `1:122: fragment A spreads itself`,
		},
		{
			name: "one response name, two fields",
			op:   `subscription { shop_orderUpdated(id: 1) { x: id x: note } }`,
			want: `1:49: response name x selects both id and note: use different aliases`,
		},
		{
			name: "introspection below the root",
			op:   `subscription { shop_orderUpdated(id: 1) { __schema { types { name } } } }`,
			want: `1:43: the introspection field __schema is served only on the query type`,
		},
		{
			name: "@skip without if",
			op:   `subscription { shop_orderUpdated(id: 1) { id @skip } }`,
			want: `1:47: @skip needs an if argument`,
		},
		{
			name: "@include with a string",
			op:   `subscription { shop_orderUpdated(id: 1) { id @include(if: "yes") } }`,
			want: `1:60: @include(if:) takes a Boolean or a variable`,
		},
		{
			name: "@skip on the root field",
			op:   `subscription($x: Boolean!) { shop_orderUpdated(id: 1) @skip(if: $x) { id } }`,
			want: `1:56: @skip on the root field of a subscription is not allowed`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := newTestCompleter(t, schema, tt.op)
			if err == nil {
				t.Fatalf("accepted: %+v", c)
			}
			if err.Error() != tt.want {
				t.Errorf("got  %s\nwant %s", err, tt.want)
			}
		})
	}
}

// TestCompleteFragmentBomb: fragments that double a selection at each level
// are refused, not expanded without end.
func TestCompleteFragmentBomb(t *testing.T) {
	// Each level selects the next one twice: 2^21 fields from 21
	// fragments.
	const levels = 20
	schemaSDL := completionSDL + "\ntype Tree { id: ID! left: Tree right: Tree }\nextend type Subscription { tree: Tree }\n"
	schema, err := gqlparser.LoadSchema(&ast.Source{Name: "schema", Input: schemaSDL})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString(`subscription { shop_tree { ...T0 } }`)
	for i := range levels {
		fmt.Fprintf(&b, " fragment T%d on Tree { id left { ...T%d } right { ...T%d } }", i, i+1, i+1)
	}
	fmt.Fprintf(&b, " fragment T%d on Tree { id }", levels)
	_, err = newTestCompleter(t, schema, b.String())
	if err == nil || !strings.Contains(err.Error(), "has more than 10000 fields") {
		t.Fatalf("got %v", err)
	}
}

// TestCompleteCanonicalStrings: strings come out as encoding/json writes what
// it decodes, HTML escaping aside.
func TestCompleteCanonicalStrings(t *testing.T) {
	for _, s := range []string{
		`""`, `"plain"`, `"\u00e9\u0000\u007f\u2029\""`, `"\ud83d"`, `"\ude00\ud83d\ude00"`, `"\ud83d\u0041"`,
		"\"\xe2\x80\"", "\"\xed\xa0\x80\"", `"\\\/\b\f\n\r\t"`, `"\uD83D\uDE00"`,
	} {
		if got, want := string(appendCanonicalString(nil, []byte(s))), referenceString(t, s); got != want {
			t.Errorf("%q: got %q, want %q", s, got, want)
		}
	}
}

// referenceString is what encoding/json makes of a JSON string, decoded and
// encoded again without HTML escaping.
func referenceString(t testing.TB, raw string) string {
	t.Helper()
	var s string
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// benchCompletionOp and benchCompletionPayload: an order as a shop would
// publish it, with more than the operation selects.
const (
	benchCompletionOp = `subscription($id: ID!) {
  order: shop_orderUpdated(id: $id) {
    __typename id status total count paid placedAt
    customer { id name email vip }
    shipTo { street city }
    items { quantity note product { id title price tags } }
    discount { __typename ... on Coupon { code percent } ... on Product { id title } }
  }
}`
	benchCompletionPayload = `{"id":"ord_8f14e45fceea167a","status":"SHIPPED","total":149.97,"count":3,"paid":true,` +
		`"placedAt":"2025-11-26T09:13:20Z","internalNotes":"not selected, skipped","warehouse":{"id":7,"aisle":"B12"},` +
		`"customer":{"id":1042,"name":"Ada Lovelace","email":"ada@example.com","vip":true,"loyaltyPoints":1200},` +
		`"shipTo":{"street":"12 Analytical Row","city":"London","postcode":"N1 9GU"},` +
		`"items":[{"quantity":1,"note":null,"product":{"id":"p1","title":"Difference Engine kit","price":99.99,"tags":["kit","brass"]}},` +
		`{"quantity":2,"note":"gift wrap","product":{"id":"p2","title":"Punched cards (100)","price":24.99,"tags":["paper"]}}],` +
		`"discount":{"__typename":"Coupon","code":"SPRING","percent":10}}`
)

// BenchmarkComplete measures what is done once per message of a message
// queue, whatever the number of subscribers: the payload completed into a
// result. The encoding/json case decodes the same payload into any, which
// alone is the first step of the other way to do it.
func BenchmarkComplete(b *testing.B) {
	c := mustCompleter(b, completionSchema(b), benchCompletionOp)
	payload := []byte(benchCompletionPayload)
	vars := map[string]any{"id": "ord_8f14e45fceea167a"}
	b.Run("complete", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(payload)))
		for b.Loop() {
			c.complete(payload, vars)
		}
	})
	b.Run("appendComplete", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(payload)))
		var buf []byte
		for b.Loop() {
			buf = c.appendComplete(buf[:0], payload, vars)
		}
	})
	b.Run("encoding-json-decode-only", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(payload)))
		for b.Loop() {
			dec := json.NewDecoder(bytes.NewReader(payload))
			dec.UseNumber()
			var v any
			if err := dec.Decode(&v); err != nil {
				b.Fatal(err)
			}
		}
	})
}
