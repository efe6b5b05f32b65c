package kbs

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/cocoon-cc/cocoon/store"
)

// ReplicaNamespace keeps a record per running KBS process in the store:
// its id, start and last heartbeat. Replicas sharing a store list each
// other from it; alone, a KBS lists itself.
const ReplicaNamespace = "replicas"

const (
	replicaBeat = 15 * time.Second
	// replicaGone: a record whose heartbeat is older is of a replica that
	// stopped without deleting it (killed); it is no longer listed, and
	// the next heartbeat of any replica deletes it.
	replicaGone = 2 * time.Minute
)

// Replica is a KBS process serving from the store this one uses.
type Replica struct {
	ID        string    `json:"id"`
	Started   time.Time `json:"started"`
	Heartbeat time.Time `json:"heartbeat"`
	Self      bool      `json:"self,omitempty"`
}

// replicas is this process's record and the store the records are in.
type replicas struct {
	store store.Store
	self  Replica
	now   func() time.Time
}

func newReplicas(st store.Store, now func() time.Time) *replicas {
	host, _ := os.Hostname()
	suffix := make([]byte, 4) // pids repeat across hosts and containers
	rand.Read(suffix)
	return &replicas{store: st, now: now,
		self: Replica{ID: fmt.Sprintf("%s/%d/%x", host, os.Getpid(), suffix), Started: now().UTC()}}
}

func (r *replicas) record() Replica {
	rec := r.self
	rec.Heartbeat = r.now().UTC()
	return rec
}

// list reads the records of the live replicas, this one first.
func (r *replicas) list(ctx context.Context) (live []Replica, gone []string, err error) {
	ids, err := r.store.List(ctx, ReplicaNamespace)
	if err != nil {
		return nil, nil, fmt.Errorf("replicas: %w", err)
	}
	self := r.record()
	self.Self = true
	live = []Replica{self}
	for _, id := range ids {
		if id == r.self.ID {
			continue
		}
		b, err := r.store.Get(ctx, ReplicaNamespace, id)
		if errors.Is(err, store.ErrNotFound) { // left since List
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("replicas: %s: %w", id, err)
		}
		var rep Replica
		if json.Unmarshal(b, &rep) != nil || self.Heartbeat.Sub(rep.Heartbeat) > replicaGone {
			gone = append(gone, id)
			continue
		}
		rep.Self = false
		live = append(live, rep)
	}
	slices.SortStableFunc(live[1:], func(a, b Replica) int {
		return cmp.Or(a.Started.Compare(b.Started), cmp.Compare(a.ID, b.ID))
	})
	return live, gone, nil
}

// Replicas lists the live replicas, this one first.
func (r *replicas) Replicas(ctx context.Context) ([]Replica, error) {
	live, _, err := r.list(ctx)
	return live, err
}

// beat writes this process's record and deletes those of replicas gone.
func (r *replicas) beat(ctx context.Context) error {
	b, _ := json.Marshal(r.record())
	if err := r.store.Put(ctx, ReplicaNamespace, r.self.ID, b); err != nil {
		return fmt.Errorf("replicas: heartbeat: %w", err)
	}
	_, gone, err := r.list(ctx)
	for _, id := range gone {
		if err == nil {
			err = r.store.Delete(ctx, ReplicaNamespace, id)
		}
	}
	return err
}

// run beats every interval until ctx ends, then deletes this process's
// record: a replica that stops is no longer listed.
func (r *replicas) run(ctx context.Context, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := r.beat(ctx); err != nil && ctx.Err() == nil {
			log.Warn("replica heartbeat failed", "err", err)
		}
		select {
		case <-ctx.Done():
			leave, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := r.store.Delete(leave, ReplicaNamespace, r.self.ID); err != nil {
				log.Warn("replica record not deleted", "err", err)
			}
			return
		case <-t.C:
		}
	}
}
