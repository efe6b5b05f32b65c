package initdata

import (
	"bytes"
	"errors"
	"testing"
)

func TestDiskRoundTrip(t *testing.T) {
	doc := []byte("version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n")
	img, err := EncodeDisk(doc)
	if err != nil || len(img)%512 != 0 {
		t.Fatalf("encode: %d bytes, %v", len(img), err)
	}
	got, err := DecodeDisk(bytes.NewReader(img))
	if err != nil || !bytes.Equal(got, doc) {
		t.Fatalf("decode: %q %v", got, err)
	}
	if _, err := EncodeDisk(make([]byte, MaxSize+1)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("oversized: %v", err)
	}
	for name, b := range map[string][]byte{
		"empty":     nil,
		"not ours":  make([]byte, 1024),
		"truncated": img[:512],
		"version":   append(append([]byte(DiskMagic), 9, 0, 0, 0), make([]byte, 508)...),
		"huge":      append(append([]byte(DiskMagic), 1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0), make([]byte, 488)...),
	} {
		if _, err := DecodeDisk(bytes.NewReader(b)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzDecodeDisk(f *testing.F) {
	img, _ := EncodeDisk([]byte("version = \"0.1.0\""))
	f.Add(img)
	f.Fuzz(func(t *testing.T, b []byte) {
		doc, err := DecodeDisk(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v", err)
			}
			return
		}
		if len(doc) > MaxSize || len(b) < 512+len(doc) {
			t.Fatalf("%d bytes from %d", len(doc), len(b))
		}
	})
}
