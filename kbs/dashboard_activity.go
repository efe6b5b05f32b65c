package kbs

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// Dashboard time series: attestations and resource requests counted per
// minute over the last hours, and in all since this process started.
const (
	activityStep    = time.Minute
	activityBuckets = 180 // three hours of minutes
	// maxResources bounds the resource paths counted one by one: any path
	// may be asked for, also by unattested clients. Past it, the rest count
	// under otherResource.
	maxResources  = 512
	otherResource = "(other)"
)

// Outcomes of what the activity counts besides appraisal statuses and
// error kinds.
const (
	outcomeFailure  = "failure"  // an attestation that produced no token
	outcomeReleased = "released" // a resource sent to an attested client
)

// attestationKey is an attestation's TEE and outcome: the appraisal
// status of its token (cpu0's ear.status), or outcomeFailure.
type attestationKey struct{ TEE, Status string }

// requestKey is a resource request's path and outcome: outcomeReleased or
// the error kind it was refused with.
type requestKey struct{ Resource, Reason string }

// minute is one bucket of the ring: the counts of the minute starting at
// start (unix seconds).
type minute struct {
	start        int64
	attestations map[attestationKey]uint64
	requests     map[string]uint64 // by reason
}

// activity keeps the counts; the dashboard's only record of events, fed
// where the Prometheus counters are.
type activity struct {
	mu           sync.Mutex
	ring         [activityBuckets]minute
	attestations map[attestationKey]uint64
	requests     map[requestKey]uint64
	resources    map[string]bool // paths counted one by one
}

func newActivity() *activity {
	return &activity{attestations: map[attestationKey]uint64{}, requests: map[requestKey]uint64{},
		resources: map[string]bool{}}
}

// bucket returns the ring's bucket of t, emptied if it held an older
// minute; nil if it holds a newer one (t was read before a clock step or
// a long wait for mu). Called with mu held.
func (a *activity) bucket(t time.Time) *minute {
	start := t.Truncate(activityStep).Unix()
	b := &a.ring[(start/int64(activityStep/time.Second))%activityBuckets]
	switch {
	case b.start > start:
		return nil
	case b.start < start:
		*b = minute{start: start, attestations: map[attestationKey]uint64{}, requests: map[string]uint64{}}
	}
	return b
}

func (a *activity) attestation(t time.Time, tee, status string) {
	k := attestationKey{TEE: tee, Status: status}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.attestations[k]++
	if b := a.bucket(t); b != nil {
		b.attestations[k]++
	}
}

func (a *activity) request(t time.Time, resource, reason string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.resources[resource] {
		if len(a.resources) >= maxResources {
			resource = otherResource
		} else {
			a.resources[resource] = true
		}
	}
	a.requests[requestKey{Resource: resource, Reason: reason}]++
	if b := a.bucket(t); b != nil {
		b.requests[reason]++
	}
}

// Point is a minute's count: [unix seconds of its start, count].
type Point [2]int64

// ActivityWindow is the span the per-minute series cover.
type ActivityWindow struct {
	Start       int64 `json:"start"` // unix seconds of the first minute
	StepSeconds int64 `json:"step_seconds"`
	Buckets     int   `json:"buckets"`
}

// AttestationCount is the attestations of one TEE and outcome.
type AttestationCount struct {
	TEE    string `json:"tee"`
	Status string `json:"status"`
	Count  uint64 `json:"count"`
}

// AttestationSeries is AttestationCount per minute, minutes without any
// left out.
type AttestationSeries struct {
	TEE    string  `json:"tee"`
	Status string  `json:"status"`
	Points []Point `json:"points"`
}

// RequestCount is the requests for one resource with one outcome.
type RequestCount struct {
	Resource string `json:"resource"`
	Reason   string `json:"reason"`
	Count    uint64 `json:"count"`
}

// RequestSeries is the requests of one outcome per minute.
type RequestSeries struct {
	Reason string  `json:"reason"`
	Points []Point `json:"points"`
}

// ActivitySnapshot is what the activity counted, as of one moment.
type ActivitySnapshot struct {
	Window              ActivityWindow      `json:"window"`
	Attestations        []AttestationCount  `json:"attestations"`
	AttestationsPerMin  []AttestationSeries `json:"attestations_per_minute"`
	Requests            []RequestCount      `json:"resource_requests"`
	RequestsPerMinute   []RequestSeries     `json:"resource_requests_per_minute"`
	ResourcesOverflowed bool                `json:"resources_overflowed"`
}

// snapshot copies the counts, series sorted by key and points by time.
func (a *activity) snapshot(now time.Time) ActivitySnapshot {
	step := int64(activityStep / time.Second)
	first := now.Truncate(activityStep).Unix() - (activityBuckets-1)*step
	snap := ActivitySnapshot{Window: ActivityWindow{Start: first, StepSeconds: step, Buckets: activityBuckets}}
	att := map[attestationKey][]Point{}
	req := map[string][]Point{}
	a.mu.Lock()
	for k, n := range a.attestations {
		snap.Attestations = append(snap.Attestations, AttestationCount{TEE: k.TEE, Status: k.Status, Count: n})
	}
	for k, n := range a.requests {
		snap.Requests = append(snap.Requests, RequestCount{Resource: k.Resource, Reason: k.Reason, Count: n})
	}
	snap.ResourcesOverflowed = len(a.resources) >= maxResources
	for i := range a.ring {
		b := &a.ring[i]
		if b.start < first || b.start > now.Unix() {
			continue
		}
		for k, n := range b.attestations {
			att[k] = append(att[k], Point{b.start, int64(n)})
		}
		for r, n := range b.requests {
			req[r] = append(req[r], Point{b.start, int64(n)})
		}
	}
	a.mu.Unlock()
	byTime := func(x, y Point) int { return cmp.Compare(x[0], y[0]) }
	for k, pts := range att {
		slices.SortFunc(pts, byTime)
		snap.AttestationsPerMin = append(snap.AttestationsPerMin, AttestationSeries{TEE: k.TEE, Status: k.Status, Points: pts})
	}
	for r, pts := range req {
		slices.SortFunc(pts, byTime)
		snap.RequestsPerMinute = append(snap.RequestsPerMinute, RequestSeries{Reason: r, Points: pts})
	}
	slices.SortFunc(snap.Attestations, func(x, y AttestationCount) int {
		return cmp.Or(cmp.Compare(x.TEE, y.TEE), cmp.Compare(x.Status, y.Status))
	})
	slices.SortFunc(snap.AttestationsPerMin, func(x, y AttestationSeries) int {
		return cmp.Or(cmp.Compare(x.TEE, y.TEE), cmp.Compare(x.Status, y.Status))
	})
	slices.SortFunc(snap.Requests, func(x, y RequestCount) int {
		return cmp.Or(cmp.Compare(x.Resource, y.Resource), cmp.Compare(x.Reason, y.Reason))
	})
	slices.SortFunc(snap.RequestsPerMinute, func(x, y RequestSeries) int { return cmp.Compare(x.Reason, y.Reason) })
	return snap
}
