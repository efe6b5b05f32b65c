// Package nodeinstall installs Cocoon's runtime on a node: the shim and the
// guest under an install directory, one shim configuration per flavour, and
// containerd runtime entries in a drop-in that containerd's configuration
// imports. It runs in the node installer's privileged pod, on host paths.
package nodeinstall

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// criPlugin is containerd 1.6/1.7's CRI plugin (configuration version 2).
const criPlugin = "io.containerd.grpc.v1.cri"

// DropInName is Cocoon's drop-in in the drop-in directory.
const DropInName = "cocoon.toml"

// importMarker ends the imports line the installer adds or changes in
// containerd's configuration; a changed line keeps the original after
// wasMarker, so that uninstalling gives back the same bytes.
const (
	importMarker = " # added by cocoon-node-installer"
	wasMarker    = ", was: "
)

// ErrContainerdConfig is a containerd configuration the installer cannot
// extend without rewriting it.
var ErrContainerdConfig = errors.New("containerd configuration")

// Runtime is one containerd runtime entry (a RuntimeClass's handler).
type Runtime struct {
	Handler    string // cocoon-qemu, ...
	ShimPath   string // containerd-shim-coco-v2, absolute: the runtime_type
	ConfigPath string // the shim's configuration (options.ConfigPath)
}

// Containerd is a node's containerd configuration: host paths, reached
// under Root (where the installer sees the host's root; "" or "/" on the
// host itself).
type Containerd struct {
	ConfigPath string
	DropInDir  string
	Address    string // its gRPC socket
	Root       string
}

func (c Containerd) dropIn() string { return filepath.Join(c.DropInDir, DropInName) }

// local is where the installer reaches the host path p.
func (c Containerd) local(p string) string { return filepath.Join("/", c.Root, p) }

// Install writes the drop-in with runtimes, and with snapshotter (the
// socket of cocoon-snapshotter; "" for none) as the CRI snapshotter, and
// makes the configuration import it; changed says whether containerd must
// restart to see it.
//
// containerd (1.6, 1.7) replaces a plugin's whole section with an imported
// file's, so the drop-in holds the CRI section containerd would otherwise
// use (the configuration's, or the last import's that has one) with
// Cocoon's runtimes added: the user's own settings stay in effect, and the
// user's file changes by one imports line at most.
func (c Containerd) Install(runtimes []Runtime, snapshotter string) (changed bool, err error) {
	main, err := os.ReadFile(c.local(c.ConfigPath))
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrContainerdConfig, err)
	}
	doc, err := parseConfig(main)
	if err != nil {
		return false, err
	}
	withImport, err := addImport(main, doc, c.dropIn())
	if err != nil {
		return false, err
	}
	cri, err := c.effectiveCRI(doc)
	if err != nil {
		return false, err
	}
	dropIn, err := renderDropIn(cri, runtimes, snapshotter)
	if err != nil {
		return false, err
	}
	if err := os.MkdirAll(c.local(c.DropInDir), 0o755); err != nil {
		return false, err
	}
	changedDropIn, err := writeIfChanged(c.local(c.dropIn()), dropIn, 0o644)
	if err != nil {
		return false, err
	}
	changedMain, err := writeIfChanged(c.local(c.ConfigPath), withImport, 0)
	return changedDropIn || changedMain, err
}

// Remove deletes the drop-in and the import Install added; changed says
// whether containerd must restart.
func (c Containerd) Remove() (changed bool, err error) {
	if err := os.Remove(c.local(c.dropIn())); err == nil {
		changed = true
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	os.Remove(c.local(c.DropInDir)) // only when Cocoon made it and it is empty
	main, err := os.ReadFile(c.local(c.ConfigPath))
	if err != nil {
		return changed, fmt.Errorf("%w: %v", ErrContainerdConfig, err)
	}
	restored := removeImport(main, c.dropIn())
	changedMain, err := writeIfChanged(c.local(c.ConfigPath), restored, 0)
	return changed || changedMain, err
}

// DataRoot is containerd's root directory (root in its configuration).
func (c Containerd) DataRoot() (string, error) {
	main, err := os.ReadFile(c.local(c.ConfigPath))
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrContainerdConfig, err)
	}
	doc, err := parseConfig(main)
	if err != nil {
		return "", err
	}
	if root, _ := doc["root"].(string); root != "" {
		return root, nil
	}
	return "/var/lib/containerd", nil
}

func parseConfig(b []byte) (map[string]any, error) {
	var doc map[string]any
	if _, err := toml.Decode(string(b), &doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrContainerdConfig, err)
	}
	if v, _ := doc["version"].(int64); v != 2 {
		return nil, fmt.Errorf("%w: version %v: the installer writes version 2 (containerd 1.6, 1.7)", ErrContainerdConfig, doc["version"])
	}
	return doc, nil
}

// effectiveCRI is the CRI section containerd would load without Cocoon's
// drop-in: the main file's, replaced by each import's in order.
func (c Containerd) effectiveCRI(doc map[string]any) (map[string]any, error) {
	cri := criSection(doc)
	imports, _ := doc["imports"].([]any)
	for _, imp := range imports {
		pattern, _ := imp.(string)
		if !filepath.IsAbs(pattern) {
			pattern = filepath.Join(filepath.Dir(c.ConfigPath), pattern)
		}
		files, err := filepath.Glob(c.local(pattern))
		if err != nil {
			return nil, fmt.Errorf("%w: imports %q: %v", ErrContainerdConfig, pattern, err)
		}
		for _, f := range files {
			if f == c.local(c.dropIn()) {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrContainerdConfig, err)
			}
			var sub map[string]any
			if _, err := toml.Decode(string(b), &sub); err != nil {
				return nil, fmt.Errorf("%w: %s: %v", ErrContainerdConfig, f, err)
			}
			if s := criSection(sub); s != nil {
				cri = s
			}
		}
	}
	if cri == nil {
		cri = map[string]any{}
	}
	return cri, nil
}

func criSection(doc map[string]any) map[string]any {
	plugins, _ := doc["plugins"].(map[string]any)
	cri, _ := plugins[criPlugin].(map[string]any)
	return cri
}

// renderDropIn is the drop-in: cri with Cocoon's runtime entries and,
// with a snapshotter socket, cocoon-snapshotter as the proxy plugin CRI
// unpacks every image with (containerd 1.6 has one CRI snapshotter).
func renderDropIn(cri map[string]any, runtimes []Runtime, snapshotter string) ([]byte, error) {
	ctrd, _ := cri["containerd"].(map[string]any)
	if ctrd == nil {
		ctrd = map[string]any{}
		cri["containerd"] = ctrd
	}
	entries, _ := ctrd["runtimes"].(map[string]any)
	if entries == nil {
		entries = map[string]any{}
		ctrd["runtimes"] = entries
	}
	for _, r := range runtimes {
		// An absolute runtime_type names the shim binary (containerd 1.6
		// and later); 1.6's CRI ignores runtime_path for the sandbox.
		entries[r.Handler] = map[string]any{
			"runtime_type":          r.ShimPath,
			"pod_annotations":       []string{"io.katacontainers.*"},
			"container_annotations": []string{"io.katacontainers.*"},
			"options":               map[string]any{"ConfigPath": r.ConfigPath},
		}
	}
	doc := map[string]any{"version": 2, "plugins": map[string]any{criPlugin: cri}}
	if snapshotter != "" {
		// The snapshotter needs CRI's layer labels (which image a layer is of).
		ctrd["snapshotter"], ctrd["disable_snapshot_annotations"] = SnapshotterName, false
		doc["proxy_plugins"] = map[string]any{SnapshotterName: map[string]any{"type": "snapshot", "address": snapshotter}}
	}
	var b bytes.Buffer
	b.WriteString("# Written by cocoon-node-installer: containerd's CRI settings with Cocoon's\n# runtimes added. Removed when Cocoon is uninstalled.\n")
	err := toml.NewEncoder(&b).Encode(doc)
	return b.Bytes(), err
}

var importsLine = regexp.MustCompile(`(?m)^imports[ \t]*=[ \t]*\[(.*)\][ \t]*$`)

// addImport returns the configuration importing path: unchanged when an
// imports entry names it already, else with path added to a one-line
// imports array or, when there is none, a new imports line first. The
// line changed ends with importMarker.
func addImport(main []byte, doc map[string]any, path string) ([]byte, error) {
	imports, hasImports := doc["imports"].([]any)
	for _, imp := range imports {
		if s, _ := imp.(string); s == path {
			return main, nil
		}
	}
	if !hasImports {
		return append([]byte("imports = ["+strconv.Quote(path)+"]"+importMarker+"\n"), main...), nil
	}
	loc := importsLine.FindSubmatchIndex(main)
	if loc == nil {
		return nil, fmt.Errorf("%w: imports spans several lines or has a comment: add %q to it", ErrContainerdConfig, path)
	}
	items := strings.TrimRight(strings.TrimSpace(string(main[loc[2]:loc[3]])), ",")
	if items != "" {
		items += ", "
	}
	var b bytes.Buffer
	b.Write(main[:loc[0]])
	b.WriteString("imports = [" + items + strconv.Quote(path) + "]" + importMarker + wasMarker + string(main[loc[0]:loc[1]]))
	b.Write(main[loc[1]:])
	return b.Bytes(), nil
}

// removeImport undoes addImport.
func removeImport(main []byte, path string) []byte {
	lines := strings.SplitAfter(string(main), "\n")
	for i, l := range lines {
		body := strings.TrimSuffix(l, "\n")
		_, mark, ok := strings.Cut(body, importMarker)
		if !ok || !strings.HasPrefix(body, "imports") || !strings.Contains(body, strconv.Quote(path)) {
			continue
		}
		if was, ok := strings.CutPrefix(mark, wasMarker); ok {
			lines[i] = was + l[len(body):]
		} else {
			lines[i] = ""
		}
		break
	}
	return []byte(strings.Join(lines, ""))
}

// writeIfChanged replaces path's content atomically when it differs; mode
// 0 keeps the file's.
func writeIfChanged(path string, b []byte, mode os.FileMode) (bool, error) {
	old, err := os.ReadFile(path)
	if err == nil && bytes.Equal(old, b) {
		return false, nil
	}
	if mode == 0 {
		fi, err := os.Stat(path)
		if err != nil {
			return false, err
		}
		mode = fi.Mode().Perm()
	}
	tmp := path + ".cocoon-tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return false, err
	}
	return true, nil
}
