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
func (v *voter) runExpirer() {
	defer v.wg.Done()
	t := time.NewTicker(v.n.cfg.ExpiryCheckInterval)
	defer t.Stop()
	var stale []hbKey
	for {
		select {
		case <-v.stopping:
			return
		case <-t.C:
		}
		if v.leaderSince.Load() == 0 {
			continue
		}
		stale = v.expireOnce(stale[:0])
	}
}

func (v *voter) expireOnce(stale []hbKey) []hbKey {
	n := v.n
	cutoff := time.Now().Add(-n.cfg.InstanceTTL).UnixNano()
	stale = n.heartbeats.stale(cutoff, stale)
	if len(stale) == 0 {
		return stale
	}
	var batch []fsm.ExpiredInstance
	for _, k := range stale {
		inst, err := v.fsm.Instance(k.service, k.id)
		if err != nil || inst == nil {
			// Gone already (the down event raced this scan).
			n.heartbeats.remove(k)
			continue
		}
		if e := n.log.Debug(); e.Enabled() {
			// Which instance, and how long it went unheard: what tells an
			// instance that stopped from a heartbeat that never arrived.
			last, _ := n.heartbeats.lastSeen(k)
			e.Str("service", k.service).Str("id", k.id).Dur("unheard_for", time.Duration(time.Now().UnixNano()-last)).Msg("expiring instance")
		}
		batch = append(batch, fsm.ExpiredInstance{Service: k.service, ID: k.id, Index: inst.Index})
		if len(batch) == maxExpiryBatch {
			v.expire(batch)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		v.expire(batch)
	}
	return stale
}

func (v *voter) expire(batch []fsm.ExpiredInstance) {
	n := v.n
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.InstanceTTL)
	defer cancel()
	cmd := fsm.MustEncode(fsm.CmdExpireInstances, &fsm.ExpireInstances{Instances: batch})
	res, err := v.applyLocal(ctx, cmd)
	if err != nil {
		n.log.Warn().Err(err).Int("instances", len(batch)).Msg("expiring instances")
		return
	}
	n.expired.Add(uint64(res.Expired))
	n.log.Debug().Int("instances", res.Expired).Int("checked", len(batch)).Msg("expired instances")
}
