package keyprovider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	cdhkp "github.com/cocoon-cc/cocoon/guest/cdh/keyprovider"
	"github.com/cocoon-cc/cocoon/guest/cdh/resource"
	"github.com/cocoon-cc/cocoon/protocol"
)

// kbs is both the registrar (owner side) and the resource getter the data
// hub's unwrap uses (guest side), so a wrap round-trips through the real
// unwrap code.
type kbs map[string][]byte

func (k kbs) SetResource(_ context.Context, path string, data []byte) error {
	k[path] = bytes.Clone(data)
	return nil
}

func (k kbs) GetResource(_ context.Context, u resource.URI) ([]byte, error) {
	b, ok := k[u.Path()]
	if !ok {
		return nil, errors.New("no such resource")
	}
	return bytes.Clone(b), nil
}

// wrapInput is what Go ocicrypt (skopeo) sends.
func wrapInput(t *testing.T, params string, opts []byte) []byte {
	in := map[string]any{
		"op": "keywrap",
		"keywrapparams": map[string]any{
			"ec":       map[string]any{"Parameters": map[string][][]byte{Provider: {[]byte(params)}}, "DecryptConfig": map[string]any{}},
			"optsdata": opts,
		},
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func roundTrip(t *testing.T, k kbs, params string) []byte {
	t.Helper()
	opts := []byte(`{"symkey":"secret layer key"}`)
	out, err := NewWrapper(k).WrapKey(context.Background(), wrapInput(t, params, opts))
	if err != nil {
		t.Fatal(err)
	}
	// Go ocicrypt decodes the annotation into []byte.
	var res struct {
		KeyWrapResults struct {
			Annotation []byte `json:"annotation"`
		} `json:"keywrapresults"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	unwrapIn, _ := json.Marshal(map[string]any{"op": "keyunwrap",
		"keyunwrapparams": map[string]any{"annotation": res.KeyWrapResults.Annotation}})
	got, err := cdhkp.UnwrapKey(context.Background(), k, unwrapIn)
	if err != nil {
		t.Fatalf("data hub unwrap of %s: %v", res.KeyWrapResults.Annotation, err)
	}
	var uo cdhkp.Output
	json.Unmarshal(got, &uo)
	plain := make([]byte, len(uo.KeyUnwrapResults.OptsData))
	for i, v := range uo.KeyUnwrapResults.OptsData {
		plain[i] = byte(v)
	}
	if !bytes.Equal(plain, opts) {
		t.Fatalf("unwrapped %q", plain)
	}
	return res.KeyWrapResults.Annotation
}

func TestWrapRoundTripsThroughDataHub(t *testing.T) {
	k := kbs{}
	roundTrip(t, k, "keyid=kbs:///default/key/img1::algorithm=A256GCM")
	if len(k["default/key/img1"]) != 32 {
		t.Fatalf("KEK not registered: %v", k)
	}
	keyFile := filepath.Join(t.TempDir(), "kek")
	kek := bytes.Repeat([]byte{7}, 32)
	os.WriteFile(keyFile, kek, 0o600)
	roundTrip(t, k, "keypath="+keyFile+"::keyid=kbs:///default/key/img2::algorithm=A256CTR")
	if !bytes.Equal(k["default/key/img2"], kek) {
		t.Fatal("keypath's KEK not registered")
	}
	var p protocol.KeyPacket
	json.Unmarshal(roundTrip(t, k, ""), &p)
	if _, err := kbsPath(p.Kid); err != nil || p.WrapType != "A256GCM" {
		t.Fatalf("generated kid %q wrap %q", p.Kid, p.WrapType)
	}
}

// Every layer of an image (one WrapKey call each) must be wrapped with
// the KEK the KBS finally holds.
func TestOneKEKPerKeyID(t *testing.T) {
	k := kbs{}
	w := NewWrapper(k)
	in := wrapInput(t, "keyid=kbs:///default/key/multi", []byte(`{"symkey":"x"}`))
	for range 3 {
		out, err := w.WrapKey(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		var res struct {
			KeyWrapResults struct {
				Annotation []byte `json:"annotation"`
			} `json:"keywrapresults"`
		}
		json.Unmarshal(out, &res)
		unwrapIn, _ := json.Marshal(map[string]any{"op": "keyunwrap",
			"keyunwrapparams": map[string]any{"annotation": res.KeyWrapResults.Annotation}})
		defer func() {
			if _, err := cdhkp.UnwrapKey(context.Background(), k, unwrapIn); err != nil {
				t.Errorf("layer wrapped with a KEK the KBS no longer holds: %v", err)
			}
		}()
	}
}

func TestWrapRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	for _, params := range []string{"keyid=kbs:///../x/y", "algorithm=ROT13", "sample=true", "keypath=/nonexistent"} {
		if _, err := NewWrapper(kbs{}).WrapKey(ctx, wrapInput(t, params, []byte("o"))); !errors.Is(err, ErrInput) {
			t.Errorf("%s: %v", params, err)
		}
	}
	if _, err := NewWrapper(kbs{}).WrapKey(ctx, []byte(`{"op":"keyunwrap"}`)); !errors.Is(err, ErrInput) {
		t.Errorf("unwrap op: %v", err)
	}
}
