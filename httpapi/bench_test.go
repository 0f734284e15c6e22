package httpapi_test

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/discoverd/discoverd/auth"
	"github.com/discoverd/discoverd/httpapi"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime))
}

func heartbeatBodies(s *testServer, n int) []string {
	s.must("PUT", "/services/bench", "")
	bodies := make([]string, n)
	for i := range bodies {
		bodies[i] = `{"addr":"10.0.` + strconv.Itoa(i/250) + `.` + strconv.Itoa(i%250) + `:8080","proto":"http","meta":{"version":"1.2.3","zone":"a"}}`
		s.must("PUT", "/services/bench/instances/i"+strconv.Itoa(i), bodies[i])
	}
	return bodies
}

// BenchmarkHeartbeat measures unchanged-instance heartbeats (PUT instance)
// over keep-alive connections against a real node, the hottest HTTP path.
// The client runs in the same process, so cpu-µs/op counts both sides.
func BenchmarkHeartbeat(b *testing.B) {
	s := newServer(b)
	const instances = 1000
	bodies := heartbeatBodies(s, instances)
	tr := &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var next atomic.Int64
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(next.Add(1)) % instances
			req, _ := http.NewRequest("PUT", s.url+"/services/bench/instances/i"+strconv.Itoa(i), strings.NewReader(bodies[i]))
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "heartbeats/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// nullWriter is a ResponseWriter that keeps nothing, to measure the
// handler alone.
type nullWriter struct {
	h      http.Header
	status int
}

func (w *nullWriter) Header() http.Header         { return w.h }
func (w *nullWriter) WriteHeader(status int)      { w.status = status }
func (w *nullWriter) Write(b []byte) (int, error) { return len(b), nil }

// BenchmarkHeartbeatHandler measures the handler's own cost of a heartbeat
// (decode, validate, backend call, encode), without net/http's; "token"
// adds auth (a service token checked against the route's permission).
func BenchmarkHeartbeatHandler(b *testing.B) {
	b.Run("plain", func(b *testing.B) { benchmarkHeartbeatHandler(b, false) })
	b.Run("token", func(b *testing.B) { benchmarkHeartbeatHandler(b, true) })
}

func benchmarkHeartbeatHandler(b *testing.B, withToken bool) {
	s := newServer(b)
	const instances = 1000
	bodies := heartbeatBodies(s, instances)
	opts := httpapi.Options{}
	if withToken {
		set, err := auth.Parse([]byte(`{"tokens": [{"name": "svc", "secret": "secret-bench-service", "role": "service", "services": ["bench"]}]}`))
		if err != nil {
			b.Fatal(err)
		}
		opts.Auth = auth.NewStore(set, zerolog.Nop())
	}
	h := httpapi.New(s.n, opts)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := &nullWriter{h: make(http.Header)}
		rd := strings.NewReader("")
		reqs := make([]*http.Request, instances)
		for i := range reqs {
			reqs[i], _ = http.NewRequest("PUT", "/services/bench/instances/i"+strconv.Itoa(i), io.NopCloser(rd))
			if withToken {
				reqs[i].Header.Set("Authorization", "Bearer secret-bench-service")
			}
		}
		i := 0
		for pb.Next() {
			i = (i + 1) % instances
			rd.Reset(bodies[i])
			reqs[i].ContentLength = int64(len(bodies[i]))
			h.ServeHTTP(w, reqs[i])
			if w.status != 200 {
				b.Errorf("status %d", w.status)
				return
			}
		}
	})
}
