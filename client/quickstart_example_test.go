package client_test

import (
	"context"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/discoverd/discoverd/client"
)

// The README's quick-start program: register this process as an instance of
// "web", print each leader change, and deregister on Ctrl-C. Its body is the
// README's snippet line for line (TestREADMEGoSnippets), and
// TestQuickStartRuns runs it.
func Example_quickStart() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c := client.New() // $DISCOVERD, else 127.0.0.1:1111
	hb, err := c.AddServiceAndRegister(ctx, "web", "127.0.0.1:8080", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer hb.Close() // heartbeats until here, then deregisters (after Ctrl-C too)
	leaders, err := c.Leaders(ctx, "web")
	if err != nil {
		log.Print(err)
		return
	}
	for l := range leaders { // until Ctrl-C
		log.Printf("leader: %v (am I? %v)", l, l != nil && l.ID == hb.ID())
	}
}
