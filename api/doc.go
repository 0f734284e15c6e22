// Package api holds the JSON types, header names, error codes and validation
// rules that the discoverd server and its clients share. Both sides use these
// definitions so that they cannot disagree on a field or header name.
//
// It imports only the standard library.
package api
