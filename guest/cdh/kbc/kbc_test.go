package kbc

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/guest/attester/sample"
	"github.com/cocoon-cc/cocoon/guest/cdh/resource"
)

var uri, _ = resource.Parse("kbs:///default/key/1")

// An unreachable KBS is a typed, timely error after a few retries.
func TestUnreachable(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	k, err := New(Config{URL: "http://" + addr, Timeout: 3 * time.Second}, sample.Attester{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = k.GetResource(context.Background(), uri)
	if !errors.Is(err, ErrUnavailable) || time.Since(start) > 3*time.Second {
		t.Fatalf("%v after %v", err, time.Since(start))
	}
}

// A KBS that never answers is cut off by the deadline.
func TestHangingKBS(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-block }))
	defer srv.Close()
	defer close(block)
	k, _ := New(Config{URL: srv.URL, Timeout: 300 * time.Millisecond}, sample.Attester{})
	if _, err := k.GetResource(context.Background(), uri); !errors.Is(err, ErrUnavailable) {
		t.Fatal(err)
	}
}

// A KBS error body keeps its kind.
func TestKBSErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"type":"https://github.com/confidential-containers/kbs/errors/AttestationError","detail":"no"}`))
	}))
	defer srv.Close()
	k, _ := New(Config{URL: srv.URL}, sample.Attester{})
	if _, err := k.GetResource(context.Background(), uri); !errors.Is(err, ErrDenied) {
		t.Fatal(err)
	}
	if _, err := New(Config{URL: srv.URL, CertPEM: "not pem"}, sample.Attester{}); !errors.Is(err, ErrKBS) {
		t.Fatal(err)
	}
}
