package client_test

import (
	"context"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/discoverd/discoverd/client"
)

// Register an instance only while its health endpoint answers 2xx, and log
// each change of its check's state. (It needs a running discoverd, so it has
// no checked output.)
func ExampleWithCheck() {
	c := client.New() // $DISCOVERD, else 127.0.0.1:1111
	defer c.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Listed only while GET /healthz answers 2xx: registered after 2 passes in
	// a row, deregistered (and no heartbeats) after 3 failures in a row.
	hb, err := c.Register(ctx, "web", "127.0.0.1:8080", nil,
		client.WithCheck(client.HTTPCheck("http://127.0.0.1:8080/healthz"),
			client.CheckInterval(5*time.Second), client.CheckTimeout(2*time.Second)))
	if err != nil {
		log.Fatal(err)
	}
	defer hb.Close() // stops the checks and deregisters
	for {
		select {
		case st := <-hb.Changes(): // passing, or failing with the check's error
			log.Printf("%s: %v (index %d)", hb.ID(), st, hb.Instance().Index)
		case <-ctx.Done(): // Ctrl-C
			return
		}
	}
}
