package initdata

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"testing"
)

const testDoc = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n"

// kataDisk is a disk as Kata's runtime writes one: magic, the compressed
// length, one gzip member, then whatever the device holds after it.
func kataDisk(t testing.TB, doc []byte, trailer []byte) []byte {
	t.Helper()
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(doc)
	w.Close()
	b := append([]byte("initdata"), binary.LittleEndian.AppendUint64(nil, uint64(gz.Len()))...)
	return append(append(b, gz.Bytes()...), trailer...)
}

// legacyDisk is Cocoon's first layout.
func legacyDisk(doc []byte) []byte {
	b := make([]byte, 512+len(doc))
	copy(b, LegacyDiskMagic)
	binary.LittleEndian.PutUint32(b[16:], 1)
	binary.LittleEndian.PutUint64(b[24:], uint64(len(doc)))
	copy(b[512:], doc)
	return b
}

func TestDisk(t *testing.T) {
	doc := []byte(testDoc)
	img, err := EncodeDisk(doc)
	if err != nil || len(img)%512 != 0 {
		t.Fatalf("encode: %d bytes, %v", len(img), err)
	}
	// Kata's layout: magic, compressed length, gzip.
	if string(img[:8]) != "initdata" {
		t.Fatalf("magic %q", img[:8])
	}
	n := binary.LittleEndian.Uint64(img[8:])
	zr, err := gzip.NewReader(bytes.NewReader(img[16 : 16+n]))
	if err != nil {
		t.Fatal(err)
	}
	var plain bytes.Buffer
	if _, err := plain.ReadFrom(zr); err != nil || plain.String() != testDoc {
		t.Fatalf("gzip member %q, %v", plain.String(), err)
	}
	if _, err := EncodeDisk(make([]byte, MaxSize+1)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("oversized: %v", err)
	}

	for name, b := range map[string][]byte{
		"ours":                  img,
		"kata's, with trailing": kataDisk(t, doc, make([]byte, 256)),
		"kata's, exact":         kataDisk(t, doc, nil),
		"legacy":                legacyDisk(doc),
		"legacy, padded":        append(legacyDisk(doc), make([]byte, 100)...),
	} {
		got, err := DecodeDisk(bytes.NewReader(b))
		if err != nil || !bytes.Equal(got, doc) {
			t.Errorf("%s: %q %v", name, got, err)
		}
	}
	full := bytes.Repeat([]byte("x"), MaxSize)
	if got, err := DecodeDisk(bytes.NewReader(kataDisk(t, full, nil))); err != nil || len(got) != MaxSize {
		t.Errorf("a document of MaxSize bytes: %d, %v", len(got), err)
	}

	kata := kataDisk(t, doc, nil)
	huge := append([]byte("initdata"), binary.LittleEndian.AppendUint64(nil, 1<<62)...)
	corrupt := append([]byte(nil), kata...)
	corrupt[len(corrupt)-6] ^= 0xff // the gzip trailer's CRC
	for name, b := range map[string][]byte{
		"empty":              nil,
		"not ours":           make([]byte, 1024),
		"magic only":         []byte("initdata"),
		"kata truncated":     kata[:len(kata)-4],
		"kata length short":  append(append([]byte("initdata"), binary.LittleEndian.AppendUint64(nil, 10)...), kata[16:]...),
		"kata huge length":   append(huge, kata[16:]...),
		"kata not gzip":      append(append([]byte("initdata"), binary.LittleEndian.AppendUint64(nil, 5)...), "hello"...),
		"kata bad checksum":  corrupt,
		"kata bomb":          kataDisk(t, make([]byte, MaxSize+1), nil),
		"legacy truncated":   legacyDisk(doc)[:512],
		"legacy version":     append(append([]byte(LegacyDiskMagic), 9, 0, 0, 0), make([]byte, 508)...),
		"legacy huge":        append(append([]byte(LegacyDiskMagic), 1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0), make([]byte, 488)...),
		"legacy short magic": append([]byte("COCOON-INITDATA!"), make([]byte, 496)...),
	} {
		if _, err := DecodeDisk(bytes.NewReader(b)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzDecodeDisk: any device content decodes to a document of at most
// MaxSize bytes or fails with ErrInvalid, and a decoded Kata disk holds
// exactly what re-encoding it gives back.
func FuzzDecodeDisk(f *testing.F) {
	img, _ := EncodeDisk([]byte(testDoc))
	f.Add(img)
	f.Add(kataDisk(f, []byte(testDoc), []byte("trailing")))
	f.Add(legacyDisk([]byte(testDoc)))
	f.Add(kataDisk(f, make([]byte, 4096), nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		doc, err := DecodeDisk(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v", err)
			}
			return
		}
		if len(doc) > MaxSize {
			t.Fatalf("%d bytes from %d", len(doc), len(b))
		}
		again, err := EncodeDisk(doc)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := DecodeDisk(bytes.NewReader(again)); err != nil || !bytes.Equal(back, doc) {
			t.Fatalf("re-encoded disk decodes to %q, %v", back, err)
		}
	})
}
