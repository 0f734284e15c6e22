package main

import (
	"flag"
	"fmt"
	"strings"

	"github.com/discoverd/discoverd/pki"
)

// The certificate commands, as `consul tls` has them: no openssl needed.
func init() {
	commands["tls ca create"] = &command{nargs: 0, setup: tlsCACreate}
	commands["tls cert create"] = &command{nargs: 0, setup: tlsCertCreate}
}

func tlsCACreate(fs *flag.FlagSet) runFunc {
	dir := fs.String("dir", ".", "folder of the CA")
	return func(e *env, _ []string) error {
		cert, key, err := pki.CreateCA(*dir)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "wrote %s\nwrote %s (keep it secret: it signs certificates)\n", cert, key)
		return nil
	}
}

func tlsCertCreate(fs *flag.FlagSet) runFunc {
	dir := fs.String("dir", ".", "folder of the CA, where the certificate is written")
	name := fs.String("name", "", "name of the certificate: writes NAME.pem and NAME-key.pem")
	hosts := fs.String("hosts", "", "comma list of the host names and IP addresses it is valid for")
	return func(e *env, _ []string) error {
		if *name == "" {
			return usagef("tls cert create needs --name")
		}
		var list []string
		for _, h := range strings.Split(*hosts, ",") {
			if h = strings.TrimSpace(h); h != "" {
				list = append(list, h)
			}
		}
		cert, key, err := pki.CreateCert(*dir, *name, list)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "wrote %s\nwrote %s\n", cert, key)
		return nil
	}
}
