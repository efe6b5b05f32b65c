package tdx

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"testing"

	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf"
)

// synthetic is a three-page image: two pages of code (1.5 pages of raw
// data) measured at 0xffffd000, a TD HOB page only added, a PAGE.AUG
// region, and the footer table with the TDVF metadata in the last page.
func synthetic() []byte {
	img := make([]byte, 3*ovmf.PageSize)
	for i := range 0x1800 {
		img[i] = byte(i * 7)
	}
	le := binary.LittleEndian
	sections := [][6]uint64{
		{0, 0x1800, 0xffffd000, 0x2000, uint64(ovmf.TDVFBFV), ovmf.TDVFMRExtend},
		{0, 0, 0x809000, 0x1000, uint64(ovmf.TDVFTDHOB), 0},
		{0, 0, 0x1000000, 0x10000, uint64(ovmf.TDVFPermMem), ovmf.TDVFPageAug},
	}
	meta := ovmf.MustParseGUID("e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae")
	md := append(meta[:], "TDVF"...)
	md = le.AppendUint32(md, uint32(16+32*len(sections)))
	md = le.AppendUint32(md, 1)
	md = le.AppendUint32(md, uint32(len(sections)))
	for _, s := range sections {
		md = le.AppendUint32(md, uint32(s[0]))
		md = le.AppendUint32(md, uint32(s[1]))
		md = le.AppendUint64(md, s[2])
		md = le.AppendUint64(md, s[3])
		md = le.AppendUint32(md, uint32(s[4]))
		md = le.AppendUint32(md, uint32(s[5]))
	}
	const mdFromEnd = 0x400
	copy(img[len(img)-mdFromEnd:], md)
	// Footer table: one entry (the TDVF descriptor's offset from the end),
	// then the footer entry, ending 32 bytes before the image end.
	end := len(img) - 32
	footer := ovmf.FooterGUID
	tdx := ovmf.TDXMetadataGUID
	entry := le.AppendUint32(nil, mdFromEnd-16)
	entry = le.AppendUint16(entry, 4+18)
	entry = append(entry, tdx[:]...)
	tail := append(entry, le.AppendUint16(nil, uint16(len(entry)+18))...)
	tail = append(tail, footer[:]...)
	copy(img[end-len(tail):], tail)
	return img
}

// blockOf writes a 128-byte SEAMCALL block by hand: the ASCII operation,
// zero padding to 16, the little-endian GPA, zeros.
func blockOf(op string, gpa uint64) []byte {
	b := append([]byte(op), make([]byte, 16-len(op))...)
	b = binary.LittleEndian.AppendUint64(b, gpa)
	return append(b, make([]byte, 128-24)...)
}

func TestMRTDSynthetic(t *testing.T) {
	img := synthetic()
	mem := make([]byte, 0x2000) // the BFV as loaded: raw data then zeros
	copy(mem, img[:0x1800])
	add := func(h *bytes.Buffer, page uint64) { h.Write(blockOf("MEM.PAGE.ADD", 0xffffd000+page*0x1000)) }
	extend := func(h *bytes.Buffer, page uint64) {
		for c := uint64(0); c < 0x1000; c += 0x100 {
			h.Write(blockOf("MR.EXTEND", 0xffffd000+page*0x1000+c))
			h.Write(mem[page*0x1000+c : page*0x1000+c+0x100])
		}
	}
	var single, two bytes.Buffer
	add(&single, 0)
	extend(&single, 0)
	add(&single, 1)
	extend(&single, 1)
	add(&two, 0)
	add(&two, 1)
	extend(&two, 0)
	extend(&two, 1)
	for _, b := range []*bytes.Buffer{&single, &two} {
		b.Write(blockOf("MEM.PAGE.ADD", 0x809000))
	}
	for _, tc := range []struct {
		twoPass bool
		want    [DigestSize]byte
	}{{false, sha512.Sum384(single.Bytes())}, {true, sha512.Sum384(two.Bytes())}} {
		got, err := MRTD(Options{OVMF: img, TwoPass: tc.twoPass})
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("two-pass %v: MRTD %x, want %x", tc.twoPass, got, tc.want)
		}
	}
}

// debianMRTD are MRTDs of Debian's OVMF.fd (package ovmf
// 2022.11-6+deb12u2, by its SHA-256) that td-shim's reference MRTD tool
// (td_shim_tee_info_hash.py, page by page) computes for the same file.
var debianMRTD = map[string]string{
	"7b456907dd0786d415999e801a1ac4637b8ed4d7cf5378cfc6edbe5e574dd773": "4c7206f0f483c524f12c366c711e9049030a8d47c471ee5aa9c4999a08de4057fb887fed0744d5631a212967fb231c47",
}

func TestMRTDDebian(t *testing.T) {
	const path = "/usr/share/ovmf/OVMF.fd"
	img, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("SKIP: Debian's ovmf package is not installed (%v); scripts/install-deps.sh installs it", err)
	}
	got, err := MRTD(Options{OVMFPath: path})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(img)
	want, known := debianMRTD[hex.EncodeToString(sum[:])]
	if !known {
		t.Logf("no recorded MRTD for this %s (SHA-256 %x); got %x", path, sum, got)
		return
	}
	if hex.EncodeToString(got[:]) != want {
		t.Fatalf("MRTD %x, want %s", got, want)
	}
}

func TestMRTDErrors(t *testing.T) {
	noTDVF := make([]byte, ovmf.PageSize)
	for name, tc := range map[string]struct {
		opts Options
		want error
	}{
		"no firmware":      {Options{}, ovmf.ErrNoImage},
		"no TDVF metadata": {Options{OVMF: noTDVF}, ErrNotTDXFirmware},
		"partial page":     {Options{OVMF: make([]byte, 10)}, ovmf.ErrInvalid},
		"missing file":     {Options{OVMFPath: "/nonexistent/OVMF.fd"}, os.ErrNotExist},
	} {
		if _, err := MRTD(tc.opts); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

// BenchmarkMRTD measures the MRTD of Debian's OVMF.fd against a floor in
// the same run: SHA-384 over its bytes once. Report the ratio.
func BenchmarkMRTD(b *testing.B) {
	img, err := os.ReadFile("/usr/share/ovmf/OVMF.fd")
	if err != nil {
		b.Skipf("SKIP: Debian's ovmf package is not installed (%v)", err)
	}
	b.Run("MRTD", func(b *testing.B) {
		b.SetBytes(int64(len(img)))
		for b.Loop() {
			if _, err := MRTD(Options{OVMF: img}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Floor", func(b *testing.B) {
		b.SetBytes(int64(len(img)))
		for b.Loop() {
			sha512.Sum384(img)
		}
	})
}
