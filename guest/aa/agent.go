// Package aa is the attestation agent: inside the TEE it hands out
// evidence and attestation tokens, records runtime measurements and binds
// initdata, behind guest-components' AttestationAgentService ttrpc API.
package aa

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cocoon-cc/cocoon/guest/attester"
	"github.com/cocoon-cc/cocoon/protocol"
	aapb "github.com/cocoon-cc/cocoon/protocol/ttrpc/aa"
)

// Errors of the agent's requests; the ttrpc layer maps each to a code.
var (
	// ErrInvalidRequest is a malformed request.
	ErrInvalidRequest = errors.New("aa: invalid request")
	// ErrInitData reports an initdata digest the TEE is not bound to.
	ErrInitData = errors.New("aa: initdata is not bound to this TEE")
	// ErrEventLog reports an event log that no longer matches the
	// registers: an extension succeeded but its record was not written.
	ErrEventLog = errors.New("aa: event log is out of step with the registers")
)

// RuntimeMeasurer is an attester whose TEE has runtime measurement
// registers (TDX RTMRs, TPM PCRs).
type RuntimeMeasurer interface {
	// RuntimeRegister maps a PCR index to the register index the event log
	// records and the register's hash. errors.ErrUnsupported when the TEE
	// offers no way to extend it here.
	RuntimeRegister(pcr uint64) (index uint32, h crypto.Hash, err error)
	// ExtendRuntimeRegister extends the register for pcr with digest.
	ExtendRuntimeRegister(ctx context.Context, pcr uint64, digest []byte) error
}

// InitDataBinder is an attester that can bind (check or extend) an
// initdata digest to its TEE.
type InitDataBinder interface {
	BindInitData(ctx context.Context, digest []byte) error
}

// maxRuntimeData bounds GetEvidence's runtime data for TEEs whose report
// data is not a fixed-width field.
const maxRuntimeData = 64 << 10

// Options configure an Agent.
type Options struct {
	Config   Config
	Attester attester.Attester
	// InitData is the initdata TOML the TEE was launched with, sent to
	// the KBS with the evidence; nil for none.
	InitData []byte
	// EventLogPath is the AAEL file; DefaultEventLogPath when empty.
	EventLogPath string
	// Now is the clock of the token cache; time.Now when nil.
	Now   func() time.Time
	Retry Retry
	// Log receives request failures; never tokens or keys.
	Log *slog.Logger
}

// tokenGetter fetches a fresh token and the answer GetToken returns.
type tokenGetter interface {
	get(ctx context.Context) (answer []byte, token string, err error)
}

// Agent is the attestation agent. It is safe for concurrent use.
type Agent struct {
	attester attester.Attester
	getters  map[string]tokenGetter
	cache    tokenCache
	tokenMu  sync.Mutex
	initPCR  uint64
	log      *slog.Logger

	measureMu sync.Mutex
	eventLog  *EventLog // nil when disabled
	logErr    error
}

// New builds an agent; it opens the event log when aa.toml enables it.
func New(o Options) (*Agent, error) {
	if o.Attester == nil {
		return nil, errors.New("aa: no attester")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{attester: o.Attester, getters: map[string]tokenGetter{}, cache: tokenCache{now: o.Now},
		initPCR: o.Config.EventlogConfig.InitPCR, log: o.Log}
	retry := o.Retry.withDefaults()
	if c := o.Config.TokenConfigs.KBS; c != nil {
		g, err := newKBSGetter(c, o.Attester, o.InitData, retry)
		if err != nil {
			return nil, err
		}
		a.getters["kbs"] = g
	}
	if c := o.Config.TokenConfigs.CoCoAS; c != nil {
		a.getters["coco_as"] = &cocoASGetter{url: strings.TrimRight(c.URL, "/"),
			http: &http.Client{}, attester: o.Attester, retry: retry}
	}
	if o.Config.EventlogConfig.EnableEventlog {
		path := o.EventLogPath
		if path == "" {
			path = DefaultEventLogPath
		}
		l, err := OpenEventLog(path)
		if err != nil {
			return nil, err
		}
		a.eventLog = l
	}
	return a, nil
}

// Close releases the event log.
func (a *Agent) Close() error {
	if a.eventLog != nil {
		return a.eventLog.Close()
	}
	return nil
}

// Tee is the TEE the agent attests.
func (a *Agent) Tee() protocol.Tee { return a.attester.Tee() }

// Evidence returns the TEE's evidence with runtimeData as its report data,
// unhashed, as guest-components does: callers pass a digest that fits.
func (a *Agent) Evidence(ctx context.Context, runtimeData []byte) ([]byte, error) {
	limit := a.attester.Tee().ReportDataSize()
	if limit == 0 {
		limit = maxRuntimeData
	}
	if len(runtimeData) > limit {
		return nil, fmt.Errorf("%w: runtime data is %d bytes, %s allows %d", ErrInvalidRequest, len(runtimeData), a.Tee(), limit)
	}
	return a.attester.Evidence(ctx, runtimeData)
}

// Token returns a token of type typ ("kbs" or "coco_as"), cached until
// shortly before it expires.
func (a *Agent) Token(ctx context.Context, typ string) ([]byte, error) {
	if typ != "kbs" && typ != "coco_as" {
		return nil, fmt.Errorf("%w %q", ErrTokenType, typ)
	}
	g, ok := a.getters[typ]
	if !ok {
		return nil, fmt.Errorf("%w: [token_configs.%s] is missing", ErrNotConfigured, typ)
	}
	if answer, ok := a.cache.get(typ); ok {
		return answer, nil
	}
	// One attestation at a time: concurrent callers share its token.
	a.tokenMu.Lock()
	defer a.tokenMu.Unlock()
	if answer, ok := a.cache.get(typ); ok {
		return answer, nil
	}
	answer, token, err := g.get(ctx)
	if err != nil {
		return nil, err
	}
	a.cache.put(typ, answer, token)
	return answer, nil
}

// ExtendRuntimeMeasurement records ev in the event log and extends the
// TEE's register for pcr (init_pcr when nil) with the record's digest.
// As guest-components: NOT_ENABLED without an event log, NOT_SUPPORTED on a
// TEE without runtime registers, and nothing is recorded in either case.
func (a *Agent) ExtendRuntimeMeasurement(ctx context.Context, ev Event, pcr *uint64) (aapb.RuntimeMeasurementResult, error) {
	if err := ev.Validate(); err != nil {
		return 0, err
	}
	if a.eventLog == nil {
		return aapb.RuntimeMeasurementResult_NOT_ENABLED, nil
	}
	m, ok := a.attester.(RuntimeMeasurer)
	if !ok {
		return aapb.RuntimeMeasurementResult_NOT_SUPPORTED, nil
	}
	index := a.initPCR
	if pcr != nil {
		index = *pcr
	}
	reg, h, err := m.RuntimeRegister(index)
	if errors.Is(err, errors.ErrUnsupported) {
		return aapb.RuntimeMeasurementResult_NOT_SUPPORTED, nil
	}
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	rec, err := EncodeRecord(ev, reg, h)
	if err != nil {
		return 0, err
	}
	a.measureMu.Lock()
	defer a.measureMu.Unlock()
	if a.logErr != nil {
		return 0, a.logErr
	}
	if err := m.ExtendRuntimeRegister(ctx, index, rec.Digest); err != nil {
		return 0, err
	}
	if err := a.eventLog.Append(rec); err != nil {
		// The register moved without its record: later replays would
		// fail, so refuse to extend any further.
		a.logErr = fmt.Errorf("%w: %w", ErrEventLog, err)
		return 0, a.logErr
	}
	return aapb.RuntimeMeasurementResult_OK, nil
}

// BindInitData binds the initdata digest to the TEE: checked against the
// launch-time field (SNP HOST_DATA, TDX MRCONFIGID) or extended (TPM PCR 8).
// A TEE with neither accepts any digest, as guest-components.
func (a *Agent) BindInitData(ctx context.Context, digest []byte) (bound bool, err error) {
	if len(digest) == 0 || len(digest) > 64 {
		return false, fmt.Errorf("%w: initdata digest of %d bytes", ErrInvalidRequest, len(digest))
	}
	b, ok := a.attester.(InitDataBinder)
	if !ok {
		return false, nil
	}
	if err := b.BindInitData(ctx, digest); err != nil {
		return false, fmt.Errorf("%w: %w", ErrInitData, err)
	}
	return true, nil
}
