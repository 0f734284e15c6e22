package httpapi

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// newMetricsHandler serves the node's registry in the Prometheus exposition
// format the scraper asks for (gzipped when it accepts it). A collector that
// fails is logged and left out rather than failing the whole scrape, so one
// broken metric does not blind the monitoring to every other.
func newMetricsHandler(b Backend, log zerolog.Logger) http.Handler {
	return promhttp.HandlerFor(b.Metrics(), promhttp.HandlerOpts{
		ErrorLog:      promLog{log},
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// GET /metrics. A proxy answers it itself (see proxyLocalPaths): its metrics
// are its own, not a voter's.
func (h *handler) metrics(w http.ResponseWriter, r *http.Request) {
	h.metricsHTTP.ServeHTTP(w, r)
}

// promLog passes promhttp's errors to the handler's log.
type promLog struct{ log zerolog.Logger }

func (l promLog) Println(v ...any) { l.log.Warn().Msg(fmt.Sprint(v...)) }
