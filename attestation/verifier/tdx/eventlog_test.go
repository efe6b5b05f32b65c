package tdx

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// TestParseEventLogMatchesTrustee compares whole parses with Trustee's
// expected output, details included.
func TestParseEventLogMatchesTrustee(t *testing.T) {
	tests := []struct{ log, want []byte }{
		// Trustee's eventlog tests parse this same file (a td-shim CCEL).
		{trusteeData(t, "CCEL_data"), trusteeEventlogData(t, "CCEL_data_out.json")},
		// OVMF/grub CCEL followed by attestation-agent runtime events (AAEL).
		{trusteeEventlogData(t, "CCEL_AAEL_alibabacloud"), trusteeEventlogData(t, "CCEL_AAEL_alibabacloud_out.json")},
	}
	for _, tc := range tests {
		log, err := ParseEventLog(tc.log)
		if err != nil {
			t.Fatal(err)
		}
		var want map[string]any
		if err := json.Unmarshal(tc.want, &want); err != nil {
			t.Fatal(err)
		}
		got := jsonValue(t, log.Claims()).([]any)
		wantEvents := want["uefi_event_logs"].([]any)
		if len(got) != len(wantEvents) {
			t.Fatalf("%d events, Trustee has %d", len(got), len(wantEvents))
		}
		for i := range got {
			if !reflect.DeepEqual(got[i], wantEvents[i]) {
				g, _ := json.Marshal(got[i])
				w, _ := json.Marshal(wantEvents[i])
				t.Errorf("event %d:\n got %s\nwant %s", i, g, w)
			}
		}
	}
}

func hexBytes(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReplayMatchesQuote replays a real CCEL against the real quote it
// came with (Container-Optimized OS on GCE, from go-tdx-guest).
func TestReplayMatchesQuote(t *testing.T) {
	q := mustParse(t, goTDXData(t, "ccel/cos-113-tdx-quote.dat"))
	log, err := verifyEventLog(goTDXData(t, "ccel/ccel_data.dat"), q)
	if err != nil {
		t.Fatal(err)
	}
	if len(log.Events) != 43 {
		t.Errorf("%d events, want 43", len(log.Events))
	}
}

// TestReplayTrusteeLog checks the RTMRs Trustee's own tests expect for
// its td-shim log; the log belongs to no fixture quote.
func TestReplayTrusteeLog(t *testing.T) {
	log, err := ParseEventLog(trusteeData(t, "CCEL_data"))
	if err != nil {
		t.Fatal(err)
	}
	rtmrs, err := log.ReplayRTMRs()
	if err != nil {
		t.Fatal(err)
	}
	want := [4]string{
		"2dc712306a963eadb894ad47dbaa17df44814151555aee11cbb843becca88950ffd079664902e6f22c66f7c8213543f4",
		"0fa3be56af61208bbd179dc7b124988eb929319154663c539d6f46445ecac2fec287075047ff7bd1922829fec28cd3cf",
	}
	for i := range rtmrs {
		if want[i] == "" {
			want[i] = hex.EncodeToString(make([]byte, 48))
		}
		if got := hex.EncodeToString(rtmrs[i][:]); got != want[i] {
			t.Errorf("RTMR%d = %s, want %s", i, got, want[i])
		}
	}
}

// TestReplayMismatch: a log that is not the one the RTMRs commit to.
func TestReplayMismatch(t *testing.T) {
	quote := mustParse(t, goTDXData(t, "ccel/cos-113-tdx-quote.dat"))
	data := goTDXData(t, "ccel/ccel_data.dat")
	log, err := ParseEventLog(data)
	if err != nil {
		t.Fatal(err)
	}
	// Flip one bit of every event's first digest in turn.
	for i, ev := range log.Events {
		if ev.Index < 1 || ev.Index > 4 {
			continue
		}
		off := bytes.Index(data, ev.Digests[0].Value)
		tampered := bytes.Clone(data)
		tampered[off] ^= 1
		if _, err := verifyEventLog(tampered, quote); !errors.Is(err, ErrRTMRMismatch) || !errors.Is(err, verifier.ErrSignature) {
			t.Fatalf("event %d tampered: %v, want ErrRTMRMismatch", i, err)
		}
	}
	// The log of another machine.
	if _, err := verifyEventLog(trusteeData(t, "CCEL_data"), quote); !errors.Is(err, ErrRTMRMismatch) {
		t.Errorf("foreign log: %v, want ErrRTMRMismatch", err)
	}
}

// TestParseEventLogRejects checks the framing errors.
func TestParseEventLogRejects(t *testing.T) {
	good := goTDXData(t, "ccel/ccel_data.dat")
	specLen := 32 + int(binary.LittleEndian.Uint32(good[28:]))
	edit := func(off int, val ...byte) []byte {
		b := bytes.Clone(good)
		copy(b[off:], val)
		return b
	}
	tests := []struct {
		name string
		log  []byte
	}{
		{"empty", []byte{}},
		{"no spec id event", edit(4, 1)},
		{"bad spec id signature", edit(32, 'X')},
		{"sha384 declared 32 bytes", edit(32+28+2, 32)},
		{"unknown algorithm", edit(32+28, 0x99)},
		{"unknown event type", edit(specLen+4, 0x77, 0x77)},
		{"undeclared digest algorithm", edit(specLen+12, algSHA256)},
		{"event data overruns", edit(specLen+12+2+48, 0xff, 0xff, 0xff, 0x7f)},
		{"short trailer", append(bytes.Clone(good[:specLen]), 1, 2, 3)},
	}
	for _, tc := range tests {
		if _, err := ParseEventLog(tc.log); !errors.Is(err, ErrEventLogFormat) || !errors.Is(err, verifier.ErrMalformedEvidence) {
			t.Errorf("%s: %v, want ErrEventLogFormat", tc.name, err)
		}
	}
}

// TestParseEventLogTruncated cuts a real log at every length of its first
// events and at every fifth length after.
func TestParseEventLogTruncated(t *testing.T) {
	data := trusteeEventlogData(t, "CCEL_AAEL_alibabacloud")
	full, err := ParseEventLog(data)
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(data)-8; n += 1 + 4*min(n/1000, 1) {
		log, err := ParseEventLog(data[:n])
		if err == nil && len(log.Events) >= len(full.Events) {
			t.Fatalf("cut at %d parsed all %d events", n, len(log.Events))
		}
	}
}

// TestReplayNeedsSHA384: an RTMR event without a SHA-384 digest would be
// in the claims without being covered by the quote.
func TestReplayNeedsSHA384(t *testing.T) {
	log := &EventLog{Events: []Event{{Index: 2, Digests: []Digest{{Alg: algSHA256, Value: make([]byte, 32)}}}}}
	if _, err := log.ReplayRTMRs(); !errors.Is(err, ErrEventLogFormat) {
		t.Errorf("ReplayRTMRs = %v, want ErrEventLogFormat", err)
	}
	mrtd := &EventLog{Events: []Event{{Index: 0, Digests: []Digest{{Alg: algSHA256, Value: make([]byte, 32)}}}}}
	if _, err := mrtd.ReplayRTMRs(); err != nil {
		t.Errorf("MRTD event: %v, want it skipped", err)
	}
}

func TestDevicePathNodes(t *testing.T) {
	tests := []struct {
		typ, sub byte
		data     string
		want     string
	}{
		{1, 1, "0001", "Pci(0,1)"},
		{2, 1, "d041030a02000000", "ACPI(PNP0A03,2)"},
		{3, 5, "0300", "USB(3,0)"},
		{3, 0x0b, "001320f5fa77000000000000000000000000000000000000000000000000000001", "Mac(001320F5FA77,0x01)"},
		{3, 0x0c, "0100A8C06400A8C00000BC0C0600010000000000000000", "IPv4(192.168.0.100,TCP,Static,192.168.0.1)"},
		{3, 0x0c, "0100A8C06400A8C00000BC0C1100000101A8C0FFFFFF00", "IPv4(192.168.0.100,UDP,DHCP,192.168.0.1,3232235777,16777215)"},
		{3, 0x15, "00010203040506070001020304050607", "FibreEx(0x0001020304050607,0x0001020304050607)"},
		{4, 1, "0f000000002800000000000000500300000000005e27f1007553d5439eb5de2add4c99320202", "HD(15,GPT,00F1275E-5375-43D5-9EB5-DE2ADD4C9932,0x2800,0x35000)"},
		{4, 1, "01000000000800000000000000E02E0000000000431202a000000000431202a0000000000101", "HD(1,MBR,0xa0021243,0x800,0x2ee000)"},
		{4, 1, "00000000000000000000000000000000000000000000000000000000431202a0000000000101", "HD(0,MBR,0x00000000)"},
		{4, 3, "f8d1c555cd04b5468a20e56cbb3052d0", "VenMedia(55C5D1F8-04CD-46B5-8A20-E56CBB3052D0,)"},
		{4, 4, "6b00650072006e0065006c000000", "File(kernel)"},
		{5, 1, "8000000041424300", "BBS(DEV,ABC,0)"},
		{5, 1, "F0FF000000", "BBS(65520,,0)"},
		// Unrendered or malformed nodes fall back to the generic form.
		{4, 1, "0f00", "Path(4,1,0f00)"},
		{4, 1, "0f000000002800000000000000500300000000005e27f1007553d5439eb5de2add4c99320302", "Path(4,1,0f000000002800000000000000500300000000005e27f1007553d5439eb5de2add4c99320302)"},
		{3, 0x17, "010000000000000000000000", "Path(3,23,010000000000000000000000)"},
		{6, 1, "", "Path(6,1,)"},
	}
	for _, tc := range tests {
		if got := devicePathNode(tc.typ, tc.sub, hexBytes(t, tc.data)); got != tc.want {
			t.Errorf("node %d/%d %s = %q, want %q", tc.typ, tc.sub, tc.data, got, tc.want)
		}
	}
}

func TestEventDetails(t *testing.T) {
	tests := []struct {
		name string
		typ  uint32
		data string
		want string // JSON
	}{
		{"ipl ascii", 0xd, "4d6f6b4c69737400", `{"string":"MokList"}`},
		{"ipl gce utf-16", 0xd, "2e006c0069006e00750078000000", `{"string":"linux"}`},
		{"ipl binary", 0xd, "ff0102", `{"string":"ff0102"}`},
		{"efi variable", 0x80000001, "61dfe48bca93d211aa0d00e098032b8c0900000000000000020000000000000042006f006f0074004f0072006400650072000000",
			`{"unicode_name":"BootOrder","unicode_name_length":9,"variable_data":"AAA=","variable_data_length":2,"variable_name":"61dfe48b-ca93-d211-aa0d-00e098032b8c"}`},
		{"event tag", 0x6, "ec223b8f0d0000004c696e757820696e6974726400", `{"string":"Linux initrd"}`},
		{"event tag lossy", 0x6, "ec223b8f050000004142e282ff", "{\"string\":\"AB\ufffd\ufffd\"}"},
		{"handoff tables", 0x8000000b, "095464785461626c65000100000000000000af96bb93f2b9b84e9462e0ba745642360090800000000000", `{"string":"TdxTable"}`},
		{"separator", 0x4, "00000000", `{}`},
		{"platform config flags", 0xa, "74645f7061796c6f61645f696e666f00001000006f6b", `{"string":"td_payload_info ok"}`},
		{"image load without device path", 0x80000003, "009d9b7a000000008879e4000000000000000000000000000000000000000000", `{}`},
	}
	for _, tc := range tests {
		got, err := parseDetails(tc.typ, hexBytes(t, tc.data))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		var want any
		if err := json.Unmarshal([]byte(tc.want), &want); err != nil {
			t.Fatal(err)
		}
		if g := jsonValue(t, got); !reflect.DeepEqual(g, want) {
			t.Errorf("%s: %v, want %v", tc.name, g, want)
		}
	}
}

// TestEventDetailsReject lists event data Trustee refuses, which makes the
// whole log malformed.
func TestEventDetailsReject(t *testing.T) {
	tests := []struct {
		name string
		typ  uint32
		data string
	}{
		{"efi action not utf-8", 0x80000007, "ff"},
		{"ipl too short", 0xd, "4d"},
		{"ipl odd utf-16", 0xd, "2e0000"},
		{"variable truncated", 0x80000001, "61dfe48bca93d211aa0d00e098032b8c0a000000000000000000000000000000"},
		{"variable unpaired surrogate", 0x80000001, "61dfe48bca93d211aa0d00e098032b8c01000000000000000000000000000000" + "00d8"},
		{"tag truncated", 0x6, "0f74645f7061796c6f616400"},
		{"aael without spaces", 0x6, "4c4541410400000061626364"},
		{"description truncated", 0x8000000a, "3774645f"},
		{"description of length 0", 0x8000000a, "00"},
		{"image load path length 5", 0x80000003, "00000000000000000000000000000000000000000000000005000000000000007fff0400"},
		{"image load node length 2", 0x80000003, "000000000000000000000000000000000000000000000000080000000000000004040200"},
	}
	for _, tc := range tests {
		if _, err := parseDetails(tc.typ, hexBytes(t, tc.data)); err == nil {
			t.Errorf("%s: parsed", tc.name)
		}
	}
}

func TestAAELContent(t *testing.T) {
	tests := map[string]any{
		`{"a": 1.50}`:  map[string]any{"a": json.Number("1.50")},
		`"quoted"`:     "quoted",
		`{"a":1} tail`: `{"a":1} tail`,
		`plain text`:   "plain text",
		``:             "",
		` [1] `:        []any{json.Number("1")},
	}
	for in, want := range tests {
		if got := jsonOrString(in); !reflect.DeepEqual(got, want) {
			t.Errorf("jsonOrString(%q) = %#v, want %#v", in, got, want)
		}
	}
}

func TestLossyUTF8MatchesRust(t *testing.T) {
	// Expected strings follow Rust's String::from_utf8_lossy: one U+FFFD
	// per maximal invalid subsequence.
	tests := map[string]string{
		"a\xe2\x82b":     "a\ufffdb",
		"\xf0\x9f\x98":   "\ufffd",
		"\xed\xa0\x80":   "\ufffd\ufffd\ufffd",
		"\xc0\xaf":       "\ufffd\ufffd",
		"\xef\xbf\xbdok": "\ufffdok",
		"\xf4\x90\x80":   "\ufffd\ufffd\ufffd",
		"ok":             "ok",
	}
	for in, want := range tests {
		if got := lossyUTF8([]byte(in)); got != want {
			t.Errorf("lossyUTF8(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestParseEventLogZeroSpecIDSignature accepts the header guest-components'
// attestation agent writes when the guest has no CCEL: its Spec ID
// signature is all zeros.
func TestParseEventLogZeroSpecIDSignature(t *testing.T) {
	good := goTDXData(t, "ccel/ccel_data.dat")
	zeroed := bytes.Clone(good)
	copy(zeroed[32:], make([]byte, len(specIDSignature)))
	want, err := ParseEventLog(good)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseEventLog(zeroed)
	if err != nil || len(got.Events) != len(want.Events) {
		t.Fatalf("zero signature: %v (%d events, want %d)", err, len(got.Events), len(want.Events))
	}
}
