package client

import (
	"context"

	"github.com/discoverd/discoverd/api"
)

// Leaders returns a channel of a service's leaders: first the current one,
// then one value at each change of leadership, nil meaning no leader. A
// leader's Index is its fencing token: a higher index is a newer
// leadership. It never sends the same leadership (instance id and index)
// twice in a row, and if the reader falls behind it skips to the latest
// leader rather than queueing old ones.
//
// It is built on a Watcher of the service's leader stream, so it survives
// disconnects, restarts and failover the same way. The channel is closed
// when ctx ends. A service that does not exist yet is watched like one with
// no leader: the first value is nil, and its leaders follow once it is
// created.
func (c *Client) Leaders(ctx context.Context, service string) (<-chan *api.Instance, error) {
	w, err := c.watch(ctx, service, leaderKinds)
	if err != nil {
		return nil, err
	}
	out := make(chan *api.Instance)
	go func() {
		defer close(out)
		defer w.Close()
		var (
			pending    *api.Instance
			hasPending bool
			last       *api.Instance
			sent       bool
		)
		for {
			var send chan<- *api.Instance
			if hasPending {
				send = out
			}
			select {
			case ev, ok := <-w.Events():
				if !ok {
					return
				}
				switch ev.Kind {
				case api.EventLeader:
					pending = ev.Instance
					hasPending = !sent || !sameLeadership(last, pending)
				case api.EventCurrent:
					// A prelude holds a leader event only when there is a
					// leader: current with none before it means no leader
					// (or no service yet).
					if !sent && !hasPending {
						pending, hasPending = nil, true
					}
				}
			case send <- pending:
				last, sent, hasPending = pending, true, false
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
