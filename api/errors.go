package api

import (
	"errors"
	"fmt"
	"net/http"
)

// ErrorCode is the machine-readable part of an Error.
type ErrorCode string

const (
	CodeNotFound           ErrorCode = "object_not_found"
	CodeExists             ErrorCode = "object_exists"
	CodePreconditionFailed ErrorCode = "precondition_failed"
	CodeValidation         ErrorCode = "validation_error"
	CodeUnavailable        ErrorCode = "service_unavailable"
	CodeUnknown            ErrorCode = "unknown_error"
	// CodeUnauthorized: the request has no token, or one the node does not
	// know (401).
	CodeUnauthorized ErrorCode = "unauthorized"
	// CodeForbidden: the token's role does not allow the request (403).
	CodeForbidden ErrorCode = "forbidden"
	// CodeTooManyConnections refuses a request whose client address holds
	// as many connections and streams as the node allows one address.
	CodeTooManyConnections ErrorCode = "too_many_connections"
)

// Error is the JSON error body of every failed request, over HTTP and NATS.
type Error struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
	// Retry says the same request may succeed later or on another node.
	Retry bool `json:"retry"`
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Status is the HTTP status that carries the error.
func (e *Error) Status() int { return e.Code.Status() }

// Status is the HTTP status of an error code.
func (c ErrorCode) Status() int {
	switch c {
	case CodeNotFound:
		return http.StatusNotFound
	case CodeExists:
		return http.StatusConflict
	case CodePreconditionFailed:
		return http.StatusPreconditionFailed
	case CodeValidation:
		return http.StatusBadRequest
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	case CodeUnauthorized:
		return http.StatusUnauthorized
	case CodeForbidden:
		return http.StatusForbidden
	case CodeTooManyConnections:
		return http.StatusTooManyRequests
	default:
		return http.StatusInternalServerError
	}
}

// Errorf builds an Error; service_unavailable and too_many_connections
// errors are always retryable.
func Errorf(code ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Retry: code == CodeUnavailable || code == CodeTooManyConnections}
}

// AsError turns any error into an *Error, keeping a typed one as it is and
// wrapping anything else as unknown_error.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeUnknown, Message: err.Error()}
}

// IsCode reports whether err is an *Error with the given code.
func IsCode(err error, code ErrorCode) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}
