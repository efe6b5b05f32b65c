package pull

import (
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
)

func TestViaHostLoopback(t *testing.T) {
	p := New(nil, Options{HostLoopback: "10.0.2.2"})
	for in, want := range map[string]string{
		"127.0.0.1:5000/team/app:1": "10.0.2.2:5000/team/app:1",
		"localhost:5000/app@sha256:" + "0123456789012345678901234567890123456789012345678901234567890123": "10.0.2.2:5000/app@sha256:0123456789012345678901234567890123456789012345678901234567890123",
		"registry.example/app:1": "registry.example/app:1",
		"127.0.0.10:5000/app:1":  "127.0.0.10:5000/app:1",
	} {
		ref, err := name.ParseReference(in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := p.viaHostLoopback(ref)
		if err != nil || got.Name() != want {
			t.Errorf("%s: %v %v, want %s", in, got, err, want)
		}
	}
	if got, _ := New(nil, Options{}).viaHostLoopback(name.MustParseReference("127.0.0.1:5000/app:1")); got.Name() != "127.0.0.1:5000/app:1" {
		t.Errorf("no loopback configured: %s", got)
	}
}
