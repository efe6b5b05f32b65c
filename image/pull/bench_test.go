package pull

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"hash"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/image/decrypt"
	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/cocoon-cc/cocoon/image/registry"
	"github.com/cocoon-cc/cocoon/image/store"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// benchMix is a generated image: its layers' uncompressed sizes and the
// share of text-like, binary-like and incompressible file bytes.
type benchMix struct {
	name                string
	layers              []int64
	text, binary, small int // percent of files (small: text files of at most 32 KiB)
}

const mib = 1 << 20

var benchMixes = []benchMix{
	// Already-compressed content (models, media): gzip and inflate pass
	// it through stored blocks, so the crypto and the copies dominate.
	{name: "incompressible", layers: []int64{256 * mib, 256 * mib, 256 * mib, 256 * mib}},
	// A typical distribution image: many small text files, binaries and
	// some compressed payloads, layers of falling size.
	{name: "typical", layers: []int64{384 * mib, 256 * mib, 192 * mib, 128 * mib, 64 * mib}, text: 25, binary: 20, small: 50},
}

// BenchmarkPull1GiB pulls, verifies, decrypts and unpacks a generated
// 1 GiB encrypted image from docker-registry in a child process (for its
// peak RSS), and in the same run measures the floor (one pass of read +
// SHA-256 + AES-CTR/HMAC-SHA256 + gunzip + SHA-256 over the same stored
// blobs, the least a verifying, decrypting pull must compute) and skopeo
// copy --decryption-key + umoci unpack of the same image. Throughputs are
// uncompressed image bytes per second.
func BenchmarkPull1GiB(b *testing.B) {
	for _, bin := range []string{"skopeo", "umoci", gnuTime} {
		if _, err := exec.LookPath(bin); err != nil {
			b.Skipf("%s not installed (scripts/install-deps.sh)", bin)
		}
	}
	reg := imagetest.StartRegistry(b)
	keys := newBenchKeys(b)
	for _, mix := range benchMixes {
		var img *benchImage
		b.Run(mix.name, func(b *testing.B) {
			if img == nil {
				img = pushBenchImage(b, reg, keys, mix)
			}
			var ours, floor, peer time.Duration
			var rss, peerRSS int64
			for range b.N {
				// Each starts with no dirty pages of the others to write back.
				syscall.Sync()
				d, r := img.pullChild(b)
				ours, rss = ours+d, max(rss, r)
				syscall.Sync()
				floor += img.floor(b)
				syscall.Sync()
				d, r = img.skopeoUmoci(b, keys)
				peer, peerRSS = peer+d, max(peerRSS, r)
			}
			rate := func(d time.Duration) float64 { return float64(img.size) * float64(b.N) / d.Seconds() / 1e6 }
			b.ReportMetric(rate(ours), "MB/s")
			b.ReportMetric(rate(floor), "floor-MB/s")
			b.ReportMetric(rate(peer), "skopeo+umoci-MB/s")
			b.ReportMetric(100*floor.Seconds()/ours.Seconds(), "%floor")
			b.ReportMetric(peer.Seconds()/ours.Seconds(), "x-skopeo+umoci")
			b.ReportMetric(float64(rss)/mib, "peak-RSS-MiB")
			b.ReportMetric(float64(peerRSS)/mib, "skopeo+umoci-RSS-MiB")
		})
	}
}

// benchKeys: the JWE recipient skopeo decrypts with, and ocienc acting as
// ocicrypt's key provider for Cocoon's side.
type benchKeys struct {
	dir, privPEM, pubPEM, ocienc, providerConf string
}

func newBenchKeys(b *testing.B) *benchKeys {
	k := &benchKeys{dir: b.TempDir()}
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	k.privPEM, k.pubPEM = filepath.Join(k.dir, "priv.pem"), filepath.Join(k.dir, "pub.pem")
	writeFile(b, k.privPEM, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)}))
	writeFile(b, k.pubPEM, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
	k.ocienc = filepath.Join(k.dir, "ocienc")
	cmd := exec.Command("go", "build", "-o", k.ocienc, "./image/imagetest/ocienc")
	cmd.Dir = testutil.RepoRoot(b)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build ocienc: %v\n%s", err, out)
	}
	conf, _ := json.Marshal(map[string]any{"key-providers": map[string]any{
		"attestation-agent": map[string]any{"cmd": map[string]any{"path": k.ocienc, "args": []string{"plain-keyprovider"}}}}})
	k.providerConf = filepath.Join(k.dir, "ocicrypt.conf")
	writeFile(b, k.providerConf, conf)
	return k
}

func writeFile(b *testing.B, p string, data []byte) {
	if err := os.WriteFile(p, data, 0o600); err != nil {
		b.Fatal(err)
	}
}

// benchImage is a generated image pushed to the registry.
type benchImage struct {
	reg    *imagetest.Registry
	ref    string
	size   int64 // uncompressed layer bytes
	layers []ocispec.Descriptor
}

// pushBenchImage generates mix as an OCI layout on disk (never whole in
// memory), encrypts its layers and pushes it.
func pushBenchImage(b *testing.B, reg *imagetest.Registry, k *benchKeys, mix benchMix) *benchImage {
	start := time.Now()
	layout := b.TempDir()
	blobs := filepath.Join(layout, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		b.Fatal(err)
	}
	rng := mrand.NewChaCha8([32]byte{byte(len(mix.name))})
	gen := newContent(rng)
	img := &benchImage{reg: reg, ref: reg.Host + "/bench/" + mix.name + ":v1"}
	cfg := ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}, RootFS: ocispec.RootFS{Type: "layers"}}
	var compressed int64
	for i, size := range mix.layers {
		plain := filepath.Join(layout, "plain")
		diffID := writeLayer(b, plain, i, size, mix, gen)
		enc := encryptBenchLayer(b, k, plain, filepath.Join(blobs, "enc"))
		if err := os.Rename(filepath.Join(blobs, "enc"), filepath.Join(blobs, enc.Digest.Encoded())); err != nil {
			b.Fatal(err)
		}
		fi, _ := os.Stat(plain)
		compressed += fi.Size()
		os.Remove(plain)
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, diffID)
		img.layers = append(img.layers, enc)
		img.size += size
	}
	put := func(mt string, v any) ocispec.Descriptor {
		data, _ := json.Marshal(v)
		d := imagetest.Descriptor(mt, data)
		writeFile(b, filepath.Join(blobs, d.Digest.Encoded()), data)
		return d
	}
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: put(ocispec.MediaTypeImageConfig, cfg), Layers: img.layers}
	md := put(ocispec.MediaTypeImageManifest, m)
	md.Annotations = map[string]string{ocispec.AnnotationRefName: "v1"}
	idx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{md}})
	writeFile(b, filepath.Join(layout, "index.json"), idx)
	writeFile(b, filepath.Join(layout, ocispec.ImageLayoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`))
	run(b, nil, "skopeo", "copy", "--dest-tls-verify=false", "oci:"+layout+":v1", "docker://"+img.ref)
	os.RemoveAll(layout)
	b.Logf("%s: %d layers, %d MiB uncompressed, %d MiB gzip (%.0f%%), generated and pushed in %v",
		mix.name, len(mix.layers), img.size/mib, compressed/mib, 100*float64(compressed)/float64(img.size),
		time.Since(start).Round(time.Second))
	return img
}

// writeLayer writes a gzip layer of size uncompressed bytes to path and
// returns its diff ID.
func writeLayer(b *testing.B, path string, n int, size int64, mix benchMix, gen *content) digest.Digest {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, mib)
	zw, _ := gzip.NewWriterLevel(bw, gzip.DefaultCompression)
	diff := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(zw, diff))
	mtime := time.Unix(1700000000, 0)
	var written int64
	for i := 0; written < size; i++ {
		name := fmt.Sprintf("layer%d/d%03d/f%06d", n, i%512, i)
		body := gen.file(mix, min(size-written, 16*mib))
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: mtime}); err != nil {
			b.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			b.Fatal(err)
		}
		written += int64(len(body)) + 512
	}
	for _, err := range []error{tw.Close(), zw.Close(), bw.Flush()} {
		if err != nil {
			b.Fatal(err)
		}
	}
	return digest.NewDigest(digest.SHA256, diff)
}

// content makes file bodies: slices of a word-salad text and of a
// low-entropy "binary", or fresh random bytes.
type content struct {
	rng          *mrand.ChaCha8
	text, binary []byte
	buf          []byte
}

func newContent(rng *mrand.ChaCha8) *content {
	c := &content{rng: rng, text: make([]byte, 0, 8*mib), binary: make([]byte, 8*mib), buf: make([]byte, 16*mib)}
	words := make([]string, 4096)
	for i := range words {
		w := make([]byte, 2+rng.Uint64()%9)
		for j := range w {
			w[j] = 'a' + byte(rng.Uint64()%26)
		}
		words[i] = string(w)
	}
	for len(c.text) < cap(c.text)-16 {
		c.text = append(c.text, words[rng.Uint64()%uint64(len(words))]...)
		c.text = append(c.text, " \n"[min(rng.Uint64()%12, 1)])
	}
	rng.Read(c.binary)
	for i := range c.binary {
		switch c.binary[i] % 8 { // mostly zeros and small values, like code and tables
		case 0, 1, 2:
			c.binary[i] = 0
		case 3, 4:
			c.binary[i] &= 0x0f
		}
	}
	return c
}

func (c *content) file(mix benchMix, left int64) []byte {
	r := int(c.rng.Uint64() % 100)
	switch {
	case r < mix.small:
		return c.slice(c.text, min(512+int64(c.rng.Uint64()%(32<<10)), left))
	case r < mix.small+mix.text:
		return c.slice(c.text, min(64<<10+int64(c.rng.Uint64()%(2*mib)), left))
	case r < mix.small+mix.text+mix.binary:
		return c.slice(c.binary, min(256<<10+int64(c.rng.Uint64()%(4*mib)), left))
	}
	n := min(mib+int64(c.rng.Uint64()%(15*mib)), left)
	c.rng.Read(c.buf[:n])
	return c.buf[:n]
}

func (c *content) slice(src []byte, n int64) []byte {
	n = min(n, int64(len(src)))
	off := int64(c.rng.Uint64() % uint64(int64(len(src))-n+1))
	return src[off : off+n]
}

// encryptBenchLayer encrypts a gzip layer for both the key provider
// (Cocoon) and the JWE key (skopeo) with ocicrypt.
func encryptBenchLayer(b *testing.B, k *benchKeys, in, out string) ocispec.Descriptor {
	cmd := exec.Command(k.ocienc, in, out, ocispec.MediaTypeImageLayerGzip, "attestation-agent", k.pubPEM)
	cmd.Env = append(os.Environ(), "OCICRYPT_KEYPROVIDER_CONFIG="+k.providerConf)
	cmd.Stderr = os.Stderr
	js, err := cmd.Output()
	if err != nil {
		b.Fatalf("ocienc: %v", err)
	}
	var ann map[string]string
	if err := json.Unmarshal(js, &ann); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	d, err := digest.FromReader(f)
	if err != nil {
		b.Fatal(err)
	}
	fi, _ := f.Stat()
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip + "+encrypted", Digest: d, Size: fi.Size(), Annotations: ann}
}

// gnuTime measures a command's peak RSS. Go starts children with
// CLONE_VM, so the kernel counts this process's RSS in theirs
// (exec_mmap's hiwater of the shared mm); GNU time forks without it.
const gnuTime = "/usr/bin/time"

// run runs a command and returns its wall time and peak RSS in bytes.
func run(b *testing.B, env []string, name string, args ...string) (time.Duration, int64) {
	rssFile := filepath.Join(b.TempDir(), "rss")
	cmd := exec.Command(gnuTime, append([]string{"-f", "%M", "-o", rssFile, name}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	if err != nil {
		b.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	raw, err := os.ReadFile(rssFile)
	if err != nil {
		b.Fatal(err)
	}
	kib, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
	if err != nil {
		b.Fatalf("GNU time output %q: %v", raw, err)
	}
	return d, kib << 10
}

// pullChild pulls the image with Cocoon's puller in a child process
// (see TestMain) into a fresh store and bundle.
func (img *benchImage) pullChild(b *testing.B) (time.Duration, int64) {
	dir := b.TempDir()
	defer imagetest.UnmountBundles(dir)
	arg, _ := json.Marshal(benchChildArgs{Host: img.reg.Host, Ref: img.ref, Dir: dir})
	d, rss := run(b, []string{benchChildEnv + "=" + string(arg)}, os.Args[0], "-test.run=^$")
	if _, err := os.Stat(filepath.Join(dir, "bundle", "config.json")); err != nil {
		b.Fatalf("the child made no bundle: %v", err)
	}
	return d, rss
}

// benchChildEnv makes the test binary a benchmark child that pulls and
// exits; its value is benchChildArgs in JSON. The child writes a CPU
// profile of its pull to $COCOON_PULL_BENCH_CPUPROFILE when that is set.
const benchChildEnv = "COCOON_PULL_BENCH_CHILD"

type benchChildArgs struct{ Host, Ref, Dir string }

func TestMain(m *testing.M) {
	if v := os.Getenv(benchChildEnv); v != "" {
		if err := benchChild(v); err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// benchChild pulls Ref into Dir/bundle through the store Dir/store.
func benchChild(arg string) error {
	var a benchChildArgs
	if err := json.Unmarshal([]byte(arg), &a); err != nil {
		return err
	}
	conf, err := registry.Parse([]byte(fmt.Sprintf("[[registry]]\nlocation = %q\ninsecure = true\n", a.Host)))
	if err != nil {
		return err
	}
	st, err := store.Open(filepath.Join(a.Dir, "store"))
	if err != nil {
		return err
	}
	if p := os.Getenv("COCOON_PULL_BENCH_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	_, err = New(st, Options{Registries: conf, Unwrapper: plainUnwrapper{}}).Pull(context.Background(), a.Ref, filepath.Join(a.Dir, "bundle"))
	return err
}

// plainUnwrapper reads the options ocienc's plain key provider left
// unwrapped in the annotation.
type plainUnwrapper struct{}

func (plainUnwrapper) UnwrapKey(_ context.Context, packet []byte) ([]byte, error) {
	return append([]byte(nil), packet...), nil
}

// floor is one pass over the registry's stored blobs of what a verifying,
// decrypting pull must compute, with the standard library's primitives and
// the same gzip decoder, reading and hashing 1 MiB blocks.
func (img *benchImage) floor(b *testing.B) time.Duration {
	buf := make([]byte, mib)
	start := time.Now()
	for _, l := range img.layers {
		f, err := os.Open(img.reg.BlobPath(l.Digest.Encoded()))
		if err != nil {
			b.Fatal(err)
		}
		src := newFloorReader(b, f, l)
		zr, err := gzip.NewReader(bufio.NewReaderSize(src, mib))
		if err != nil {
			b.Fatal(err)
		}
		diff := sha256.New()
		if _, err := io.CopyBuffer(diff, zr, buf); err != nil {
			b.Fatal(err)
		}
		f.Close()
		if !hmac.Equal(src.mac.Sum(nil), src.wantMAC) || digest.NewDigest(digest.SHA256, src.blob) != l.Digest {
			b.Fatal("floor: layer does not verify")
		}
	}
	return time.Since(start)
}

// floorReader hashes, MACs and decrypts what it reads.
type floorReader struct {
	r         io.Reader
	blob, mac hash.Hash
	ctr       cipher.Stream
	wantMAC   []byte
}

func newFloorReader(b *testing.B, f io.Reader, l ocispec.Descriptor) *floorReader {
	var priv struct {
		SymKey        []byte            `json:"symkey"`
		CipherOptions map[string][]byte `json:"cipheroptions"`
	}
	var pub struct {
		Hmac []byte `json:"hmac"`
	}
	for v, ann := range map[any]string{&priv: decrypt.AnnotationKeyProvider, &pub: decrypt.AnnotationPubOpts} {
		raw, err := base64.StdEncoding.DecodeString(l.Annotations[ann])
		if err != nil {
			b.Fatal(err)
		}
		if err := json.Unmarshal(raw, v); err != nil {
			b.Fatal(err)
		}
	}
	block, err := aes.NewCipher(priv.SymKey)
	if err != nil {
		b.Fatal(err)
	}
	return &floorReader{r: f, blob: sha256.New(), mac: hmac.New(sha256.New, priv.SymKey),
		ctr: cipher.NewCTR(block, priv.CipherOptions["nonce"]), wantMAC: pub.Hmac}
}

func (r *floorReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.blob.Write(p[:n])
	r.mac.Write(p[:n])
	r.ctr.XORKeyStream(p[:n], p[:n])
	return n, err
}

// skopeoUmoci is the peer: skopeo copies the image to an OCI layout,
// decrypting with the JWE key, and umoci unpacks it.
func (img *benchImage) skopeoUmoci(b *testing.B, k *benchKeys) (time.Duration, int64) {
	dir := b.TempDir()
	defer os.RemoveAll(dir)
	layout := "oci:" + filepath.Join(dir, "layout") + ":v1"
	d1, rss1 := run(b, nil, "skopeo", "copy", "--src-tls-verify=false", "--decryption-key", k.privPEM, "docker://"+img.ref, layout)
	d2, rss2 := run(b, nil, "umoci", "unpack", "--image", strings.TrimPrefix(layout, "oci:"), filepath.Join(dir, "bundle"))
	return d1 + d2, max(rss1, rss2)
}
