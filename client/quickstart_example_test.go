package client_test

import (
	"context"
	"log"

	"github.com/discoverd/discoverd/client"
)

// The README's quick-start program: register this process as an instance of
// "web" and print each leader change. Kept here so that it always compiles.
func Example_quickStart() {
	c := client.New() // $DISCOVERD, else 127.0.0.1:1111
	ctx := context.Background()
	hb, err := c.AddServiceAndRegister(ctx, "web", "127.0.0.1:8080", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer hb.Close() // deregisters
	leaders, _ := c.Leaders(ctx, "web")
	for l := range leaders {
		log.Printf("leader: %v (am I? %v)", l, l != nil && l.ID == hb.ID())
	}
}
