// Package auth holds discoverd's tokens and roles: the auth file's JSON
// (--auth-file), the permissions a route or a NATS subject needs, and a
// Store that reloads the file atomically (a file that does not parse is
// refused and the tokens in force are kept).
//
// Secrets are compared in constant time (through their SHA-256) and are
// never logged or printed: Token's String leaves them out, and errors name a
// token by its position and name.
//
// It may import only the standard library and zerolog. The transports
// (httpapi, bus) and cmd import it; it imports none of them.
package auth
