package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/discoverd/discoverd/client"
)

// Register an instance of a service and keep it alive until interrupted.
// (It needs a running discoverd, so it has no checked output.)
func ExampleClient_Register() {
	c := client.New("127.0.0.1:1111")
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.AddService(ctx, "web", nil); err != nil && !client.IsExists(err) {
		log.Fatal(err)
	}
	hb, err := c.Register(ctx, "web", "10.0.0.1:8080", map[string]string{"zone": "a"},
		client.OnError(func(err error) { log.Printf("heartbeats failing: %v", err) }))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("registered %s (index %d)\n", hb.ID(), hb.Instance().Index)

	sig, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	<-sig.Done()
	if err := hb.Close(); err != nil { // deregisters
		log.Print(err)
	}
}

// Follow the leader of a service. Each value is a new leadership (nil: no
// leader); its Index is a fencing token.
func ExampleClient_Leaders() {
	c := client.New() // $DISCOVERD, else 127.0.0.1:1111
	defer c.Close()

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	leaders, err := c.Leaders(ctx, "web")
	if err != nil {
		log.Fatal(err)
	}
	for l := range leaders {
		if l == nil {
			fmt.Println("no leader")
			continue
		}
		fmt.Printf("leader %s at %s (fencing token %d)\n", l.ID, l.Addr, l.Index)
	}
}

// Watch every event of a service; the view survives server restarts.
func ExampleClient_Watch() {
	c := client.NewWithOptions([]string{"10.0.0.1:1111", "10.0.0.2:1111"}, client.WithNATS())
	defer c.Close()

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	w, err := c.Watch(ctx, "web")
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	for ev := range w.Events() {
		fmt.Println(ev.Kind, ev.Index, ev.Instance)
	}
}
