// Package natsauth is the one definition of the NATS users linkpop's
// components connect as and of what each may publish and subscribe to: the
// embedded server of `origin -dev`, the test servers (internal/natstest)
// and the production configuration in deploy/nats/ all take their
// permissions from here. It imports only the standard library, so the
// server side (replication/devserver) and the client side (replication)
// share it without linking each other.
//
// The roles:
//
//   - operator: everything; the only role that may create, update, purge or
//     delete streams (`origin streams`, or the origin's embedded dev
//     server).
//   - origin: the outbox relay. Publishes link changes and its own stream's
//     keys and idempotency records, reads both streams' info and last
//     message (the relay's chain anchor), follows both through ordered
//     consumers as a standby, and reads and writes the HA lease key.
//   - edge: reads the change stream through ephemeral pull consumers it
//     creates and deletes, and publishes click batches. Nothing else.
//   - collector: consumes the click stream through its durable consumer and
//     acknowledges what it applied. Nothing else.
//
// Every role but the operator receives replies only on its own inbox
// prefix (InboxPrefix), so no role can read the replies, and with them the
// messages a pull consumer delivers, of another.
package natsauth

import (
	"fmt"
	"slices"
	"strings"
)

// Role is a kind of NATS client.
type Role string

// The roles, in the order deploy/nats/ lists them.
const (
	Operator  Role = "operator"
	Origin    Role = "origin"
	Edge      Role = "edge"
	Collector Role = "collector"
)

// Roles lists every role.
var Roles = []Role{Operator, Origin, Edge, Collector}

// Subjects names what the permissions cover. A zero field takes the
// default the replication package uses.
type Subjects struct {
	// LinkStream is the change stream. The default is "LINKPOP_LINKS".
	LinkStream string
	// LinkPrefix: link changes go to "<prefix>.<code>". The default is
	// "linkpop.links".
	LinkPrefix string
	// ClickStream is the click stream. The default is "LINKPOP_CLICKS".
	ClickStream string
	// ClickPrefix: click batches go to "<prefix>.<edge>". The default is
	// "linkpop.clicks".
	ClickPrefix string
	// OriginStream is the origin's stream of API keys and idempotency
	// records. The default is "LINKPOP_ORIGIN".
	OriginStream string
	// OriginPrefix: its events go to "<prefix>.key.<id>" and
	// "<prefix>.idem.<hash>". The default is "linkpop.origin".
	OriginPrefix string
	// LeaseBucket is the KV bucket of the origin HA leader lease. The
	// default is "LINKPOP_LEASE".
	LeaseBucket string
}

func (s Subjects) withDefaults() Subjects {
	if s.LinkStream == "" {
		s.LinkStream = "LINKPOP_LINKS"
	}
	if s.LinkPrefix == "" {
		s.LinkPrefix = "linkpop.links"
	}
	if s.ClickStream == "" {
		s.ClickStream = "LINKPOP_CLICKS"
	}
	if s.ClickPrefix == "" {
		s.ClickPrefix = "linkpop.clicks"
	}
	if s.OriginStream == "" {
		s.OriginStream = "LINKPOP_ORIGIN"
	}
	if s.OriginPrefix == "" {
		s.OriginPrefix = "linkpop.origin"
	}
	if s.LeaseBucket == "" {
		s.LeaseBucket = "LINKPOP_LEASE"
	}
	return s
}

// Permissions is what a role may publish and subscribe to. A nil list
// means everything (the operator).
type Permissions struct {
	Publish   []string
	Subscribe []string
}

// InboxPrefix is the prefix of the role's reply subjects (nats.go's
// CustomInboxPrefix); its permissions let it subscribe to nothing else.
// The operator uses the client's default, "_INBOX".
func (r Role) InboxPrefix() string {
	if r == Operator {
		return ""
	}
	return "_INBOX_" + string(r)
}

// Valid reports whether r is one of Roles.
func (r Role) Valid() bool { return slices.Contains(Roles, r) }

// Permissions returns what r may do on the streams s names.
//
// The JetStream API subjects each role needs (nats-server's api.go, and
// the nats.go jetstream calls linkpop makes):
//
//   - $JS.API.STREAM.INFO.<stream>: jetstream's Stream() and the edge's
//     and relay's lag and tail checks;
//   - $JS.API.STREAM.MSG.GET.<stream>: the relay's read of the stream's
//     last message from the leader;
//   - $JS.API.CONSUMER.CREATE.<stream>.<consumer>[.<filter>]: creating (or
//     for a durable, updating) a consumer;
//   - $JS.API.CONSUMER.INFO / DELETE.<stream>.<consumer>;
//   - $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>: a pull request; the
//     messages come back on the requester's inbox;
//   - $JS.ACK.<stream>.>: acknowledgements (only the collector acks: the
//     edge's consumers are AckNone).
//
// Publishing to a stream's subjects stores a message in it; replies of
// publish acks and API requests come to the inbox.
func (r Role) Permissions(s Subjects) Permissions {
	s = s.withDefaults()
	api := func(verb, stream string) string { return "$JS.API." + verb + "." + stream }
	inbox := []string{r.InboxPrefix() + ".>"}
	switch r {
	case Origin:
		kv := "KV_" + s.LeaseBucket
		return Permissions{
			Publish: []string{
				s.LinkPrefix + ".*",
				api("STREAM.INFO", s.LinkStream),
				api("STREAM.MSG.GET", s.LinkStream),
				// Its own stream of keys and idempotency records.
				s.OriginPrefix + ".>",
				api("STREAM.INFO", s.OriginStream),
				api("STREAM.MSG.GET", s.OriginStream),
				// A standby (and `origin restore`) follows both
				// streams through ordered consumers.
				api("CONSUMER.CREATE", s.LinkStream) + ".>",
				api("CONSUMER.INFO", s.LinkStream) + ".*",
				api("CONSUMER.DELETE", s.LinkStream) + ".*",
				api("CONSUMER.MSG.NEXT", s.LinkStream) + ".*",
				api("CONSUMER.CREATE", s.OriginStream) + ".>",
				api("CONSUMER.INFO", s.OriginStream) + ".*",
				api("CONSUMER.DELETE", s.OriginStream) + ".*",
				api("CONSUMER.MSG.NEXT", s.OriginStream) + ".*",
				// The HA leader lease: its KV bucket's key, read and
				// written by compare-and-set (the bucket itself is
				// the operator's).
				"$KV." + s.LeaseBucket + ".>",
				api("STREAM.INFO", kv),
				api("STREAM.MSG.GET", kv),
				api("DIRECT.GET", kv),
				api("DIRECT.GET", kv) + ".>",
			},
			Subscribe: inbox,
		}
	case Edge:
		return Permissions{
			Publish: []string{
				s.ClickPrefix + ".*",
				api("STREAM.INFO", s.LinkStream),
				api("STREAM.INFO", s.ClickStream),
				api("CONSUMER.CREATE", s.LinkStream) + ".>",
				api("CONSUMER.INFO", s.LinkStream) + ".*",
				api("CONSUMER.DELETE", s.LinkStream) + ".*",
				api("CONSUMER.MSG.NEXT", s.LinkStream) + ".*",
			},
			Subscribe: inbox,
		}
	case Collector:
		return Permissions{
			Publish: []string{
				api("STREAM.INFO", s.ClickStream),
				api("CONSUMER.CREATE", s.ClickStream) + ".>",
				api("CONSUMER.INFO", s.ClickStream) + ".*",
				api("CONSUMER.MSG.NEXT", s.ClickStream) + ".*",
				"$JS.ACK." + s.ClickStream + ".>",
			},
			Subscribe: inbox,
		}
	}
	return Permissions{} // Operator: everything
}

// User is one NATS user: a role and its password (plain, or a bcrypt hash
// as `nats server passwd` makes, for a server configuration).
type User struct {
	Role     Role
	Password string
}

// AuthorizationConfig renders the nats-server `authorization { users: [...] }`
// block granting each user its role's permissions on s: what deploy/nats/
// documents and the process test servers load.
func AuthorizationConfig(users []User, s Subjects) string {
	var b strings.Builder
	b.WriteString("authorization {\n  users: [\n")
	for _, u := range users {
		fmt.Fprintf(&b, "    { user: %q, password: %q", string(u.Role), u.Password)
		p := u.Role.Permissions(s)
		if p.Publish != nil {
			fmt.Fprintf(&b, ",\n      permissions: {\n        publish: { allow: %s }\n        subscribe: { allow: %s }\n      }\n    ",
				quoteList(p.Publish), quoteList(p.Subscribe))
		}
		b.WriteString(" }\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
