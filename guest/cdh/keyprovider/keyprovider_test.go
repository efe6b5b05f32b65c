package keyprovider

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"

	"github.com/cocoon-cc/cocoon/guest/cdh/resource"
	"github.com/cocoon-cc/cocoon/guest/cdh/wrap"
)

type kbs map[string][]byte

func (k kbs) GetResource(_ context.Context, u resource.URI) ([]byte, error) {
	v, ok := k[u.Path()]
	if !ok {
		return nil, errors.New("not found")
	}
	return append([]byte(nil), v...), nil
}

var std = base64.StdEncoding.EncodeToString

func input(t testing.TB, packet map[string]string, op string) []byte {
	p, _ := json.Marshal(packet)
	b, err := json.Marshal(map[string]any{"op": op, "keywrapparams": map[string]any{},
		"keyunwrapparams": map[string]any{"dc": map[string]any{"Parameters": map[string][]string{}}, "annotation": std(p)}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestUnwrapKey(t *testing.T) {
	kek := make([]byte, 32)
	rand.Read(kek)
	store := kbs{"default/image-kek/1": kek}
	opts := []byte(`{"symkey":"AAAA"}`)
	iv, wrapped, _ := wrap.Encrypt(wrap.A256GCM, kek, opts)
	packet := map[string]string{"kid": "kbs:///default/image-kek/1", "wrapped_data": std(wrapped), "iv": std(iv), "wrap_type": "A256GCM"}

	out, err := UnwrapKey(context.Background(), store, input(t, packet, OpUnwrap))
	if err != nil {
		t.Fatal(err)
	}
	// ocicrypt-rs needs optsdata as an array of numbers; Go's []byte
	// decodes it too.
	var rs struct {
		KeyUnwrapResults struct{ OptsData []int } `json:"keyunwrapresults"`
	}
	var gos struct {
		KeyUnwrapResults struct {
			OptsData []byte `json:"optsdata"`
		} `json:"keyunwrapresults"`
	}
	if json.Unmarshal(out, &rs) != nil || len(rs.KeyUnwrapResults.OptsData) != len(opts) ||
		json.Unmarshal(out, &gos) != nil || string(gos.KeyUnwrapResults.OptsData) != string(opts) {
		t.Fatalf("output %s", out)
	}

	bad := func(k, v string) map[string]string {
		p := map[string]string{}
		for a, b := range packet {
			p[a] = b
		}
		p[k] = v
		return p
	}
	for name, c := range map[string]struct {
		in   []byte
		want error
	}{
		"op":        {input(t, packet, "keywrap"), ErrUnsupported},
		"provider":  {input(t, bad("provider", "aws"), OpUnwrap), ErrUnsupported},
		"version":   {input(t, bad("version", "0.2.0"), OpUnwrap), ErrUnsupported},
		"kid":       {input(t, bad("kid", "kbs:///x"), OpUnwrap), ErrMalformed},
		"wrap_type": {input(t, bad("wrap_type", "A128GCM"), OpUnwrap), ErrMalformed},
		"iv":        {input(t, bad("iv", "%%"), OpUnwrap), ErrMalformed},
		"iv size":   {input(t, bad("iv", std([]byte("short"))), OpUnwrap), wrap.ErrIVSize},
		"tampered":  {input(t, bad("wrapped_data", std(append(wrapped[:len(wrapped)-1:len(wrapped)-1], 0))), OpUnwrap), wrap.ErrDecrypt},
		"json":      {[]byte(`{"op":`), ErrMalformed},
		"no packet": {[]byte(`{"op":"keyunwrap","keyunwrapparams":{}}`), ErrMalformed},
	} {
		if _, err := UnwrapKey(context.Background(), store, c.in); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(input(f, map[string]string{"kid": "kbs:///a/b/c", "wrapped_data": "AA==", "iv": "AAAAAAAAAAAAAAAA", "wrap_type": "A256GCM"}, OpUnwrap))
	f.Add([]byte(`{"op":"keyunwrap","keyunwrapparams":{"annotation":"e30="}}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		if _, err := Parse(in); err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
			t.Fatalf("untyped error: %v", err)
		}
	})
}
