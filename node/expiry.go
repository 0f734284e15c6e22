package node

import (
	"context"
	"time"

	"github.com/discoverd/discoverd/fsm"
)

// maxExpiryBatch bounds one expiry entry, so a mass expiry after an outage
// is written as a few moderate log entries rather than one huge one.
const maxExpiryBatch = 5000

// runExpirer removes, on the leader, the instances not heard from within the
// TTL, checking every ExpiryCheckInterval and writing each check's expiries
// as one command.
func (n *Node) runExpirer() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.ExpiryCheckInterval)
	defer t.Stop()
	var stale []hbKey
	for {
		select {
		case <-n.closing:
			return
		case <-t.C:
		}
		if n.leaderSince.Load() == 0 {
			continue
		}
		stale = n.expireOnce(stale[:0])
	}
}

func (n *Node) expireOnce(stale []hbKey) []hbKey {
	cutoff := time.Now().Add(-n.cfg.InstanceTTL).UnixNano()
	stale = n.heartbeats.stale(cutoff, stale)
	if len(stale) == 0 {
		return stale
	}
	var batch []fsm.ExpiredInstance
	for _, k := range stale {
		inst, err := n.fsm.Instance(k.service, k.id)
		if err != nil || inst == nil {
			// Gone already (the down event raced this scan).
			n.heartbeats.remove(k)
			continue
		}
		batch = append(batch, fsm.ExpiredInstance{Service: k.service, ID: k.id, Index: inst.Index})
		if len(batch) == maxExpiryBatch {
			n.expire(batch)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		n.expire(batch)
	}
	return stale
}

func (n *Node) expire(batch []fsm.ExpiredInstance) {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.InstanceTTL)
	defer cancel()
	if _, err := n.apply(ctx, fsm.CmdExpireInstances, &fsm.ExpireInstances{Instances: batch}); err != nil {
		n.log.Warn().Err(err).Int("instances", len(batch)).Msg("expiring instances")
		return
	}
	n.log.Debug().Int("instances", len(batch)).Msg("expired instances")
}
