package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
)

// The README's NATS program, written with nats.go alone: its code is the
// README's snippet line for line (TestREADMEGoSnippets), and
// TestNATSSnippet runs it against a live and a stopped server.

// runOrders registers orders-1 in service orders over NATS, keeps it alive
// and logs when it leads, until ctx ends; then it expires a TTL later.
func runOrders(ctx context.Context, natsURL string) error {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	me, err := json.Marshal(map[string]string{"id": "orders-1", "addr": "10.0.0.7:9000", "proto": "http"})
	if err != nil {
		return err
	}

	// Follow the leader before registering, to see our own leadership. A
	// newer leadership always has a higher index (its fencing token).
	sub, err := nc.Subscribe("discoverd.events.orders.leader", func(m *nats.Msg) {
		var ev struct {
			Instance *struct{ ID string } `json:"instance"`
			Index    uint64               `json:"index"`
		}
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			log.Printf("leader event %q: %v", m.Data, err)
			return
		}
		if ev.Instance != nil && ev.Instance.ID == "orders-1" {
			log.Printf("leading since index %d", ev.Index)
		}
	})
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()

	// Register with a request, to see errors such as an unknown service.
	msg, err := nc.Request("discoverd.heartbeat.orders", me, time.Second)
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	if string(msg.Data) != `{"ok":true}` {
		return fmt.Errorf("register: %s", msg.Data)
	}

	// Heartbeat well within the TTL (10 s by default) until ctx ends.
	tick := time.NewTicker(3 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := nc.Publish("discoverd.heartbeat.orders", me); err != nil {
				return err
			}
		}
	}
}

// The README's main for runOrders: it runs until Ctrl-C.
func Example_nats() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runOrders(ctx, "nats://127.0.0.1:4222"); err != nil {
		log.Fatal(err)
	}
}
