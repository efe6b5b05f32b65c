package cca_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	vcca "github.com/cocoon-cc/cocoon/attestation/verifier/cca"
	"github.com/cocoon-cc/cocoon/attestation/verifier/cca/ccatest"
	"github.com/cocoon-cc/cocoon/guest/attester/cca"
	"github.com/cocoon-cc/cocoon/guest/attester/tsm"
	"github.com/cocoon-cc/cocoon/guest/attester/tsm/tsmtest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

const ccaData = "trustee/deps/verifier/test_data/cca"

// realm is a configfs-tsm kernel double of provider that answers each
// challenge with a token re-issued from Trustee's example (its platform
// token, a realm token signed by the RAK that token vouches for).
func realm(t *testing.T, provider string) (*cca.Attester, *[]byte) {
	iss, err := ccatest.FromTrustee(filepath.Join(testutil.Fixtures(t), ccaData))
	if err != nil {
		t.Fatal(err)
	}
	var gotIn []byte
	k := tsmtest.New(t, provider, func(in []byte, _ string) ([]byte, []byte) {
		gotIn = in
		tok, err := iss.Token(in)
		if err != nil {
			t.Error(err)
		}
		return tok, nil
	})
	return cca.New(cca.Options{TSM: &tsm.Client{Root: k.Root, Mkdir: k.Mkdir}}), &gotIn
}

// TestEvidenceVerifies: the attester's evidence is what the verifier reads,
// bound to the report data it was asked for.
func TestEvidenceVerifies(t *testing.T) {
	a, gotIn := realm(t, cca.Provider)
	rd := make([]byte, 48)
	rand.Read(rd)
	ev, err := a.Evidence(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(*gotIn, verifier.Fit(rd, 64)) {
		t.Fatalf("inblob %x, want the report data zero-padded to 64 bytes", *gotIn)
	}
	ta, rv, err := vcca.LoadDir(filepath.Join(testutil.Fixtures(t), ccaData, "conf"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vcca.New(vcca.Options{TrustAnchors: ta, ReferenceValues: rv}).Evaluate(context.Background(), ev, verifier.Expected{ReportData: rd}); err != nil {
		t.Fatal(err)
	}
}

func TestRefusals(t *testing.T) {
	a, _ := realm(t, "tdx_guest")
	if _, err := a.Evidence(context.Background(), make([]byte, 48)); !errors.Is(err, tsm.ErrProvider) {
		t.Errorf("another TEE's provider: %v, want tsm.ErrProvider", err)
	}
	if _, err := a.Evidence(context.Background(), make([]byte, 65)); err == nil {
		t.Error("report data over 64 bytes accepted")
	}
}
