package otlpin

import (
	"bytes"
	"compress/gzip"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// counter is a Sink that keeps the counts of what it took, dropping
// everything past limit items.
type counter struct {
	items atomic.Int64
	limit int64
}

func (c *counter) take(n int) int {
	if c.items.Add(int64(n)) > c.limit {
		c.items.Add(-int64(n))
		return n
	}
	return 0
}

func (c *counter) Logs(ld plog.Logs) int          { return c.take(ld.LogRecordCount()) }
func (c *counter) Traces(td ptrace.Traces) int    { return c.take(td.SpanCount()) }
func (c *counter) Metrics(md pmetric.Metrics) int { return c.take(md.DataPointCount()) }

func request(t testing.TB, path, ct, enc string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", ct)
	if enc != "" {
		req.Header.Set("Content-Encoding", enc)
	}
	w := httptest.NewRecorder()
	New(&counter{limit: 3}, slog.New(slog.NewTextHandler(io.Discard, nil))).Handler().ServeHTTP(w, req)
	return w
}

func TestHTTP(t *testing.T) {
	ld := plog.NewLogs()
	recs := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	for range 5 {
		recs.AppendEmpty().Body().SetStr("hello")
	}
	pb, err := plogotlp.NewExportRequestFromLogs(ld).MarshalProto()
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(pb)
	zw.Close()
	w := request(t, "/v1/logs", "application/x-protobuf", "gzip", gz.Bytes())
	resp := plogotlp.NewExportResponse()
	if err := resp.UnmarshalProto(w.Body.Bytes()); w.Code != http.StatusOK || err != nil {
		t.Fatalf("%d %s %v", w.Code, w.Body, err)
	}
	if resp.PartialSuccess().RejectedLogRecords() != 5 {
		t.Errorf("rejected %d, want the 5 past the sink's limit", resp.PartialSuccess().RejectedLogRecords())
	}
	for _, c := range []struct {
		path, ct, enc string
		body          []byte
		code          int
	}{
		{"/v1/logs", "text/plain", "", pb, http.StatusUnsupportedMediaType},
		{"/v1/logs", "application/x-protobuf", "br", pb, http.StatusBadRequest},
		{"/v1/logs", "application/x-protobuf", "gzip", pb, http.StatusBadRequest},
		{"/v1/traces", "application/json", "", []byte("{"), http.StatusBadRequest},
		{"/v1/metrics", "application/x-protobuf", "", []byte{0xff, 0xff}, http.StatusBadRequest},
		{"/v1/profiles", "application/x-protobuf", "", pb, http.StatusNotFound},
		{"/v1/logs", "application/x-protobuf", "", bytes.Repeat([]byte{0}, maxBody+1), http.StatusBadRequest},
	} {
		if w := request(t, c.path, c.ct, c.enc, c.body); w.Code != c.code {
			t.Errorf("%s %s %s: %d, want %d", c.path, c.ct, c.enc, w.Code, c.code)
		}
	}
}

// FuzzHTTP: whatever a container posts, the receiver answers 200 or a
// client error, never panics.
func FuzzHTTP(f *testing.F) {
	ld := plog.NewLogs()
	ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords().AppendEmpty().Body().SetStr("x")
	pb, _ := plogotlp.NewExportRequestFromLogs(ld).MarshalProto()
	js, _ := plogotlp.NewExportRequestFromLogs(ld).MarshalJSON()
	f.Add(uint8(0), false, pb)
	f.Add(uint8(1), true, js)
	f.Add(uint8(2), true, []byte(`{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","gauge":{"dataPoints":[{"asInt":"1"}]}}]}]}]}`))
	f.Fuzz(func(t *testing.T, signal uint8, json bool, body []byte) {
		path := []string{"/v1/logs", "/v1/traces", "/v1/metrics"}[signal%3]
		ct := "application/x-protobuf"
		if json {
			ct = "application/json"
		}
		w := request(t, path, ct, "", body)
		if w.Code != http.StatusOK && (w.Code < 400 || w.Code >= 500) {
			t.Fatalf("%s: %d %s", path, w.Code, w.Body)
		}
	})
}
