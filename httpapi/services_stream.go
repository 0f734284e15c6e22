package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/discoverd/discoverd/api"
)

// streamServices serves GET /services with Accept: text/event-stream: every
// service with its instance count and leader, then a "current" event, then
// each service whose count or leader changed (a burst coalesced into one
// event per service) and each service removed. Every (re)connection opens
// with the whole list, which is one event per service, so Last-Event-ID is
// not needed to catch up and is ignored.
func (h *handler) streamServices(w http.ResponseWriter, r *http.Request) {
	if !h.read(w, r) {
		return
	}
	watch, err := h.b.WatchServices()
	if err != nil {
		h.fail(w, err)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	type next struct {
		list []api.ServiceSummary
		err  error
	}
	changes := make(chan next)
	go func() {
		for {
			list, err := watch.Next(ctx)
			select {
			case changes <- next{list, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()

	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	hdr := w.Header()
	hdr["Content-Type"] = sseContentTypeValue
	hdr["Cache-Control"] = noCacheValue
	hdr["X-Accel-Buffering"] = noBufferingValue
	h.setIndex(w, 0)
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	ticker := time.NewTicker(h.keepAlive)
	defer ticker.Stop()
	var buf []byte
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			if _, err := w.Write(sseKeepAlive); err != nil || rc.Flush() != nil {
				return
			}
		case c := <-changes:
			buf = buf[:0]
			if c.err != nil {
				buf = appendSSEError(buf, api.AsError(c.err))
			}
			for i := range c.list {
				s := &c.list[i]
				buf = append(buf, "id: "...)
				buf = strconv.AppendUint(buf, s.Index, 10)
				buf = append(buf, "\ndata: "...)
				js, err := json.Marshal(s)
				if err != nil {
					return
				}
				buf = append(buf, js...)
				buf = append(buf, "\n\n"...)
			}
			if _, err := w.Write(buf); err != nil || rc.Flush() != nil || c.err != nil {
				return
			}
			ticker.Reset(h.keepAlive)
		}
	}
}
