package kbs

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cocoon-cc/cocoon/policy"
)

// DashboardPath is where the KBS serves its read-only web dashboard. The
// page and its script load without a token; the numbers come from
// DashboardPath+"/api/summary", an admin endpoint.
const DashboardPath = "/dashboard"

//go:embed dashboard
var dashboardFiles embed.FS

// dashboardAssets are the files of the page, by name below DashboardPath.
var dashboardAssets = map[string]string{
	"app.js":    "text/javascript; charset=utf-8",
	"style.css": "text/css; charset=utf-8",
}

// dashboardCSP lets the page run its own script and style and call its own
// origin, nothing else: no inline script, no third party, no framing.
const dashboardCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func (s *Server) dashboardRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+DashboardPath, func(w http.ResponseWriter, _ *http.Request) {
		serveDashboardFile(w, "index.html", "text/html; charset=utf-8")
	})
	mux.HandleFunc("GET "+DashboardPath+"/{asset}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("asset")
		ctype, ok := dashboardAssets[name]
		if !ok {
			dashboardHeaders(w)
			http.NotFound(w, r)
			return
		}
		serveDashboardFile(w, name, ctype)
	})
	mux.HandleFunc("GET "+DashboardPath+"/api/summary", func(w http.ResponseWriter, r *http.Request) {
		dashboardHeaders(w)
		if err := s.adminCall(w, r, s.serveSummary); err != nil {
			s.fail(w, r, "dashboard", err)
		}
	})
}

func dashboardHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", dashboardCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

func serveDashboardFile(w http.ResponseWriter, name, ctype string) {
	b, err := dashboardFiles.ReadFile("dashboard/" + name)
	dashboardHeaders(w)
	if err != nil { // not for want of a file: the names are fixed
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Write(b)
}

// Summary is what the dashboard shows, as /dashboard/api/summary answers:
// counts, names, sizes and dates, never a resource's or key's value.
type Summary struct {
	Generated time.Time `json:"generated"`
	ActivitySnapshot
	// ReferenceValues and attestation policies live in the attestation
	// service's store, which a KBS with a remote one does not read.
	RemoteAS        bool                 `json:"remote_attestation_service"`
	ReferenceValues []ReferenceValueInfo `json:"reference_values"`
	Policies        []PolicyInfo         `json:"policies"`
	Replicas        []Replica            `json:"replicas"`
}

// ReferenceValueInfo is a reference value's name and expiry.
type ReferenceValueInfo struct {
	Name       string    `json:"name"`
	Expiration time.Time `json:"expiration"`
	Expired    bool      `json:"expired"`
}

// PolicyInfo names a stored policy: its kind ("resource" or
// "attestation"), id, size and SHA-256 (to tell versions apart).
type PolicyInfo struct {
	Kind   string `json:"kind"`
	ID     string `json:"id"`
	Bytes  int    `json:"bytes"`
	SHA256 string `json:"sha256"`
}

func (s *Server) serveSummary(w http.ResponseWriter, r *http.Request, _ *AdminIdentity) error {
	sum, err := s.summary(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sum)
	return nil
}

func (s *Server) summary(ctx context.Context) (*Summary, error) {
	now := s.now()
	sum := &Summary{Generated: now.UTC(), ActivitySnapshot: s.metrics.activity.snapshot(now), RemoteAS: s.builtin == nil,
		ReferenceValues: []ReferenceValueInfo{}}
	var err error
	if sum.Replicas, err = s.replicas.Replicas(ctx); err != nil {
		return nil, fmt.Errorf("dashboard: replicas: %w", err)
	}
	if sum.Policies, err = s.policyInfos(ctx); err != nil {
		return nil, err
	}
	if s.rvps == nil {
		return sum, nil
	}
	rvs, err := s.rvps.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	for _, rv := range rvs {
		sum.ReferenceValues = append(sum.ReferenceValues, ReferenceValueInfo{Name: rv.Name,
			Expiration: rv.Expiration, Expired: !now.Before(rv.Expiration)})
	}
	return sum, nil
}

// policyGetter is what policyInfos reads of a policy engine.
type policyGetter interface {
	List(ctx context.Context) ([]string, error)
	Get(ctx context.Context, id string) (string, error)
}

func (s *Server) policyInfos(ctx context.Context) ([]PolicyInfo, error) {
	engines := map[string]policyGetter{"resource": s.resources.policy}
	if s.builtin != nil {
		engines["attestation"] = s.builtin.Policies()
	}
	out := []PolicyInfo{}
	for _, kind := range []string{"attestation", "resource"} {
		e := engines[kind]
		if e == nil {
			continue
		}
		ids, err := e.List(ctx)
		if err != nil {
			return nil, fmt.Errorf("dashboard: %s policies: %w", kind, err)
		}
		for _, id := range ids {
			text, err := e.Get(ctx, id)
			if errors.Is(err, policy.ErrNotFound) { // deleted since List
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("dashboard: %s policy %s: %w", kind, id, err)
			}
			sum := sha256.Sum256([]byte(text))
			out = append(out, PolicyInfo{Kind: kind, ID: id, Bytes: len(text), SHA256: hex.EncodeToString(sum[:])})
		}
	}
	return out, nil
}
