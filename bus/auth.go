package bus

import (
	"crypto/tls"
	"net/url"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/auth"
)

// NodeUser is the NATS user of the nodes themselves: the daemon's own
// in-process connection and the leafnodes of proxies. It may do everything,
// and it alone may publish events.
const NodeUser = "discoverd-node"

// ServerAuth turns NATS auth on: every token is a NATS user with the subject
// permissions of its role. A client logs in with user = the token's name and
// password = its secret, or, knowing only the secret, with user =
// api.NATSTokenUser(secret) and the same password.
type ServerAuth struct {
	Tokens []*auth.Token
	// NodePassword is NodeUser's password. Every node of a cluster uses the
	// same one, as proxies' leafnodes log in with it.
	NodePassword string
}

// natsUsers maps tokens to NATS users with DESIGN.md's permissions:
//   - read subscribes to discoverd.events.> (and _INBOX.> for replies);
//   - service publishes discoverd.heartbeat.{its services} and subscribes to
//     discoverd.events.{its services}.> and _INBOX.>;
//   - admin does everything but publish events;
//   - only NodeUser publishes on discoverd.events.>.
//
// NATS subjects have no prefix wildcard: a service pattern "web-*" cannot be
// said as a subject, so on NATS a service token covers the names it lists
// exactly, and "*" alone covers every service.
func natsUsers(a *ServerAuth) []*server.User {
	users := []*server.User{{Username: NodeUser, Password: a.NodePassword}}
	noEvents := &server.SubjectPermission{Deny: []string{EventsPrefix + ">"}}
	for _, t := range a.Tokens {
		u := &server.User{Username: t.Name, Password: t.Secret}
		switch t.Role {
		case auth.RoleAdmin:
			u.Permissions = &server.Permissions{Publish: noEvents}
		case auth.RoleRead:
			u.Permissions = &server.Permissions{
				Publish:   &server.SubjectPermission{Deny: []string{">"}},
				Subscribe: &server.SubjectPermission{Allow: []string{EventsPrefix + ">", "_INBOX.>"}},
			}
		case auth.RoleService:
			var pub, sub []string
			for _, p := range t.Services {
				if p == "*" {
					pub = append(pub, HeartbeatPrefix+"*")
					sub = append(sub, EventsPrefix+">")
					continue
				}
				if strings.HasSuffix(p, "*") {
					continue
				}
				pub = append(pub, HeartbeatPrefix+p)
				sub = append(sub, EventsPrefix+p+".>")
			}
			if len(pub) == 0 {
				// Only prefixes: nothing to publish on NATS.
				pub = []string{"_discoverd.nothing"}
			}
			u.Permissions = &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: pub, Deny: []string{EventsPrefix + ">"}},
				Subscribe: &server.SubjectPermission{Allow: append(sub, "_INBOX.>")},
			}
		default:
			continue
		}
		// The same user under the name a client derives from the secret
		// alone (client.WithToken).
		alias := *u
		alias.Username = api.NATSTokenUser(t.Secret)
		users = append(users, u, &alias)
	}
	return users
}

// withNodeUser puts NodeUser's credentials into leafnode remote URLs.
func withNodeUser(urls []*url.URL, password string) {
	for _, u := range urls {
		u.User = url.UserPassword(NodeUser, password)
	}
}

// ServerTLS is the TLS of the embedded server.
type ServerTLS struct {
	// Client is the server side of the client port.
	Client *tls.Config
	// Peer is mutual TLS for routes and leafnodes: it accepts only
	// certificates from the cluster's CA and presents the node's own when
	// it dials.
	Peer *tls.Config
}
