package client

import (
	"context"
	"fmt"
	"io"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/snapshot"
)

// SaveSnapshot takes a backup of the cluster's registry (GET
// /raft/snapshot) and returns the snapshot file, verified: a stream cut
// short or damaged on the way is an error, never a file that looks whole.
func (c *Client) SaveSnapshot(ctx context.Context) ([]byte, error) {
	var data []byte
	err := c.retry(ctx, retryOpts{}, func(ctx context.Context, server string) error {
		resp, _, err := c.roundTrip(ctx, server, &request{method: "GET", path: "/raft/snapshot"})
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, snapshot.MaxBytes+1))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &api.Error{Code: api.CodeUnavailable, Retry: true,
				Message: fmt.Sprintf("reading the snapshot from %s: %v", server, err)}
		}
		if _, err := snapshot.Parse(b); err != nil {
			return &api.Error{Code: api.CodeUnavailable, Retry: true,
				Message: fmt.Sprintf("the snapshot from %s is not whole: %s", server, api.AsError(err).Message)}
		}
		data = b
		return nil
	})
	return data, err
}

// RestoreSnapshot replaces the cluster's registry with a snapshot file
// (PUT /raft/snapshot) and returns the Raft index it was restored at. The
// server verifies the file first: a damaged or foreign one is refused
// (validation_error) and changes nothing.
func (c *Client) RestoreSnapshot(ctx context.Context, data []byte) (uint64, error) {
	var out api.AppliedCommand
	if _, err := c.do(ctx, retryOpts{}, &request{method: "PUT", path: "/raft/snapshot", body: data}, &out); err != nil {
		return 0, err
	}
	return out.Index, nil
}
