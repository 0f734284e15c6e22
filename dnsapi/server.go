package dnsapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/miekg/dns"
)

// Server serves a Handler over UDP and TCP on one address.
type Server struct {
	h        *Handler
	udp, tcp *dns.Server
	pc       net.PacketConn
	ln       net.Listener
	done     chan error
}

// Listen binds addr (host:port) over UDP and TCP. With port 0, one free
// port is picked for both.
func Listen(addr string, h *Handler) (*Server, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("DNS address %q: %w", addr, err)
	}
	var pc net.PacketConn
	var ln net.Listener
	for attempt := 0; ; attempt++ {
		ln, err = net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("DNS over TCP: %w", err)
		}
		p := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		pc, err = net.ListenPacket("udp", net.JoinHostPort(host, p))
		if err == nil {
			break
		}
		ln.Close()
		if port != "0" || attempt == 10 {
			return nil, fmt.Errorf("DNS over UDP: %w", err)
		}
	}
	s := &Server{h: h, pc: pc, ln: ln, done: make(chan error, 2)}
	accept := func(dh dns.Header) dns.MsgAcceptAction {
		action := dns.DefaultMsgAcceptFunc(dh)
		if action != dns.MsgAccept {
			h.metrics.reject()
		}
		return action
	}
	invalid := func([]byte, error) { h.metrics.reject() }
	s.udp = &dns.Server{PacketConn: pc, Handler: h, MsgAcceptFunc: accept, MsgInvalidFunc: invalid, UDPSize: dns.DefaultMsgSize}
	s.tcp = &dns.Server{Listener: ln, Handler: h, MsgAcceptFunc: accept, MsgInvalidFunc: invalid,
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	started := make(chan struct{}, 2)
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		go func() { s.done <- srv.ActivateAndServe() }()
	}
	// Wait for both, so that a Close right away finds them running.
	for i := 0; i < 2; i++ {
		select {
		case <-started:
		case err := <-s.done:
			pc.Close()
			ln.Close()
			return nil, fmt.Errorf("DNS server: %w", err)
		}
	}
	return s, nil
}

// Addr is the address served (the same port over UDP and TCP).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops both servers.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := errors.Join(s.udp.ShutdownContext(ctx), s.tcp.ShutdownContext(ctx))
	if errors.Is(err, context.DeadlineExceeded) {
		s.pc.Close()
		s.ln.Close()
	}
	return err
}
