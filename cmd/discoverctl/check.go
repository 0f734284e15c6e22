package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/client"
)

// checkFlags are register's health-check flags.
type checkFlags struct {
	http     string
	tcp      string
	interval time.Duration
	timeout  time.Duration
	passes   int
	failures int
}

func (f *checkFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.http, "check-http", "", "register only while a GET of this URL answers 2xx")
	fs.StringVar(&f.tcp, "check-tcp", "", "register only while a TCP connection to this host:port opens")
	fs.DurationVar(&f.interval, "check-interval", client.DefaultCheckInterval, "time between two checks")
	fs.DurationVar(&f.timeout, "check-timeout", client.DefaultCheckTimeout, "how long one check may take")
	fs.IntVar(&f.passes, "check-passes", client.DefaultCheckPasses, "passes in a row before registering")
	fs.IntVar(&f.failures, "check-failures", client.DefaultCheckFailures, "failures in a row before deregistering")
}

// option is the client option of the flags, nil without a check.
func (f *checkFlags) option() (client.RegisterOption, error) {
	if f.http == "" && f.tcp == "" {
		if f.interval != client.DefaultCheckInterval || f.timeout != client.DefaultCheckTimeout ||
			f.passes != client.DefaultCheckPasses || f.failures != client.DefaultCheckFailures {
			return nil, usagef("--check-interval, --check-timeout, --check-passes and --check-failures need --check-http or --check-tcp")
		}
		return nil, nil
	}
	var check client.Check
	switch {
	case f.http != "" && f.tcp != "":
		return nil, usagef("give --check-http or --check-tcp, not both")
	case f.http != "":
		u, err := url.Parse(f.http)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, usagef("--check-http %q is not an http:// or https:// URL", f.http)
		}
		check = client.HTTPCheck(f.http)
	default:
		if _, _, err := net.SplitHostPort(f.tcp); err != nil {
			return nil, usagef("--check-tcp %q is not host:port", f.tcp)
		}
		check = client.TCPCheck(f.tcp)
	}
	if f.interval <= 0 || f.timeout <= 0 {
		return nil, usagef("--check-interval and --check-timeout must be positive")
	}
	if f.passes < 1 || f.failures < 1 {
		return nil, usagef("--check-passes and --check-failures must be at least 1")
	}
	return client.WithCheck(check, client.CheckInterval(f.interval), client.CheckTimeout(f.timeout),
		client.CheckThresholds(f.passes, f.failures)), nil
}

func (f *checkFlags) describe() string {
	what := "GET " + f.http
	if f.tcp != "" {
		what = "TCP " + f.tcp
	}
	return fmt.Sprintf("%s every %v (timeout %v): registered after %d passes in a row, deregistered after %d failures in a row",
		what, f.interval, min(f.timeout, f.interval), f.passes, f.failures)
}

// checkLine is one state change of register --check-* --json.
type checkLine struct {
	Status   client.CheckStatus `json:"status"`
	Error    string             `json:"error,omitempty"`
	Instance *api.Instance      `json:"instance"`
}

// followCheck prints each change of h's check state as one line until
// e.ctx ends (a signal), then deregisters.
func followCheck(e *env, h *client.Heartbeater, f *checkFlags) error {
	id := h.ID()
	if !e.json {
		fmt.Fprintf(e.stdout, "checking %s of service %s with %s\n", id, h.Service(), f.describe())
	}
	enc := json.NewEncoder(e.stdout)
	changes := h.Changes()
	registered := false
	for changes != nil {
		select {
		case <-e.ctx.Done():
			changes = nil
		case st, ok := <-changes:
			if !ok {
				changes = nil
				break
			}
			inst := h.Instance()
			if e.json {
				line := checkLine{Status: st.Status, Instance: inst}
				if st.Err != nil {
					line.Error = oneLine(st.Err.Error())
				}
				if err := enc.Encode(line); err != nil {
					h.Close()
					return err
				}
				continue
			}
			switch {
			case st.Status == client.CheckPassing:
				registered = true
				fmt.Fprintf(e.stdout, "passing: registered %s in service %s at %s (index %d)\n", id, h.Service(), inst.Addr, inst.Index)
			case registered:
				registered = false
				fmt.Fprintf(e.stdout, "%s: deregistered %s: %s\n", st.Status, id, oneLine(fmt.Sprint(st.Err)))
			default:
				fmt.Fprintf(e.stdout, "%s: not registering %s: %s\n", st.Status, id, oneLine(fmt.Sprint(st.Err)))
			}
		}
	}
	if err := h.Close(); err != nil {
		return fmt.Errorf("deregistering %s: %w", id, err)
	}
	if !e.json {
		fmt.Fprintf(e.stdout, "deregistered %s\n", id)
	}
	return nil
}
