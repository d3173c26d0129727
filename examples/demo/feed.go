package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// feedSchema is the schema of the demo's NATS upstream, "feed". No GraphQL
// server serves it: gqlpush reads it to know which subjects feed each
// subscription field, and to complete each message's JSON through an
// operation's selection set. @natsSubscribe is gqlpush's own directive.
const feedSchema = `
type Query {
  "Unused: the upstream serves subscriptions only, but a schema has a query type."
  ping: Boolean
}

"Where an order is in its life: PLACED, then PAID, PACKED, SHIPPED and DELIVERED, unless it is CANCELLED on the way."
enum OrderStatus { PLACED PAID PACKED SHIPPED DELIVERED CANCELLED }

type Money { amount: Float! currency: String! }
type Customer { name: String! country: String! }
type Item { sku: String! name: String! qty: Int! price: Money! }

type Order {
  id: ID!
  status: OrderStatus!
  customer: Customer!
  items: [Item!]!
  total: Money!
  "RFC 3339."
  updatedAt: String!
}

type Subscription {
  "Every change of every order: the messages of the subjects orders.<id>.updated, kept in the JetStream stream ORDERS."
  orderUpdated: Order! @natsSubscribe(subjects: ["orders.*.updated"], stream: "ORDERS")
}
`

const (
	// ordersStream keeps the orders' changes. With a stream, gqlpush reads
	// through a JetStream ordered consumer, and a result's event id holds
	// its stream sequence: a client that reconnects with Last-Event-ID
	// gets what it missed from the stream.
	ordersStream = "ORDERS"

	// publishEvery is how often an order changes.
	publishEvery = time.Second

	// natsStartTimeout bounds the start of the embedded NATS server and
	// the creation of the stream.
	natsStartTimeout = 10 * time.Second

	// The stream keeps at most this much; a demo left running stays small.
	streamMaxMsgs  = 10_000
	streamMaxBytes = 16 << 20
)

// orderSubject is the subject of an order's changes.
func orderSubject(id string) string { return "orders." + id + ".updated" }

// A feed is the demo's NATS side: an embedded NATS server with JetStream,
// whose store is a temporary directory, and a connection that publishes to
// it.
type feed struct {
	ns  *server.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	dir string
}

// startFeed starts the NATS server on a random loopback port, with
// JetStream, and creates the stream. It leaves nothing behind on an error.
func startFeed(ctx context.Context) (_ *feed, err error) {
	dir, err := os.MkdirTemp("", "gqlpush-demo-nats-")
	if err != nil {
		return nil, err
	}
	f := &feed{dir: dir}
	defer func() {
		if err != nil {
			f.close()
		}
	}()
	f.ns, err = server.NewServer(&server.Options{
		ServerName: "gqlpush-demo",
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		// The demo handles Ctrl-C, and shuts the server down last.
		NoSigs: true,
		// Without a logger the server prints nothing.
		NoLog:     true,
		JetStream: true,
		StoreDir:  dir,
	})
	if err != nil {
		return f, fmt.Errorf("NATS server: %w", err)
	}
	f.ns.Start() // does not block
	if !f.ns.ReadyForConnections(natsStartTimeout) {
		return f, errors.New("NATS server: not ready for connections")
	}
	if !f.ns.JetStreamEnabled() {
		return f, errors.New("NATS server: JetStream did not start")
	}
	f.nc, err = nats.Connect(f.ns.ClientURL(),
		nats.Name("gqlpush demo publisher"),
		// nats.go buffers what is published while it reconnects: keep
		// that small. The publisher waits for JetStream's ack anyway.
		nats.ReconnectBufSize(64<<10),
	)
	if err != nil {
		return f, fmt.Errorf("connect to NATS: %w", err)
	}
	f.js, err = jetstream.New(f.nc)
	if err != nil {
		return f, err
	}
	cctx, cancel := context.WithTimeout(ctx, natsStartTimeout)
	defer cancel()
	_, err = f.js.CreateStream(cctx, jetstream.StreamConfig{
		Name:     ordersStream,
		Subjects: []string{"orders.>"},
		MaxMsgs:  streamMaxMsgs,
		MaxBytes: streamMaxBytes,
	})
	if err != nil {
		return f, fmt.Errorf("create the JetStream stream %s: %w", ordersStream, err)
	}
	return f, nil
}

// url is the NATS server's client URL, nats://127.0.0.1:port.
func (f *feed) url() string { return f.ns.ClientURL() }

// close closes the publishing connection, shuts the NATS server down, waits
// for it, and removes its store. Its owner has stopped publishing.
func (f *feed) close() {
	if f.nc != nil {
		f.nc.Close()
	}
	if f.ns != nil {
		f.ns.Shutdown()
		f.ns.WaitForShutdown()
	}
	os.RemoveAll(f.dir)
}

// publish makes the shop change an order every interval, and publishes the
// order, as JSON, to its subject, until ctx ends. A failed publish is logged
// and the next one tried.
func (f *feed) publish(ctx context.Context, s *shop, every time.Duration, logger *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		var now time.Time
		select {
		case <-ctx.Done():
			return
		case now = <-t.C:
		}
		o := s.step(now)
		data, err := json.Marshal(o)
		if err == nil {
			pctx, cancel := context.WithTimeout(ctx, every)
			_, err = f.js.Publish(pctx, orderSubject(o.ID), data)
			cancel()
		}
		if err != nil && ctx.Err() == nil {
			logger.Warn("publishing an order failed", "order", o.ID, "err", err)
		}
	}
}

// An order is the JSON value of the field orderUpdated, as the shop
// publishes it. It has fields in another order than operations ask for, and
// one that the schema does not know (warehouse): gqlpush's results follow
// the operation's selection set all the same.
type order struct {
	UpdatedAt time.Time `json:"updatedAt"`
	Status    string    `json:"status"`
	ID        string    `json:"id"`
	Warehouse string    `json:"warehouse"`
	Customer  customer  `json:"customer"`
	Total     money     `json:"total"`
	Items     []item    `json:"items"`
}

type customer struct {
	Country string `json:"country"`
	Name    string `json:"name"`
}

type money struct {
	Currency string  `json:"currency"`
	Amount   float64 `json:"amount"`
}

type item struct {
	SKU   string `json:"sku"`
	Name  string `json:"name"`
	Qty   int    `json:"qty"`
	Price money  `json:"price"`
}

// lifecycle lists an order's statuses in the order it goes through them;
// from the first two, it may be cancelled instead.
var lifecycle = []string{"PLACED", "PAID", "PACKED", "SHIPPED", "DELIVERED"}

const cancelled = "CANCELLED"

// A product is what the shop sells; prices in cents.
type product struct {
	sku, name string
	cents     int
}

var (
	catalog = []product{
		{"KB-101", "Mechanical keyboard", 8990},
		{"MS-202", "Wireless mouse", 2450},
		{"MN-270", "27-inch monitor", 22900},
		{"HS-330", "Headset", 7900},
		{"CB-010", "USB-C cable", 990},
		{"DK-440", "Docking station", 15950},
	}
	customers = []customer{
		{"GB", "Ada"}, {"US", "Grace"}, {"FI", "Linus"}, {"NL", "Edsger"},
		{"US", "Barbara"}, {"DK", "Bjarne"}, {"CH", "Niklaus"}, {"US", "Margaret"},
	}
	warehouses = []string{"AMS-1", "FRA-2", "DUB-1"}
)

const (
	// minOpen and maxOpen bound how many orders are in flight at once.
	minOpen = 2
	maxOpen = 5
	// firstOrder is the number of the shop's first order.
	firstOrder = 1001
)

// A shop is make-believe: a few orders in flight, one of which changes at
// each step. It is not safe for concurrent use.
type shop struct {
	rng  *rand.Rand
	next int      // the number of the next order
	open []*order // in flight
}

func newShop(rng *rand.Rand) *shop {
	return &shop{rng: rng, next: firstOrder}
}

// step places an order or moves one on, at now, and returns it as it then
// is.
func (s *shop) step(now time.Time) order {
	now = now.UTC().Truncate(time.Second)
	if len(s.open) < minOpen || (len(s.open) < maxOpen && s.rng.IntN(3) == 0) {
		o := s.place(now)
		s.open = append(s.open, o)
		return *o
	}
	i := s.rng.IntN(len(s.open))
	o := s.open[i]
	switch at := slices.Index(lifecycle, o.Status); {
	case at <= 1 && s.rng.IntN(12) == 0:
		o.Status = cancelled
	default:
		o.Status = lifecycle[at+1]
	}
	o.UpdatedAt = now
	if o.Status == cancelled || o.Status == lifecycle[len(lifecycle)-1] {
		s.open = slices.Delete(s.open, i, i+1)
	}
	return *o
}

// place makes up a new order of one to three products.
func (s *shop) place(now time.Time) *order {
	o := &order{
		UpdatedAt: now,
		Status:    lifecycle[0],
		ID:        strconv.Itoa(s.next),
		Warehouse: warehouses[s.rng.IntN(len(warehouses))],
		Customer:  customers[s.rng.IntN(len(customers))],
	}
	s.next++
	cents := 0
	for _, i := range s.rng.Perm(len(catalog))[:1+s.rng.IntN(3)] {
		p := catalog[i]
		qty := 1 + s.rng.IntN(3)
		o.Items = append(o.Items, item{SKU: p.sku, Name: p.name, Qty: qty, Price: eur(p.cents)})
		cents += qty * p.cents
	}
	o.Total = eur(cents)
	return o
}

func eur(cents int) money { return money{Currency: "EUR", Amount: float64(cents) / 100} }
