package bus

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/discoverd/discoverd/auth"
)

// NodeUser is the NATS user of the nodes themselves: the daemon's own
// in-process connection and the leafnodes of proxies. It may do everything,
// and it alone may publish events.
const NodeUser = "discoverd-node"

// ServerAuth turns NATS auth on: every token is a NATS user with the subject
// permissions of its role. A client logs in with user = the token's name and
// password = its secret, or with the secret alone as a NATS token.
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
		users = append(users, u)
	}
	return users
}

// authenticator is the server's client and leafnode authentication: it
// finds the user by secret (through its SHA-256, compared in constant time),
// so a client needs only its token, and it swaps users at runtime without a
// server reload.
type authenticator struct {
	state atomic.Pointer[authState]
}

type authState struct {
	bySecret map[[sha256.Size]byte]*server.User
	byName   map[string]*server.User
}

func newAuthState(a *ServerAuth) (*authState, error) {
	if a.NodePassword == "" {
		return nil, errors.New("bus: NATS auth needs a node password")
	}
	st := &authState{bySecret: map[[sha256.Size]byte]*server.User{}, byName: map[string]*server.User{}}
	for _, u := range natsUsers(a) {
		st.bySecret[sha256.Sum256([]byte(u.Password))] = u
		st.byName[u.Username] = u
	}
	return st, nil
}

// Check implements server.Authentication.
func (a *authenticator) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	secret := o.Password
	if secret == "" {
		secret = o.Token
	}
	if secret == "" {
		return false
	}
	h := sha256.Sum256([]byte(secret))
	u := a.state.Load().bySecret[h]
	if u == nil {
		return false
	}
	uh := sha256.Sum256([]byte(u.Password))
	if subtle.ConstantTimeCompare(h[:], uh[:]) != 1 || (o.Username != "" && o.Username != u.Username) {
		return false
	}
	c.RegisterUser(&server.User{Username: u.Username, Permissions: u.Permissions})
	return true
}

// swap puts a's users in force and returns the names whose access changed
// (removed, or a new secret or permissions).
func (a *authenticator) swap(next *authState) []string {
	prev := a.state.Swap(next)
	if prev == nil {
		return nil
	}
	var changed []string
	for name, old := range prev.byName {
		u := next.byName[name]
		if u == nil || u.Password != old.Password || !samePermissions(u.Permissions, old.Permissions) {
			changed = append(changed, name)
		}
	}
	return changed
}

func samePermissions(a, b *server.Permissions) bool {
	if a == nil || b == nil {
		return a == b
	}
	return sameSubjects(a.Publish, b.Publish) && sameSubjects(a.Subscribe, b.Subscribe)
}

func sameSubjects(a, b *server.SubjectPermission) bool {
	if a == nil || b == nil {
		return a == b
	}
	return slices.Equal(a.Allow, b.Allow) && slices.Equal(a.Deny, b.Deny)
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
