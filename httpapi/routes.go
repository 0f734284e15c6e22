package httpapi

import (
	"net/http"
	"strings"

	"github.com/discoverd/discoverd/api"
)

// chunkSize is how much of a long list is buffered before it is written.
const chunkSize = 32 << 10

func wantsStream(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), sseContentType)
}

// PUT /services/{service}
func (h *handler) putService(w http.ResponseWriter, r *http.Request) {
	service, ok := h.service(w, r)
	if !ok {
		return
	}
	var cfg api.ServiceConfig
	if _, err := h.decodeBody(w, r, &cfg, `a service config {"leader_type": "oldest"|"manual"}`); err != nil {
		h.failBody(w, err)
		return
	}
	if cfg.LeaderType == "" {
		cfg.LeaderType = api.LeaderTypeOldest
	}
	if err := api.ValidateLeaderType(cfg.LeaderType); err != nil {
		h.fail(w, err)
		return
	}
	idx, err := h.b.AddService(r.Context(), service, cfg)
	if err != nil {
		h.writeError(w, err, idx)
		return
	}
	h.setIndex(w, idx)
	bp := getBuf()
	b := append((*bp)[:0], `{"leader_type":`...)
	b = api.AppendString(b, string(cfg.LeaderType))
	b = append(b, "}\n"...)
	writeBody(w, http.StatusOK, b)
	*bp = b
	putBuf(bp)
}

// DELETE /services/{service}
func (h *handler) deleteService(w http.ResponseWriter, r *http.Request) {
	service, ok := h.service(w, r)
	if !ok {
		return
	}
	idx, err := h.b.RemoveService(r.Context(), service)
	if err != nil {
		h.writeError(w, err, idx)
		return
	}
	h.setIndex(w, idx)
	w.WriteHeader(http.StatusOK)
}

// GET /services: the service names, or an SSE stream of the service list.
func (h *handler) getServices(w http.ResponseWriter, r *http.Request) {
	if wantsStream(r) {
		h.streamServices(w, r)
		return
	}
	if !h.read(w, r) {
		return
	}
	names := h.b.Services()
	bp := getBuf()
	b := append((*bp)[:0], '[')
	for i, name := range names {
		if i > 0 {
			b = append(b, ',')
		}
		b = api.AppendString(b, name)
	}
	b = append(b, "]\n"...)
	writeBody(w, http.StatusOK, b)
	*bp = b
	putBuf(bp)
}

// GET /services/{service}: SSE of every event of the service.
func (h *handler) streamService(w http.ResponseWriter, r *http.Request) {
	service, ok := h.service(w, r)
	if !ok {
		return
	}
	h.stream(w, r, service, api.AllKinds)
}

var (
	instanceKinds = api.Mask(api.EventUp, api.EventUpdate, api.EventDown, api.EventCurrent, api.EventResync)
	leaderKinds   = api.Mask(api.EventLeader, api.EventCurrent, api.EventResync)
)

// GET /services/{service}/instances: the instances in order of index, or an
// SSE stream of up/update/down events.
func (h *handler) getInstances(w http.ResponseWriter, r *http.Request) {
	service, ok := h.service(w, r)
	if !ok {
		return
	}
	if wantsStream(r) {
		h.stream(w, r, service, instanceKinds)
		return
	}
	if !h.read(w, r) {
		return
	}
	list, err := h.b.Instances(service)
	if err != nil {
		h.fail(w, err)
		return
	}
	bp := getBuf()
	b := append((*bp)[:0], '[')
	started := false
	for i, inst := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = api.AppendInstance(b, inst)
		if len(b) >= chunkSize {
			if !started {
				w.Header()["Content-Type"] = jsonContentType
				w.WriteHeader(http.StatusOK)
				started = true
			}
			if _, err := w.Write(b); err != nil {
				*bp = b
				putBuf(bp)
				return
			}
			b = b[:0]
		}
	}
	b = append(b, "]\n"...)
	if started {
		_, _ = w.Write(b)
	} else {
		writeBody(w, http.StatusOK, b)
	}
	*bp = b
	putBuf(bp)
}

// PUT /services/{service}/instances/{id}: register or heartbeat. This is the
// hottest route: it decodes once and encodes into a pooled buffer.
func (h *handler) putInstance(w http.ResponseWriter, r *http.Request) {
	service, ok := h.service(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	if err := api.ValidateInstanceID(id); err != nil {
		h.fail(w, err)
		return
	}
	inst := new(api.Instance)
	empty, err := h.decodeBody(w, r, inst, `an instance {"addr", "proto", "meta"}`)
	if err != nil {
		h.failBody(w, err)
		return
	}
	if empty {
		h.fail(w, api.Errorf(api.CodeValidation, `request body is empty; expected an instance {"addr", "proto", "meta"}`))
		return
	}
	if err := api.PrepareInstance(inst, id); err != nil {
		h.fail(w, err)
		return
	}
	stored, err := h.b.Heartbeat(r.Context(), service, inst)
	if err != nil {
		h.writeError(w, err, 0)
		return
	}
	h.setIndex(w, stored.Index)
	h.writeInstance(w, stored)
}

func (h *handler) writeInstance(w http.ResponseWriter, inst *api.Instance) {
	bp := getBuf()
	b := api.AppendInstance((*bp)[:0], inst)
	b = append(b, '\n')
	writeBody(w, http.StatusOK, b)
	*bp = b
	putBuf(bp)
}

// DELETE /services/{service}/instances/{id}
func (h *handler) deleteInstance(w http.ResponseWriter, r *http.Request) {
	service, ok := h.service(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	if err := api.ValidateInstanceID(id); err != nil {
		h.fail(w, err)
		return
	}
	idx, err := h.b.Deregister(r.Context(), service, id)
	if err != nil {
		h.writeError(w, err, idx)
		return
	}
	h.setIndex(w, idx)
	w.WriteHeader(http.StatusOK)
}

// GET /services/{service}/leader: the leader instance, or an SSE stream of
// leader events.
func (h *handler) getLeader(w http.ResponseWriter, r *http.Request) {
	service, ok := h.service(w, r)
	if !ok {
		return
	}
	if wantsStream(r) {
		h.stream(w, r, service, leaderKinds)
		return
	}
	if !h.read(w, r) {
		return
	}
	leader, err := h.b.Leader(service)
	if err != nil {
		h.fail(w, err)
		return
	}
	if leader == nil {
		h.fail(w, api.Errorf(api.CodeNotFound, "service %q has no leader (it has no live instance, or no leader was set)", service))
		return
	}
	h.writeInstance(w, leader)
}

// PUT /services/{service}/leader: set a manual service's leader. It answers
// with the leader instance (or only its id, when the local state has not
// caught up with the write yet).
func (h *handler) putLeader(w http.ResponseWriter, r *http.Request) {
	service, ok := h.service(w, r)
	if !ok {
		return
	}
	var req api.SetLeaderRequest
	empty, err := h.decodeBody(w, r, &req, `{"id": "..."}`)
	if err != nil {
		h.failBody(w, err)
		return
	}
	if empty {
		h.fail(w, api.Errorf(api.CodeValidation, `request body is empty; expected {"id": "..."}`))
		return
	}
	if err := api.ValidateInstanceID(req.ID); err != nil {
		h.fail(w, err)
		return
	}
	idx, err := h.b.SetLeader(r.Context(), service, req.ID)
	if err != nil {
		h.writeError(w, err, idx)
		return
	}
	h.setIndex(w, idx)
	if leader, err := h.b.Leader(service); err == nil && leader != nil && leader.ID == req.ID {
		h.writeInstance(w, leader)
		return
	}
	bp := getBuf()
	b := append((*bp)[:0], `{"id":`...)
	b = api.AppendString(b, req.ID)
	b = append(b, "}\n"...)
	writeBody(w, http.StatusOK, b)
	*bp = b
	putBuf(bp)
}

// GET /services/{service}/meta
func (h *handler) getMeta(w http.ResponseWriter, r *http.Request) {
	service, ok := h.service(w, r)
	if !ok {
		return
	}
	if !h.read(w, r) {
		return
	}
	meta, err := h.b.ServiceMeta(service)
	if err != nil {
		h.fail(w, err)
		return
	}
	if meta == nil {
		h.fail(w, api.Errorf(api.CodeNotFound, "service %q has no meta", service))
		return
	}
	h.writeMeta(w, meta)
}

// PUT /services/{service}/meta: compare-and-set on index (0 creates).
func (h *handler) putMeta(w http.ResponseWriter, r *http.Request) {
	service, ok := h.service(w, r)
	if !ok {
		return
	}
	var meta api.ServiceMeta
	const what = `service meta {"data": any JSON, "index": the index last read or 0 to create}`
	empty, err := h.decodeBody(w, r, &meta, what)
	if err != nil {
		h.failBody(w, err)
		return
	}
	if empty || len(meta.Data) == 0 {
		h.fail(w, api.Errorf(api.CodeValidation, "request body has no \"data\"; expected %s", what))
		return
	}
	stored, err := h.b.SetServiceMeta(r.Context(), service, &meta)
	if err != nil {
		h.writeError(w, err, 0)
		return
	}
	h.setIndex(w, stored.Index)
	h.writeMeta(w, stored)
}

func (h *handler) writeMeta(w http.ResponseWriter, meta *api.ServiceMeta) {
	bp := getBuf()
	b := appendServiceMeta((*bp)[:0], meta)
	b = append(b, '\n')
	writeBody(w, http.StatusOK, b)
	*bp = b
	putBuf(bp)
}

// GET /ping
func (h *handler) ping(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusOK)
}

// GET /.well-known/status. Always 200: the body's "healthy" says whether the
// node is healthy.
func (h *handler) status(w http.ResponseWriter, r *http.Request) {
	st := h.b.Status()
	b, err := jsonMarshal(st)
	if err != nil {
		h.fail(w, err)
		return
	}
	writeBody(w, http.StatusOK, b)
}
