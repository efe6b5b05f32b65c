package snapshotter

import (
	"context"
	"errors"
	"fmt"

	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	namespacesapi "github.com/containerd/containerd/api/services/namespaces/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	snproxy "github.com/containerd/containerd/snapshots/proxy"
)

// PruneStale removes containerd's records of snapshots of PluginName whose
// content is gone (root was removed once the snapshotter was uninstalled;
// containerd, which no longer loaded the plugin, kept its records): an
// image containerd thinks unpacked through it would otherwise fail every
// container ("missing parent") instead of being unpacked again. Only
// records whose snapshot the snapshotter does not have go: the root
// filesystems of containers (which outlived the plugin), then the image
// layers, deepest first. It returns how many it removed.
func (c *ContainerdImages) PruneStale(ctx context.Context) (int, error) {
	nss, err := namespacesapi.NewNamespacesClient(c.conn).List(ctx, &namespacesapi.ListNamespacesRequest{})
	if err != nil {
		return 0, err
	}
	sn := snproxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(c.conn), PluginName)
	var removed int
	var errs []error
	for _, ns := range nss.Namespaces {
		ctx := namespaces.WithNamespace(ctx, ns.Name)
		keys, err := c.snapshotKeys(ctx)
		if err != nil {
			return removed, err
		}
		for _, key := range keys {
			n, err := removeStale(ctx, sn, key)
			removed += n
			if err != nil {
				errs = append(errs, fmt.Errorf("namespace %s: snapshot %s: %w", ns.Name, key, err))
			}
		}
	}
	return removed, errors.Join(errs...)
}

// snapshotKeys are the snapshots of PluginName containerd may hold
// records of: its containers' root filesystems, then its images' layers.
func (c *ContainerdImages) snapshotKeys(ctx context.Context) ([]string, error) {
	resp, err := containersapi.NewContainersClient(c.conn).List(ctx, &containersapi.ListContainersRequest{})
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, ctr := range resp.Containers {
		if ctr.Snapshotter == PluginName && ctr.SnapshotKey != "" {
			keys = append(keys, ctr.SnapshotKey)
		}
	}
	chains, err := c.layerChains(ctx)
	return append(keys, chains...), err
}

// removeStale removes key's record when the snapshotter lacks it.
func removeStale(ctx context.Context, sn snapshots.Snapshotter, key string) (int, error) {
	if _, err := sn.Stat(ctx, key); !errdefs.IsNotFound(err) {
		return 0, err // there (nil), or unknown
	}
	if err := sn.Remove(ctx, key); err != nil {
		if errdefs.IsNotFound(err) {
			return 0, nil // no record either
		}
		return 0, err
	}
	return 1, nil
}
