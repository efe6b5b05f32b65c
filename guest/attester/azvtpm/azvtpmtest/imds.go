package azvtpmtest

import (
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	vazvtpm "github.com/cocoon-cc/cocoon/attestation/verifier/azvtpm"
	"github.com/cocoon-cc/cocoon/guest/attester/azvtpm"
	"github.com/cocoon-cc/cocoon/guest/attester/tpm/swtpmtest"
)

// IMDS starts a server answering path with answer(request body) as JSON,
// standing in for Azure's instance metadata service; it refuses requests
// without the Metadata header, as IMDS does.
func IMDS(t testing.TB, path string, answer func(body []byte) any) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body json.RawMessage
		if r.Method == http.MethodPost {
			json.NewDecoder(r.Body).Decode(&body)
		}
		if r.URL.Path != path || r.Header.Get("Metadata") != "true" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(answer(body))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// VM is swtpm set up as an Azure confidential VM's vTPM: its AK at
// azvtpm.AKHandle and an HCL report of typ naming it, with userData.
func VM(t testing.TB, typ vazvtpm.ReportType, userData []byte) (tpmAddr string, hcl []byte) {
	sim := swtpmtest.Start(t)
	v, err := azvtpm.Open(azvtpm.Options{TPM: sim.Addr, Refresh: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	hcl = SyntheticHCLReport(t, typ, v.AKPublic().(*rsa.PublicKey), userData)
	if err := v.WriteNV(azvtpm.HCLReportIndex, hcl); err != nil {
		t.Fatal(err)
	}
	return sim.Addr, hcl
}
