package bus

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/discoverd/discoverd/api"
)

// nopHandler accepts every heartbeat.
type nopHandler struct{ n atomic.Uint64 }

func (h *nopHandler) Heartbeat(_ context.Context, _ string, inst *api.Instance) (*api.Instance, error) {
	h.n.Add(1)
	return inst, nil
}

// quickNopHandler accepts every heartbeat in the receiver (the quick path).
type quickNopHandler struct{ nopHandler }

func (h *quickNopHandler) QuickHeartbeat(string, *api.Instance) (bool, error) {
	h.n.Add(1)
	return true, nil
}

func (h *quickNopHandler) QuickHeartbeatUnchanged(_, id string, same func(*api.Instance) bool) (bool, error) {
	if !same(&benchStored) {
		return false, nil
	}
	h.n.Add(1)
	return true, nil
}

// benchStored is the registered instance benchPayload heartbeats.
var benchStored = api.Instance{ID: "web-123", Addr: "10.1.2.3:8080", Proto: "http", Meta: map[string]string{"zone": "eu-1"}}

var benchPayload = []byte(`{"id":"web-123","addr":"10.1.2.3:8080","proto":"http","meta":{"zone":"eu-1"}}`)

// BenchmarkHeartbeatHandle is the receiver's per-message work for a
// heartbeat the quick path takes, without NATS.
func BenchmarkHeartbeatHandle(b *testing.B) {
	h := &quickNopHandler{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hs := &HeartbeatSubscriber{h: h, quick: h, ctx: ctx}
	r := newReceiver(hs)
	msg := &nats.Msg{Subject: HeartbeatSubject("web"), Data: benchPayload}
	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayload)))
	for b.Loop() {
		r.handle(msg)
	}
	if hs.Malformed() != 0 {
		b.Fatal("malformed")
	}
}

func BenchmarkDecodeInstance(b *testing.B) {
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var inst api.Instance
			if err := api.DecodeInstance(benchPayload, &inst); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var inst api.Instance
			if err := json.Unmarshal(benchPayload, &inst); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkHeartbeatThroughput sends heartbeats from TCP clients through the
// embedded server to a subscriber on the in-process connection, and reports
// heartbeats per second. The publishers keep at most window heartbeats in
// flight, as many independent services would, rather than outrunning the
// subscriber (they share its CPUs here): past 48 MiB queued for the node's
// connection the server drops messages instead of slowing publishers.
func BenchmarkHeartbeatThroughput(b *testing.B) {
	s := startServer(b, ServerConfig{})
	h := &quickNopHandler{}
	sub, err := SubscribeHeartbeats(inProc(b, s), "bench", 4, h, testLogger(b))
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	const (
		publishers = 4
		window     = 64 << 10
		batch      = 256
	)
	conns := make([]*nats.Conn, publishers)
	for i := range conns {
		conns[i] = dial(b, s)
	}
	subject := HeartbeatSubject("web")
	var sent atomic.Uint64
	per := b.N/publishers + 1
	total := uint64(per * publishers)
	b.ResetTimer()
	start := time.Now()
	done := make(chan struct{}, publishers)
	for _, nc := range conns {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := 0; i < per; i += batch {
				for sent.Load() > h.n.Load()+window {
					time.Sleep(50 * time.Microsecond)
				}
				n := min(batch, per-i)
				for range n {
					if err := nc.Publish(subject, benchPayload); err != nil {
						b.Error(err)
						return
					}
				}
				sent.Add(uint64(n))
			}
			nc.Flush()
		}()
	}
	for range publishers {
		<-done
	}
	deadline := time.Now().Add(time.Minute)
	for h.n.Load() < total && time.Now().Before(deadline) {
		time.Sleep(100 * time.Microsecond)
	}
	el := time.Since(start)
	b.StopTimer()
	if got := h.n.Load(); got < total {
		b.Errorf("handled %d of %d (dropped in the client: %d)", got, total, sub.Dropped())
	}
	b.ReportMetric(float64(h.n.Load())/el.Seconds(), "heartbeats/s")
}
