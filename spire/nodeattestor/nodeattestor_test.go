package nodeattestor_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	"github.com/spiffe/spire-plugin-sdk/plugintest"
	agentv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/nodeattestor/v1"
	serverv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cocoon-cc/cocoon/guest/attester/sample"
	"github.com/cocoon-cc/cocoon/internal/testutil/kbstest"
	"github.com/cocoon-cc/cocoon/jose"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/spire/nodeattestor"
)

// startKBS is an in-process KBS whose sample TEE appraises affirming.
func startKBS(t *testing.T) *kbstest.KBS {
	t.Helper()
	k := kbstest.Start(t, kbstest.Options{})
	for name, v := range map[string]any{"launch_digest": []string{"abcde"}, "svn": []string{"1"},
		"major_version": 1, "minimum_minor_version": 0} {
		if err := k.Admin.RegisterSampleReferenceValue(context.Background(), name, v); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

// serveServer runs the server plugin through SPIRE's plugin SDK harness,
// configured with hcl for trust domain example.org.
func serveServer(t *testing.T, hcl string) (*serverv1.NodeAttestorPluginClient, error) {
	t.Helper()
	na := new(serverv1.NodeAttestorPluginClient)
	cfg := new(configv1.ConfigServiceClient)
	p := new(nodeattestor.Server)
	plugintest.ServeInBackground(t, plugintest.Config{PluginServer: serverv1.NodeAttestorPluginServer(p), PluginClient: na,
		ServiceServers: []pluginsdk.ServiceServer{configv1.ConfigServiceServer(p)}, ServiceClients: []pluginsdk.ServiceClient{cfg}})
	_, err := cfg.Configure(context.Background(), &configv1.ConfigureRequest{HclConfiguration: hcl,
		CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: "example.org"}})
	return na, err
}

func serveAgent(t *testing.T, hcl string) *agentv1.NodeAttestorPluginClient {
	t.Helper()
	na := new(agentv1.NodeAttestorPluginClient)
	cfg := new(configv1.ConfigServiceClient)
	p := new(nodeattestor.Agent)
	plugintest.ServeInBackground(t, plugintest.Config{PluginServer: agentv1.NodeAttestorPluginServer(p), PluginClient: na,
		ServiceServers: []pluginsdk.ServiceServer{configv1.ConfigServiceServer(p)}, ServiceClients: []pluginsdk.ServiceClient{cfg}})
	if _, err := cfg.Configure(context.Background(), &configv1.ConfigureRequest{HclConfiguration: hcl,
		CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: "example.org"}}); err != nil {
		t.Fatal(err)
	}
	return na
}

// attest relays one attestation between the plugins, as spire-agent and
// spire-server do.
func attest(ctx context.Context, agent *agentv1.NodeAttestorPluginClient, server *serverv1.NodeAttestorPluginClient) (*serverv1.AgentAttributes, error) {
	as, err := agent.AidAttestation(ctx)
	if err != nil {
		return nil, err
	}
	ss, err := server.Attest(ctx)
	if err != nil {
		return nil, err
	}
	p, err := as.Recv()
	if err != nil {
		return nil, err
	}
	if err := ss.Send(&serverv1.AttestRequest{Request: &serverv1.AttestRequest_Payload{Payload: p.GetPayload()}}); err != nil {
		return nil, err
	}
	ch, err := ss.Recv()
	if err != nil {
		return nil, err
	}
	if err := as.Send(&agentv1.Challenge{Challenge: ch.GetChallenge()}); err != nil {
		return nil, err
	}
	r, err := as.Recv()
	if err != nil {
		return nil, err
	}
	if err := ss.Send(&serverv1.AttestRequest{Request: &serverv1.AttestRequest_ChallengeResponse{ChallengeResponse: r.GetChallengeResponse()}}); err != nil {
		return nil, err
	}
	attrs, err := ss.Recv()
	if err != nil {
		return nil, err
	}
	return attrs.GetAgentAttributes(), nil
}

// TestNodeAttestor: an agent attested by the KBS is admitted with an ID
// of its TEE key and selectors of its appraisal and initdata; the sample
// TEE only when the server allows it; a token replayed without its TEE key
// is refused.
func TestNodeAttestor(t *testing.T) {
	k := startKBS(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	init := filepath.Join(t.TempDir(), "initdata.toml")
	os.WriteFile(init, []byte("version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"spiffe.toml\" = 'id = \"/node/a\"'\n"), 0o600)
	agent := serveAgent(t, `kbs_url = "`+k.URL+`"
attester = "sample"
initdata_path = "`+init+`"`)
	server, err := serveServer(t, `kbs_url = "`+k.URL+`"
allow_sample = true`)
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := attest(ctx, agent, server)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(attrs.SpiffeId, "spiffe://example.org/spire/agent/cocoon/") || !attrs.CanReattest {
		t.Errorf("agent %s (reattest %v)", attrs.SpiffeId, attrs.CanReattest)
	}
	for _, want := range []string{"tee:sample", "status:affirming", "spiffe_id:spiffe://example.org/node/a"} {
		if !slices.Contains(attrs.SelectorValues, want) {
			t.Errorf("selectors %v lack %s", attrs.SelectorValues, want)
		}
	}

	strict, err := serveServer(t, `kbs_url = "`+k.URL+`"`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest(ctx, agent, strict); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "sample") {
		t.Errorf("sample TEE on a strict server: %v", err)
	}

	// Someone with a token of another node but without its TEE key.
	c, err := client.New(k.URL, sample.Attester{}, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	token, err := c.Attest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := server.Attest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := json.Marshal(map[string]string{"token": token})
	ss.Send(&serverv1.AttestRequest{Request: &serverv1.AttestRequest_Payload{Payload: p}})
	ch, err := ss.Recv()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := jose.GenerateTEEKey("EC")
	jws, _ := other.Sign(ch.GetChallenge())
	ss.Send(&serverv1.AttestRequest{Request: &serverv1.AttestRequest_ChallengeResponse{ChallengeResponse: []byte(jws)}})
	if _, err := ss.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Errorf("challenge signed by another key: %v", err)
	}
	// Garbage payload, bad configuration.
	ss, _ = server.Attest(ctx)
	ss.Send(&serverv1.AttestRequest{Request: &serverv1.AttestRequest_Payload{Payload: []byte("x")}})
	if _, err := ss.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Errorf("garbage payload: %v", err)
	}
	if _, err := serveServer(t, `allow_sample = true`); status.Code(err) != codes.InvalidArgument {
		t.Errorf("no kbs_url: %v", err)
	}
}
