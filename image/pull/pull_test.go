package pull

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/image/bundle"
	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/cocoon-cc/cocoon/image/registry"
	"github.com/cocoon-cc/cocoon/image/store"
	"github.com/cocoon-cc/cocoon/image/unpack"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// faults sits between the puller and the registry and breaks blob
// downloads on demand.
type faults struct {
	blobGets  atomic.Int32
	fail500   atomic.Int32 // answer this many blob GETs with 500
	truncate  atomic.Int32 // cut this many blob bodies in half
	truncated atomic.Int32
	delay     atomic.Int64 // hold each blob GET this many nanoseconds
	inFlight  atomic.Int32
	maxFlight atomic.Int32 // most blob GETs served at once
}

func proxy(t *testing.T, reg *imagetest.Registry, f *faults) string {
	u, _ := url.Parse("http://" + reg.Host)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	rp.ModifyResponse = func(resp *http.Response) error {
		if f.truncate.Load() > 0 && resp.StatusCode/100 == 2 && strings.Contains(resp.Request.URL.Path, "/blobs/") {
			f.truncate.Add(-1)
			f.truncated.Add(1)
			resp.Body = &halfBody{resp.Body, resp.ContentLength / 2}
		}
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/") && r.Method == http.MethodGet {
			f.blobGets.Add(1)
			n := f.inFlight.Add(1)
			defer f.inFlight.Add(-1)
			for m := f.maxFlight.Load(); n > m && !f.maxFlight.CompareAndSwap(m, n); m = f.maxFlight.Load() {
			}
			time.Sleep(time.Duration(f.delay.Load()))
			if f.fail500.Load() > 0 {
				f.fail500.Add(-1)
				http.Error(w, "injected", http.StatusInternalServerError)
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

type halfBody struct {
	body interface {
		Read([]byte) (int, error)
		Close() error
	}
	left int64
}

func (h *halfBody) Read(p []byte) (int, error) {
	if h.left <= 0 {
		return 0, errors.New("connection reset (injected)")
	}
	if int64(len(p)) > h.left {
		p = p[:h.left]
	}
	n, err := h.body.Read(p)
	h.left -= int64(n)
	return n, err
}

func (h *halfBody) Close() error { return h.body.Close() }

type env struct {
	reg      *imagetest.Registry
	f        *faults
	host     string
	conf     *registry.Config
	store    *store.Store
	storeDir string
	parent   string
}

func newEnv(t *testing.T) *env {
	e := &env{reg: imagetest.StartRegistry(t), f: &faults{}, parent: imagetest.BundleDir(t), storeDir: t.TempDir()}
	e.host = proxy(t, e.reg, e.f)
	// The first source is a dead mirror: pulls must fall through to the
	// registry.
	conf, err := registry.Parse([]byte(fmt.Sprintf(`
[[registry]]
prefix = "example.com/cocoon"
location = "%s/cocoon"
insecure = true
[[registry.mirror]]
location = "127.0.0.1:1/cocoon"
insecure = true
`, e.host)))
	if err != nil {
		t.Fatal(err)
	}
	e.conf = conf
	if e.store, err = store.Open(e.storeDir); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) puller(o Options) *Puller {
	o.Registries = e.conf
	o.Backoff = remote.Backoff{Duration: 1e6, Factor: 1, Steps: 3}
	return New(e.store, o)
}

func appImage(t *testing.T) *imagetest.Image {
	base := imagetest.GzipLayer(t,
		imagetest.Dir("etc", 0o755),
		imagetest.File("etc/passwd", "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n", 0o644),
		imagetest.File("etc/group", "root:x:0:\nstaff:x:50:\n", 0o644),
		imagetest.File("bin/app", "#!/bin/sh\necho hi\n", 0o755),
		imagetest.File("tmp/junk", "junk", 0o644))
	top := imagetest.ZstdLayer(t,
		imagetest.File("tmp/.wh.junk", "", 0),
		imagetest.File("srv/data.txt", strings.Repeat("data ", 5000), 0o640),
		imagetest.Link("srv/data.link", "srv/data.txt"))
	return imagetest.New(t, ocispec.ImageConfig{
		User: "app:staff", Entrypoint: []string{"/bin/app"}, Cmd: []string{"--serve"},
		Env: []string{"MODE=test"}, WorkingDir: "/srv",
	}, base, top)
}

func TestPullBundle(t *testing.T) {
	e := newEnv(t)
	e.reg.Push(t, appImage(t), "cocoon/app:v1", nil)
	ctx := context.Background()
	dir := filepath.Join(e.parent, "bundle")
	img, err := e.puller(Options{}).Pull(ctx, "example.com/cocoon/app:v1", dir)
	if err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(dir, "rootfs")
	if b, err := os.ReadFile(filepath.Join(rootfs, "srv/data.link")); err != nil || len(b) != 25000 {
		t.Fatalf("hard link in zstd layer: %d %v", len(b), err)
	}
	if _, err := os.Lstat(filepath.Join(rootfs, "tmp/junk")); !os.IsNotExist(err) {
		t.Fatalf("whiteout not applied: %v", err)
	}
	var s specs.Spec
	b, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	p := s.Process
	if strings.Join(p.Args, " ") != "/bin/app --serve" || p.Cwd != "/srv" || p.User.UID != 1000 || p.User.GID != 50 ||
		!strings.Contains(strings.Join(p.Env, " "), "MODE=test") || s.Root.Path != "rootfs" {
		t.Fatalf("runtime spec: %+v", p)
	}
	if img.Bytes < 25000 {
		t.Fatalf("uncompressed bytes %d", img.Bytes)
	}

	// A second container of the same image shares the layers in the
	// store: only the config is fetched, and what one container writes
	// the other does not see.
	before := e.f.blobGets.Load()
	again := filepath.Join(e.parent, "again")
	if _, err := e.puller(Options{}).Pull(ctx, "example.com/cocoon/app@"+img.Manifest.String(), again); err != nil {
		t.Fatal(err)
	}
	if got := e.f.blobGets.Load(); got != before+1 {
		t.Fatalf("second pull fetched %d blobs, want 1 (the config)", got-before)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "srv/data.txt"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(again, "rootfs/srv/data.txt")); len(b) != 25000 {
		t.Fatal("a container's write reached the shared layer")
	}
	if err := bundle.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("bundle.Remove left %s: %v", dir, err)
	}
}

// TestPullLayersAtOnce: with a slow registry, layers are fetched and
// extracted at the same time, each blob once, and still stack in order
// (the last one's file wins).
func TestPullLayersAtOnce(t *testing.T) {
	e := newEnv(t)
	var layers []imagetest.Layer
	for i := range 4 {
		layers = append(layers, imagetest.GzipLayer(t,
			imagetest.File("etc/version", fmt.Sprint(i), 0o644),
			imagetest.File(fmt.Sprintf("srv/%d", i), "layer", 0o644)))
	}
	e.reg.Push(t, imagetest.New(t, ocispec.ImageConfig{}, layers...), "cocoon/many:v1", nil)
	e.f.delay.Store(int64(150 * time.Millisecond))
	dir := filepath.Join(e.parent, "bundle")
	if _, err := e.puller(Options{MaxConcurrentDownloads: 2}).Pull(context.Background(), "example.com/cocoon/many:v1", dir); err != nil {
		t.Fatal(err)
	}
	if got := e.f.maxFlight.Load(); got != 2 {
		t.Fatalf("at most %d blob downloads at once, want 2", got)
	}
	if got := e.f.blobGets.Load(); got != 5 {
		t.Fatalf("%d blob GETs, want 5 (config and 4 layers, once each)", got)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "rootfs/etc/version")); err != nil || string(b) != "3" {
		t.Fatalf("etc/version = %q, %v: layers stacked out of order", b, err)
	}
	for i := range 4 {
		if _, err := os.Stat(filepath.Join(dir, "rootfs/srv", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPullTransientFaults(t *testing.T) {
	e := newEnv(t)
	e.reg.Push(t, appImage(t), "cocoon/app:v1", nil)
	e.f.fail500.Store(2)
	e.f.truncate.Store(1)
	if _, err := e.puller(Options{}).Pull(context.Background(), "example.com/cocoon/app:v1", filepath.Join(e.parent, "b")); err != nil {
		t.Fatal(err)
	}
	if e.f.truncated.Load() != 1 || e.f.fail500.Load() != 0 {
		t.Fatal("faults were not injected")
	}
}

// assertNothingLeft checks a failed pull left no bundle and no partial
// layer; the store keeps only the layers below the failed one, which
// every check passed.
func (e *env) assertNothingLeft(t *testing.T, layersKept int) {
	t.Helper()
	if ents, _ := os.ReadDir(filepath.Join(e.storeDir, "layers/sha256")); len(ents) > layersKept {
		t.Fatalf("%d layers in the store, want at most %d", len(ents), layersKept)
	}
	for _, d := range []string{e.parent, filepath.Join(e.storeDir, "ingest")} {
		if ents, _ := os.ReadDir(d); len(ents) != 0 {
			t.Fatalf("left behind in %s: %v", d, ents)
		}
	}
}

func TestPullBadInput(t *testing.T) {
	ctx := context.Background()
	pullErr := func(t *testing.T, e *env, o Options, repo string) error {
		_, err := e.puller(o).Pull(ctx, "example.com/cocoon/"+repo, filepath.Join(e.parent, "bundle"))
		if err == nil {
			t.Fatal("pull succeeded")
		}
		return err
	}
	t.Run("tampered layer", func(t *testing.T) {
		e := newEnv(t)
		img := appImage(t)
		e.reg.Push(t, img, "cocoon/app:v1", nil)
		d := digest.FromBytes(img.Layers[1].Blob)
		p := e.reg.BlobPath(d.Encoded())
		b, _ := os.ReadFile(p)
		b[len(b)/2] ^= 0xff
		os.WriteFile(p, b, 0o644)
		if err := pullErr(t, e, Options{}, "app:v1"); !errors.Is(err, store.ErrDigestMismatch) {
			t.Fatalf("err = %v", err)
		}
		e.assertNothingLeft(t, 1)
	})
	t.Run("wrong diff_id", func(t *testing.T) {
		e := newEnv(t)
		l := imagetest.GzipLayer(t, imagetest.File("a", "a", 0o644))
		l.DiffID = digest.FromString("something else")
		e.reg.Push(t, imagetest.New(t, ocispec.ImageConfig{}, l), "cocoon/diff:v1", nil)
		if err := pullErr(t, e, Options{}, "diff:v1"); !errors.Is(err, store.ErrDigestMismatch) || !strings.Contains(err.Error(), "diff_id") {
			t.Fatalf("err = %v", err)
		}
		e.assertNothingLeft(t, 0)
	})
	t.Run("tar traversal", func(t *testing.T) {
		e := newEnv(t)
		l := imagetest.GzipLayer(t, imagetest.File("ok", "ok", 0o644), imagetest.File("../../escape", "x", 0o644))
		e.reg.Push(t, imagetest.New(t, ocispec.ImageConfig{}, l), "cocoon/trav:v1", nil)
		if err := pullErr(t, e, Options{}, "trav:v1"); !errors.Is(err, unpack.ErrPathTraversal) {
			t.Fatalf("err = %v", err)
		}
		e.assertNothingLeft(t, 0)
	})
	t.Run("absolute symlink escape", func(t *testing.T) {
		e := newEnv(t)
		l := imagetest.GzipLayer(t, imagetest.Symlink("etc", "/etc"), imagetest.File("etc/cocoon-pwned", "x", 0o644))
		e.reg.Push(t, imagetest.New(t, ocispec.ImageConfig{}, l), "cocoon/sym:v1", nil)
		if err := pullErr(t, e, Options{}, "sym:v1"); !errors.Is(err, unpack.ErrSymlinkEscape) {
			t.Fatalf("err = %v", err)
		}
		if _, err := os.Lstat("/etc/cocoon-pwned"); err == nil {
			t.Fatal("wrote to the host's /etc")
		}
		e.assertNothingLeft(t, 0)
	})
	t.Run("decompression bomb", func(t *testing.T) {
		e := newEnv(t)
		l := imagetest.GzipLayer(t, imagetest.File("zeros", strings.Repeat("\x00", 8<<20), 0o644))
		e.reg.Push(t, imagetest.New(t, ocispec.ImageConfig{}, l), "cocoon/bomb:v1", nil)
		if err := pullErr(t, e, Options{Unpack: unpack.Options{MaxSize: 1 << 20}}, "bomb:v1"); !errors.Is(err, unpack.ErrTooLarge) {
			t.Fatalf("err = %v", err)
		}
		e.assertNothingLeft(t, 0)
	})
	t.Run("decompression bomb across layers", func(t *testing.T) {
		// Each layer is under any per-layer bound; together they are over
		// the pull's, whichever layer crosses it first.
		e := newEnv(t)
		a := imagetest.GzipLayer(t, imagetest.File("a", strings.Repeat("\x00", 4<<20), 0o644))
		b := imagetest.GzipLayer(t, imagetest.File("b", strings.Repeat("\x00", 4<<20), 0o644))
		e.reg.Push(t, imagetest.New(t, ocispec.ImageConfig{}, a, b), "cocoon/bombs:v1", nil)
		if err := pullErr(t, e, Options{MaxBytes: 6 << 20}, "bombs:v1"); !errors.Is(err, unpack.ErrTooLarge) {
			t.Fatalf("err = %v", err)
		}
		e.assertNothingLeft(t, 1)
	})
	t.Run("decompression bomb over the space left", func(t *testing.T) {
		// By default a pull may extract what the layer store's filesystem
		// has left, here a 16 MiB tmpfs (the guest's memory): a 64 MiB
		// layer of zeros (64 KiB compressed) is refused before it fills
		// it, and a plain image still pulls.
		imagetest.RequireRoot(t)
		e := newEnv(t)
		if err := unix.Mount("tmpfs", e.storeDir, "tmpfs", 0, "size=16m"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(e.storeDir, unix.MNT_DETACH) })
		var err error
		if e.store, err = store.Open(e.storeDir); err != nil {
			t.Fatal(err)
		}
		l := imagetest.GzipLayer(t, imagetest.File("zeros", strings.Repeat("\x00", 64<<20), 0o644))
		if len(l.Blob) > 1<<20 {
			t.Fatalf("the bomb is %d bytes compressed", len(l.Blob))
		}
		e.reg.Push(t, imagetest.New(t, ocispec.ImageConfig{}, l), "cocoon/bomb:v1", nil)
		if err := pullErr(t, e, Options{}, "bomb:v1"); !errors.Is(err, unpack.ErrTooLarge) {
			t.Fatalf("err = %v", err)
		}
		e.assertNothingLeft(t, 0)
		var st unix.Statfs_t
		if err := unix.Statfs(e.storeDir, &st); err != nil || (st.Blocks-st.Bfree)*uint64(st.Bsize) > 1<<20 {
			t.Fatalf("%d bytes left in the store's filesystem, %v", (st.Blocks-st.Bfree)*uint64(st.Bsize), err)
		}
		e.reg.Push(t, appImage(t), "cocoon/app:v1", nil)
		bundleDir := filepath.Join(e.parent, "app")
		if _, err := e.puller(Options{}).Pull(ctx, "example.com/cocoon/app:v1", bundleDir); err != nil {
			t.Fatalf("a plain image under the default limit: %v", err)
		}
		bundle.Remove(bundleDir)
	})
	t.Run("truncated downloads", func(t *testing.T) {
		e := newEnv(t)
		e.reg.Push(t, appImage(t), "cocoon/app:v1", nil)
		e.f.truncate.Store(1000)
		if err := pullErr(t, e, Options{}, "app:v1"); !errors.Is(err, ErrRegistry) {
			t.Fatalf("err = %v", err)
		}
		e.assertNothingLeft(t, 0)
	})
	t.Run("registry 500s", func(t *testing.T) {
		e := newEnv(t)
		e.reg.Push(t, appImage(t), "cocoon/app:v1", nil)
		e.f.fail500.Store(1000)
		if err := pullErr(t, e, Options{}, "app:v1"); !errors.Is(err, ErrRegistry) {
			t.Fatalf("err = %v", err)
		}
		e.assertNothingLeft(t, 0)
	})
	t.Run("unknown tag", func(t *testing.T) {
		e := newEnv(t)
		if err := pullErr(t, e, Options{}, "nothing:here"); !errors.Is(err, ErrRegistry) {
			t.Fatalf("err = %v", err)
		}
	})
}
