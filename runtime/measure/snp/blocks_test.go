package snp

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"testing"
)

// TestPageInfoLayout builds PAGE_INFO byte by byte from the SNP ABI table
// (DIGEST_CUR, CONTENTS, LENGTH, PAGE_TYPE, IMI_PAGE, VMPL3/2/1_PERMS,
// reserved, GPA) and checks one chain step is SHA-384 over it.
func TestPageInfoLayout(t *testing.T) {
	var cur, contents [DigestSize]byte
	for i := range cur {
		cur[i], contents[i] = byte(i), byte(0x80+i)
	}
	var want bytes.Buffer
	want.Write(cur[:])
	want.Write(contents[:])
	want.Write([]byte{0x70, 0x00})                         // LENGTH
	want.WriteByte(byte(PageNormal))                       // PAGE_TYPE
	want.WriteByte(0)                                      // IMI_PAGE
	want.Write([]byte{0, 0, 0, 0})                         // VMPL3, VMPL2, VMPL1 perms, reserved
	want.Write([]byte{0x00, 0xf0, 0xff, 0xff, 0, 0, 0, 0}) // GPA 0xfffff000
	p := PageInfo{DigestCur: cur, Contents: contents, Type: PageNormal, GPA: 0xfffff000}
	got, _ := p.MarshalBinary()
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("PAGE_INFO\n got %x\nwant %x", got, want.Bytes())
	}

	page := bytes.Repeat([]byte{0xa5}, 4096)
	c := NewChain(cur)
	if err := c.Normal(0xfffff000, page); err != nil {
		t.Fatal(err)
	}
	p.Contents = sha512.Sum384(page)
	b, _ := p.MarshalBinary()
	if c.Digest() != sha512.Sum384(b) {
		t.Fatal("normal page step is not SHA-384(PAGE_INFO)")
	}
	if err := c.Normal(0, page[:100]); err == nil {
		t.Fatal("partial page accepted")
	}
}

// TestChainPageKinds checks each kind of page is chained with its type,
// its GPA (the fixed VMSA GPA for VMSAs) and no contents where the page
// has none.
func TestChainPageKinds(t *testing.T) {
	step := func(ld [DigestSize]byte, typ PageType, gpa uint64, contents [DigestSize]byte) [DigestSize]byte {
		b, _ := (&PageInfo{DigestCur: ld, Contents: contents, Type: typ, GPA: gpa}).MarshalBinary()
		return sha512.Sum384(b)
	}
	var zero [DigestSize]byte
	vmsa := qemuVMSA(bspEIP, 0x800f12, 1)
	want := step(zero, PageZero, 0x800000, zero)
	want = step(want, PageZero, 0x801000, zero)
	want = step(want, PageSecrets, 0x80d000, zero)
	want = step(want, PageCPUID, 0x80e000, zero)
	want = step(want, PageVMSA, 0xFFFFFFFFF000, sha512.Sum384(vmsa[:]))

	c := NewChain(zero)
	c.Zero(0x800000, 0x2000)
	c.Secrets(0x80d000)
	c.CPUID(0x80e000)
	c.VMSA(vmsa)
	if c.Digest() != want {
		t.Fatalf("chain %x, want %x", c.Digest(), want)
	}
}

// TestVMSALayout reads the BSP and AP VMSAs back at the offsets of the
// AMD APM's VMSA table and checks nothing else is set.
func TestVMSALayout(t *testing.T) {
	le := binary.LittleEndian
	for _, tc := range []struct {
		eip, csBase uint32
		rip         uint64
	}{{0xfffffff0, 0xffff0000, 0xfff0}, {0x0080b004, 0x00800000, 0xb004}} {
		p := qemuVMSA(tc.eip, 0xa00f11, 0x21)
		fields := []struct {
			name      string
			off, size int
			want      uint64
		}{
			{"es.attrib", 0x002, 2, 0x93}, {"es.limit", 0x004, 4, 0xffff},
			{"cs.selector", 0x010, 2, 0xf000}, {"cs.attrib", 0x012, 2, 0x9b}, {"cs.limit", 0x014, 4, 0xffff},
			{"cs.base", 0x018, 8, uint64(tc.csBase)},
			{"ss.attrib", 0x022, 2, 0x93}, {"ss.limit", 0x024, 4, 0xffff},
			{"ds.attrib", 0x032, 2, 0x93}, {"ds.limit", 0x034, 4, 0xffff},
			{"fs.attrib", 0x042, 2, 0x93}, {"fs.limit", 0x044, 4, 0xffff},
			{"gs.attrib", 0x052, 2, 0x93}, {"gs.limit", 0x054, 4, 0xffff},
			{"gdtr.limit", 0x064, 4, 0xffff},
			{"ldtr.attrib", 0x072, 2, 0x82}, {"ldtr.limit", 0x074, 4, 0xffff},
			{"idtr.limit", 0x084, 4, 0xffff},
			{"tr.attrib", 0x092, 2, 0x8b}, {"tr.limit", 0x094, 4, 0xffff},
			{"efer", 0x0d0, 8, 0x1000}, {"cr4", 0x148, 8, 0x40}, {"cr0", 0x158, 8, 0x10},
			{"dr7", 0x160, 8, 0x400}, {"dr6", 0x168, 8, 0xffff0ff0}, {"rflags", 0x170, 8, 2},
			{"rip", 0x178, 8, tc.rip}, {"g_pat", 0x268, 8, 0x0007040600070406},
			{"rdx", 0x310, 8, 0xa00f11}, {"sev_features", 0x3b0, 8, 0x21}, {"xcr0", 0x3e8, 8, 1},
			{"mxcsr", 0x408, 4, 0x1f80}, {"x87_fcw", 0x410, 2, 0x37f},
		}
		var rest [VMSASize]byte
		copy(rest[:], p[:])
		for _, f := range fields {
			var got uint64
			switch f.size {
			case 2:
				got = uint64(le.Uint16(p[f.off:]))
			case 4:
				got = uint64(le.Uint32(p[f.off:]))
			case 8:
				got = le.Uint64(p[f.off:])
			}
			if got != f.want {
				t.Errorf("eip %#x: %s at %#x = %#x, want %#x", tc.eip, f.name, f.off, got, f.want)
			}
			clear(rest[f.off : f.off+f.size])
		}
		if rest != ([VMSASize]byte{}) {
			t.Errorf("eip %#x: bytes set outside the listed fields: %x", tc.eip, bytes.TrimRight(rest[:], "\x00"))
		}
	}
}

// TestHashesTable checks QEMU's table layout: the header GUID in EFI byte
// order, length 0xa8 (unpadded), three 50-byte entries in cmdline,
// initrd, kernel order, zero padding to 0xb0.
func TestHashesTable(t *testing.T) {
	h := &Hashes{}
	for i := range 32 {
		h.Kernel[i], h.Initrd[i], h.Cmdline[i] = 0x10, 0x20, 0x30
	}
	b := h.Table()
	if len(b) != 0xb0 {
		t.Fatalf("table of %d bytes, want 0xb0", len(b))
	}
	must := func(off int, hexWant string) {
		t.Helper()
		want, _ := hex.DecodeString(hexWant)
		if got := b[off : off+len(want)]; !bytes.Equal(got, want) {
			t.Errorf("at %#x: %x, want %x", off, got, want)
		}
	}
	must(0, "06d63894224fc94cb479a793d411fd21"+"a800")
	must(18, "d82dd097"+"20bd"+"944c"+"aa78e7714d36ab2a"+"3200"+hex.EncodeToString(h.Cmdline[:]))
	must(68, "31f7ba44"+"2f3a"+"d74b"+"9af141e29169781d"+"3200"+hex.EncodeToString(h.Initrd[:]))
	must(118, "3794e74d"+"d2ab"+"7f42"+"b835d5b172d2045b"+"3200"+hex.EncodeToString(h.Kernel[:]))
	must(168, "0000000000000000")

	if got := CmdlineHash(""); hex.EncodeToString(got[:]) != "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d" {
		t.Errorf("empty command line hashes to %x, want SHA-256 of one NUL", got)
	}
}

func TestCPUSignature(t *testing.T) {
	for _, tc := range []struct {
		name string
		want uint32
	}{
		{"EPYC", 0x800f12}, {"EPYC-v4", 0x800f12}, {"EPYC-Rome", 0x830f10},
		{"EPYC-Milan", 0xa00f11}, {"EPYC-Genoa", 0xa10f10}, {"EPYC-Turin", 0xb00f00},
	} {
		if got, err := CPUTypeSignature(tc.name); err != nil || got != tc.want {
			t.Errorf("%s: %#x %v, want %#x", tc.name, got, err, tc.want)
		}
	}
	if got := CPUSignature(14, 1, 2); got != 0xe12 {
		t.Errorf("family 14 model 1 stepping 2: %#x, want 0xe12", got)
	}
}
