package gqlpushtest

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"time"

	graphql "github.com/graph-gophers/graphql-go"
)

// ChatSchema is the schema of the built-in upstream: a chat whose messages
// are pushed to messageCreated subscribers, and a countdown that completes.
const ChatSchema = `
schema {
  query: Query
  mutation: Mutation
  subscription: Subscription
}

type Query {
  "The messages posted so far, oldest first."
  messages(room: String): [Message!]!
  "How many messages were posted so far, to one room or to all."
  messageCount(room: String): Int!
}

type Mutation {
  "Posts a message to a room (default general) and pushes it to subscribers."
  postMessage(content: String!, room: String): Message!
}

type Subscription {
  "Every message posted from now on, to one room or to all, that passes the filter."
  messageCreated(room: String, filter: MessageFilter): Message!
  "Counts down from the given number to 1, then completes."
  countdown(from: Int!): Int!
}

"Conditions on messages; every given one must hold."
input MessageFilter {
  "Only messages to these rooms."
  rooms: [String!]
  "Only messages with at least this many bytes of content."
  minLength: Int = 0
}

type Message {
  id: ID!
  content: String!
  room: String!
  "When the message was posted, in Unix nanoseconds."
  sentAt: String!
}
`

// DefaultRoom is the room of a message posted without one.
const DefaultRoom = "general"

// A ChatMessage is one chat message.
type ChatMessage struct {
	ID      string
	Content string
	Room    string
	SentAt  time.Time
}

// Chat is the resolver of [ChatSchema]. Post a message with [Chat.Post]; every
// messageCreated subscription of its room receives it.
type Chat struct {
	mu       sync.Mutex
	nextID   int
	messages []ChatMessage // the last MaxHistory
	// Subscriptions to one room are indexed by it, so that a post costs
	// what its room's subscribers cost; the others (all rooms, or a
	// filter) are checked one by one.
	byRoom map[string]map[*chatSub]struct{}
	others map[*chatSub]struct{}
}

// MaxHistory is how many messages a Chat keeps for the messages query.
const MaxHistory = 1000

type chatSub struct {
	room      string   // "" for all rooms
	rooms     []string // nil for all rooms
	minLength int
	ch        chan *messageResolver
	ctx       context.Context
}

func (s *chatSub) wants(m ChatMessage) bool {
	if s.room != "" && s.room != m.Room {
		return false
	}
	if s.rooms != nil && !slices.Contains(s.rooms, m.Room) {
		return false
	}
	return len(m.Content) >= s.minLength
}

// NewChat returns an empty chat.
func NewChat() *Chat {
	return &Chat{byRoom: make(map[string]map[*chatSub]struct{}), others: make(map[*chatSub]struct{})}
}

// NewChatSchema parses [ChatSchema] with chat as its resolver.
func NewChatSchema(chat *Chat) *graphql.Schema {
	return graphql.MustParseSchema(ChatSchema, &chatResolver{chat: chat},
		graphql.UseFieldResolvers(),
		graphql.SubscribeResolverTimeout(10*time.Second))
}

// Post adds a message to a room ("" means DefaultRoom) and pushes it to its
// subscribers. It waits while a subscriber's buffer is full, so no message is
// lost; it returns the message.
func (c *Chat) Post(room, content string) ChatMessage {
	if room == "" {
		room = DefaultRoom
	}
	c.mu.Lock()
	c.nextID++
	m := ChatMessage{ID: strconv.Itoa(c.nextID), Content: content, Room: room, SentAt: time.Now()}
	if len(c.messages) == MaxHistory {
		c.messages = append(c.messages[:0], c.messages[1:]...)
	}
	c.messages = append(c.messages, m)
	var targets []*chatSub
	for s := range c.byRoom[room] {
		if s.wants(m) {
			targets = append(targets, s)
		}
	}
	for s := range c.others {
		if s.wants(m) {
			targets = append(targets, s)
		}
	}
	c.mu.Unlock()
	r := &messageResolver{m: m}
	for _, s := range targets {
		select {
		case s.ch <- r:
		case <-s.ctx.Done():
		}
	}
	return m
}

// Subscribers reports how many messageCreated subscriptions are live.
func (c *Chat) Subscribers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.others)
	for _, set := range c.byRoom {
		n += len(set)
	}
	return n
}

// add and remove keep the index; the caller holds c.mu.
func (c *Chat) add(s *chatSub) {
	if s.room == "" || s.rooms != nil || s.minLength > 0 {
		c.others[s] = struct{}{}
		return
	}
	set := c.byRoom[s.room]
	if set == nil {
		set = make(map[*chatSub]struct{})
		c.byRoom[s.room] = set
	}
	set[s] = struct{}{}
}

func (c *Chat) remove(s *chatSub) {
	delete(c.others, s)
	if set := c.byRoom[s.room]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(c.byRoom, s.room)
		}
	}
}

type chatResolver struct{ chat *Chat }

func (r *chatResolver) Messages(args struct{ Room *string }) []*messageResolver {
	r.chat.mu.Lock()
	defer r.chat.mu.Unlock()
	var out []*messageResolver
	for _, m := range r.chat.messages {
		if args.Room == nil || *args.Room == m.Room {
			out = append(out, &messageResolver{m: m})
		}
	}
	return out
}

func (r *chatResolver) MessageCount(args struct{ Room *string }) int32 {
	r.chat.mu.Lock()
	defer r.chat.mu.Unlock()
	var n int32
	for _, m := range r.chat.messages {
		if args.Room == nil || *args.Room == m.Room {
			n++
		}
	}
	return n
}

func (r *chatResolver) PostMessage(args struct {
	Content string
	Room    *string
}) *messageResolver {
	room := ""
	if args.Room != nil {
		room = *args.Room
	}
	return &messageResolver{m: r.chat.Post(room, args.Content)}
}

type messageFilter struct {
	Rooms     *[]string
	MinLength int32 // has a default, so never absent
}

func (r *chatResolver) MessageCreated(ctx context.Context, args struct {
	Room   *string
	Filter *messageFilter
}) <-chan *messageResolver {
	s := &chatSub{ch: make(chan *messageResolver, 1024), ctx: ctx}
	if args.Room != nil {
		s.room = *args.Room
	}
	if f := args.Filter; f != nil {
		if f.Rooms != nil {
			s.rooms = *f.Rooms
		}
		s.minLength = int(f.MinLength)
	}
	c := r.chat
	c.mu.Lock()
	c.add(s)
	c.mu.Unlock()
	// Unregister when the subscription ends. context.AfterFunc runs the
	// removal without a goroutine waiting for it.
	context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.remove(s)
		c.mu.Unlock()
	})
	return s.ch
}

func (r *chatResolver) Countdown(ctx context.Context, args struct{ From int32 }) <-chan int32 {
	n := max(args.From, 0)
	ch := make(chan int32, n)
	for i := n; i > 0; i-- {
		ch <- i
	}
	close(ch)
	return ch
}

type messageResolver struct{ m ChatMessage }

func (r *messageResolver) ID() graphql.ID  { return graphql.ID(r.m.ID) }
func (r *messageResolver) Content() string { return r.m.Content }
func (r *messageResolver) Room() string    { return r.m.Room }
func (r *messageResolver) SentAt() string  { return strconv.FormatInt(r.m.SentAt.UnixNano(), 10) }
