package controllers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cocoon-cc/cocoon/guest/attester/sample"
	"github.com/cocoon-cc/cocoon/internal/testutil/kbstest"
	"github.com/cocoon-cc/cocoon/kbs"
	kbsclient "github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/kbs/respolicy"
	cocoonv1 "github.com/cocoon-cc/cocoon/operator/api/v1alpha1"
)

// TestKBSConfig: the KBS parses the configuration the operator writes,
// for both stores, with HTTPS and the operator's key as the only admin.
func TestKBSConfig(t *testing.T) {
	for _, storage := range []cocoonv1.KeyBrokerStorage{
		{Postgres: &cocoonv1.PostgresStorage{Host: "db.example", Port: 5432, DB: "kbs", Username: "kbs"}},
		{Embedded: &cocoonv1.EmbeddedStorage{Size: "1Gi"}},
	} {
		kb := &cocoonv1.KeyBroker{ObjectMeta: metav1.ObjectMeta{Name: "kbs", Namespace: "ns"}, Spec: cocoonv1.KeyBrokerSpec{Storage: storage}}
		b, err := kbsConfig(kb)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := kbs.ParseConfig(b, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatalf("%v\n%s", err, b)
		}
		want := "Embedded"
		if storage.Postgres != nil {
			want = "Postgres"
			if pg := cfg.StorageBackend.Backends.Postgres; pg.Host != "db.example" || pg.Password != "" || pg.SealingKeyPath == "" {
				t.Errorf("postgres: %+v", pg)
			}
		}
		idps := cfg.Admin.Authentication.BearerJWT.IdentityProviders
		if cfg.StorageBackend.StorageType != want || cfg.HTTPServer.InsecureHTTP || cfg.HTTPServer.Certificate == "" ||
			cfg.Admin.AuthorizationMode != "AuthenticatedAuthorization" || len(idps) != 1 || idps[0].Issuer != adminIssuer {
			t.Errorf("configuration:\n%s", b)
		}
	}
}

// TestRegister registers items in a real KBS: what changed only, the
// resources no longer selected deleted, the default resource policy back
// when none is named; the status has keyed hashes, no value.
func TestRegister(t *testing.T) {
	ctx := context.Background()
	k := kbstest.Start(t, kbstest.Options{})
	a := kbsclient.NewAdminSigning(k.URL, k.HTTP, k.AdminKey, kbsclient.TokenClaims{Role: "admin", Issuer: adminIssuer})
	res := func(path, v string) item {
		return item{kindResource, path, []byte(v), func(ctx context.Context, a *kbsclient.Admin) error { return a.SetResource(ctx, path, []byte(v)) }}
	}
	allowAll := item{kindPolicy, policyResource, []byte(respolicy.AllowAll), func(ctx context.Context, a *kbsclient.Admin) error {
		return a.SetResourcePolicy(ctx, respolicy.AllowAll)
	}}
	key := statusKey([]byte("an admin key"))
	var st cocoonv1.KeyBrokerStatus
	changed, err := register(ctx, a, &st, []item{res("default/demo/a", "one"), res("default/demo/b", "two"), allowAll}, key, false)
	if err != nil || len(changed) != 3 {
		t.Fatalf("first registration: %v %v", changed, err)
	}
	if got(t, k, "default/demo/a") != "one" {
		t.Error("resource a")
	}
	if b, _ := json.Marshal(st); strings.Contains(string(b), "one") || len(st.Resources) != 2 || len(st.Resources[0].Hash) != 64 {
		t.Errorf("status %s", b)
	}

	changed, err = register(ctx, a, &st, []item{res("default/demo/a", "one"), res("default/demo/b", "two"), allowAll}, key, false)
	if err != nil || len(changed) != 0 {
		t.Errorf("nothing changed, registered: %v %v", changed, err)
	}
	changed, err = register(ctx, a, &st, []item{res("default/demo/a", "one!"), allowAll}, key, false)
	if err != nil || !slices.Equal(changed, []string{"resource default/demo/a", "deleted resource default/demo/b"}) {
		t.Errorf("a changed, b gone: %v %v", changed, err)
	}
	if got(t, k, "default/demo/a") != "one!" {
		t.Error("resource a not updated")
	}
	if _, err := fetch(k, "default/demo/b"); err == nil {
		t.Error("resource b still served")
	}
	changed, err = register(ctx, a, &st, []item{res("default/demo/a", "one!")}, key, true)
	if err != nil || !slices.Equal(changed, []string{"resource default/demo/a", "default resource policy"}) {
		t.Errorf("full, policy gone: %v %v", changed, err)
	}
	if _, err := fetch(k, "default/demo/a"); err == nil {
		t.Error("the default policy released to the sample TEE")
	}

	// A policy the KBS refuses is a KBSRefused condition; the record stays.
	bad := item{kindPolicy, policyResource, []byte("package policy\nallow if {"), func(ctx context.Context, a *kbsclient.Admin) error {
		return a.SetResourcePolicy(ctx, "package policy\nallow if {")
	}}
	before := st
	_, err = register(ctx, a, &st, []item{bad}, key, false)
	var ce *condError
	if !errors.As(err, &ce) || ce.reason != "KBSRefused" || !strings.HasPrefix(ce.msg, "policy resource-policy: ") {
		t.Errorf("bad policy: %v", err)
	}
	if !slices.Equal(st.Resources, before.Resources) {
		t.Errorf("the record changed: %+v", st.Resources)
	}
}

func fetch(k *kbstest.KBS, path string) ([]byte, error) {
	c, err := kbsclient.New(k.URL, sample.Attester{}, kbsclient.Options{})
	if err != nil {
		return nil, err
	}
	return c.GetResource(context.Background(), path)
}

func got(t *testing.T, k *kbstest.KBS, path string) string {
	t.Helper()
	b, err := fetch(k, path)
	if err != nil {
		t.Fatalf("get %s: %v", path, err)
	}
	return string(b)
}

// TestWithPrevious: a new guest's measurements come with the previous
// guest's, one guest back.
func TestWithPrevious(t *testing.T) {
	m := func(guest, v string) cocoonv1.Measurement {
		return cocoonv1.Measurement{Flavour: "qemu-snp", Guest: guest, Name: "snp_launch_measurement", Values: []string{v}}
	}
	guests := func(ms []cocoonv1.Measurement) string {
		var g []string
		for _, x := range ms {
			g = append(g, x.Guest)
		}
		return strings.Join(g, ",")
	}
	var status []cocoonv1.Measurement
	for _, step := range []struct{ guest, want string }{
		{"g1", "g1"}, {"g1", "g1"}, {"g2", "g2,g1"}, {"g2", "g2,g1"}, {"g3", "g3,g2"}, {"g3", "g3,g2"},
	} {
		status = withPrevious([]cocoonv1.Measurement{m(step.guest, "d-"+step.guest)}, status, step.guest)
		if got := guests(status); got != step.want {
			t.Errorf("guest %s: %s, want %s", step.guest, got, step.want)
		}
	}
}

// TestSelfSigned: the generated certificate serves TLS to a client
// trusting its ca.crt, by the Service's name and address, and is made
// again when a name or address is missing.
func TestSelfSigned(t *testing.T) {
	names := []string{"kbs", "kbs.ns", "kbs.ns.svc", "kbs.ns.svc.cluster.local"}
	ips := []net.IP{net.ParseIP("10.96.0.7")}
	data, err := selfSigned("kbs.ns.svc", names, ips)
	if err != nil {
		t.Fatal(err)
	}
	if !certCovers(data[corev1.TLSCertKey], names, ips) {
		t.Error("the certificate does not cover its own names")
	}
	if certCovers(data[corev1.TLSCertKey], names, []net.IP{net.ParseIP("10.96.0.8")}) || certCovers(data[corev1.TLSCertKey], []string{"other"}, nil) {
		t.Error("a new address or name is covered")
	}
	pair, err := tls.X509KeyPair(data[corev1.TLSCertKey], data[corev1.TLSPrivateKeyKey])
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(data[caFile])
	for _, name := range []string{"kbs.ns.svc", "10.96.0.7"} {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: name}}}
		resp, err := hc.Get(srv.URL)
		if err != nil {
			t.Errorf("as %s: %v", name, err)
			continue
		}
		resp.Body.Close()
	}
}
