package client_test

import (
	"os"

	"github.com/discoverd/discoverd/client"
)

// A client of a secured cluster: the cluster's CA and a token, on HTTP and
// NATS alike (README, "Securing a cluster").
func Example_secured() {
	c := client.NewWithOptions([]string{"10.0.0.1:1111", "10.0.0.2:1111"},
		client.WithToken(os.Getenv("WEB_TOKEN")),
		client.WithCAFile("certs/discoverd-ca.pem"),
		client.WithNATS("10.0.0.1:4222", "10.0.0.2:4222"))
	defer c.Close()
}
