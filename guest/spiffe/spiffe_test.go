package spiffe_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/cocoon-cc/cocoon/guest/attester/sample"
	"github.com/cocoon-cc/cocoon/guest/spiffe"
	"github.com/cocoon-cc/cocoon/internal/testutil/kbstest"
	"github.com/cocoon-cc/cocoon/kbs/client"
)

const policy = `package policy
import rego.v1
default allow := false
allow if data["spiffe-id"] == "spiffe://example.org/ns/test/web"
`

func initdata(id string) []byte {
	return []byte("version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"spiffe.toml\" = 'id = \"" + id + "\"'\n")
}

// startSource runs a Source against a real in-process KBS, for a guest
// launched with the initdata naming id.
func startSource(t *testing.T, ctx context.Context, url, id string) *spiffe.Source {
	t.Helper()
	c, err := client.New(url, sample.Attester{}, client.Options{InitData: initdata(id)})
	if err != nil {
		t.Fatal(err)
	}
	src := spiffe.NewSource(c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	go src.Run(ctx)
	return src
}

// TestWorkloadAPI: go-spiffe's own Workload API client, unchanged, reads
// the pod's X.509-SVID, bundle and JWT-SVIDs from the server, sees a
// renewal, and two Sources make an mTLS connection that checks IDs.
func TestWorkloadAPI(t *testing.T) {
	k := kbstest.Start(t, kbstest.Options{Extra: "[spiffe]\ntrust_domain = \"example.org\"\n"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	if err := k.Admin.SetSPIFFEPolicy(ctx, policy); err != nil {
		t.Fatal(err)
	}
	src := startSource(t, ctx, k.URL, "/ns/test/web")
	sock := filepath.Join(t.TempDir(), "workload", spiffe.SocketName)
	serve(t, ctx, src, sock)
	// As in a container: the client finds the socket in the environment.
	t.Setenv(spiffe.EndpointEnv, "unix://"+sock)

	x509src, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x509src.Close() })
	svid, err := x509src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	want := spiffeid.RequireFromString("spiffe://example.org/ns/test/web")
	if svid.ID != want {
		t.Fatalf("SVID of %s", svid.ID)
	}
	td := want.TrustDomain()
	if b, err := x509src.GetX509BundleForTrustDomain(td); err != nil || len(b.X509Authorities()) != 1 {
		t.Fatalf("bundle: %v", err)
	}

	// A renewal (a new key) reaches the watching client.
	if err := src.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		now, _ := x509src.GetX509SVID()
		if now.Certificates[0].SerialNumber.Cmp(svid.Certificates[0].SerialNumber) != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the client never saw the renewed SVID")
		}
	}

	jwt, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db"})
	if err != nil {
		t.Fatal(err)
	}
	if jwt.ID != want {
		t.Fatalf("JWT-SVID of %s", jwt.ID)
	}
	got, err := workloadapi.ValidateJWTSVID(ctx, jwt.Marshal(), "db")
	if err != nil || got.ID != want {
		t.Fatalf("validate: %v %v", got, err)
	}
	if _, err := workloadapi.ValidateJWTSVID(ctx, jwt.Marshal(), "other"); err == nil {
		t.Error("a JWT-SVID validated for another audience")
	}
	jb, err := workloadapi.FetchJWTBundles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(jwt.Marshal(), jb, []string{"db"}); err != nil {
		t.Fatal(err)
	}
	if _, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db", Subject: spiffeid.RequireFromString("spiffe://example.org/other")}); err == nil {
		t.Error("JWT-SVID for another ID")
	}

	// mTLS between the pod's Source (server) and the Workload API client
	// (client): both present the pod's ID and accept only it.
	l, err := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.MTLSServerConfig(src, src, tlsconfig.AuthorizeID(want)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	conn, err := tls.Dial("tcp", l.Addr().String(), tlsconfig.MTLSClientConfig(x509src, x509src, tlsconfig.AuthorizeID(want)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(conn)
	conn.Close()
	if string(b) != "hi" {
		t.Fatalf("mTLS read %q", b)
	}
	other := tlsconfig.MTLSClientConfig(x509src, x509src, tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/x")))
	if c, err := tls.Dial("tcp", l.Addr().String(), other); err == nil {
		c.Close()
		t.Error("mTLS accepted a server of another ID")
	}
}

// TestWorkloadAPIRefusals: a call without the security header is refused,
// and a pod whose ID the policy refuses never gets an SVID: the client
// waits, it is not given something else.
func TestWorkloadAPIRefusals(t *testing.T) {
	k := kbstest.Start(t, kbstest.Options{Extra: "[spiffe]\ntrust_domain = \"example.org\"\n"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	if err := k.Admin.SetSPIFFEPolicy(ctx, policy); err != nil {
		t.Fatal(err)
	}
	src := startSource(t, ctx, k.URL, "/ns/test/other")
	if err := src.Renew(ctx); err == nil {
		t.Fatal("an SVID for an ID the policy refuses")
	}
	sock := filepath.Join(t.TempDir(), spiffe.SocketName)
	serve(t, ctx, src, sock)
	short, stop := context.WithTimeout(ctx, 2*time.Second)
	defer stop()
	// The deadline ends the call, seen by either side first: the server
	// resets the stream at the grpc-timeout it was sent, which may fall a
	// moment before the client's own context ends.
	_, err := workloadapi.FetchX509SVID(short, workloadapi.WithAddr("unix://"+sock))
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("FetchX509SVID without an SVID: %v", err)
	}
	// A gRPC call without the security header.
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = workload.NewSpiffeWorkloadAPIClient(conn).FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"a"}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no security header: %v", err)
	}
}

// serve serves src's Workload API at sock until ctx ends, returning once
// the socket takes connections (a first call fails fast otherwise).
func serve(t *testing.T, ctx context.Context, src *spiffe.Source, sock string) {
	go spiffe.NewServer(src).Serve(ctx, sock)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Workload API never listened at %s", sock)
		}
	}
}
