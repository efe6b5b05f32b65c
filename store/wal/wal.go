// Package wal is a durable store.Store for many small, short-lived
// records, such as RCAR sessions: the records live in memory and every
// write is appended to a log and fdatasynced before it is acknowledged.
// Writes that arrive while the log syncs share the next sync (group
// commit; while writers come concurrently, a sync also waits a moment for
// more of them), and a lone writer pays one sync of data, not the page copies
// and two syncs of a B+tree commit. The log is replayed on open and
// rewritten with only the live records when it has grown well past them.
//
// A write is acknowledged only once durable; a read may see a write whose
// sync is still under way (its writer has not been answered yet).
package wal

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cocoon-cc/cocoon/store"
)

// FileName is the log inside the store's directory.
const FileName = "store.wal"

// ErrClosed is returned for a write to a closed store.
var ErrClosed = errors.New("store: closed")

const (
	headerSize = 8 // body length, CRC-32C of the body
	maxRecord  = 64 << 20
	opPut      = 1
	opDelete   = 2
	// The log grows in preallocated steps, so that appending does not
	// change the file's size and a sync flushes data alone.
	growStep = 16 << 20
	// compactAt is the log size from which a log more than twice the size
	// of its live records is rewritten.
	compactAt = 64 << 20
)

// While writers come concurrently, a sync waits for more of them in steps
// of commitStep, for as long as each step brings at least one, up to
// maxCommitDelay: when writers keep arriving (a busy KBS, whose CPU a sync
// costs), a dozen share a sync; when they come and go (a few clients, who
// wait for it), the sync waits about as long as one step.
var (
	commitStep     = 500 * time.Microsecond
	maxCommitDelay = 3 * time.Millisecond
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Store is a log-backed store.Store.
type Store struct {
	dir string

	mu      sync.Mutex
	data    map[string]map[string][]byte
	live    int64 // encoded bytes of the live records
	pending []byte
	waiters []chan error
	closed  bool
	failed  error // a failed log write: later writes fail too

	// The committer's own: the log and where the next record goes.
	f          *os.File
	end, alloc int64
	prealloc   bool

	syncs atomic.Int64 // appends synced, for tests

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
}

// Open opens (creating if needed) the store in dir: it replays the log,
// up to a torn last record if the previous process died writing it, and
// rewrites it with the live records.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", dir, err)
	}
	s := &Store{dir: dir, data: map[string]map[string][]byte{}, prealloc: true,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if err := s.replay(); err != nil {
		return nil, err
	}
	if err := s.rewrite(s.data); err != nil {
		return nil, err
	}
	go s.commit()
	return s, nil
}

func (s *Store) path() string { return filepath.Join(s.dir, FileName) }

// replay applies the log's records, stopping at the first that is
// incomplete or corrupt (a write the crash interrupted, never
// acknowledged) or at the preallocated zeros after the last.
func (s *Store) replay() error {
	f, err := os.Open(s.path())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: open log: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var hdr [headerSize]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil
		}
		n := binary.LittleEndian.Uint32(hdr[:4])
		if n == 0 || n > maxRecord {
			return nil
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil || crc32.Checksum(body, crcTable) != binary.LittleEndian.Uint32(hdr[4:]) {
			return nil
		}
		op, ns, key, value, ok := decode(body)
		if !ok {
			return nil
		}
		if op == opDelete {
			value = nil
		}
		s.set(ns, key, value)
	}
}

// encode appends a record: header, then op, namespace and key (each with
// its length) and the value.
func encode(buf []byte, ns, key string, value []byte) []byte {
	op := byte(opPut)
	if value == nil {
		op = opDelete
	}
	start := len(buf)
	buf = append(buf, make([]byte, headerSize)...)
	buf = append(buf, op)
	buf = binary.AppendUvarint(buf, uint64(len(ns)))
	buf = append(buf, ns...)
	buf = binary.AppendUvarint(buf, uint64(len(key)))
	buf = append(buf, key...)
	buf = append(buf, value...)
	body := buf[start+headerSize:]
	binary.LittleEndian.PutUint32(buf[start:], uint32(len(body)))
	binary.LittleEndian.PutUint32(buf[start+4:], crc32.Checksum(body, crcTable))
	return buf
}

func decode(body []byte) (op byte, ns, key string, value []byte, ok bool) {
	if len(body) < 1 {
		return 0, "", "", nil, false
	}
	op, body = body[0], body[1:]
	str := func() (string, bool) {
		n, k := binary.Uvarint(body)
		if k <= 0 || n > uint64(len(body)-k) {
			return "", false
		}
		v := string(body[k : k+int(n)])
		body = body[k+int(n):]
		return v, true
	}
	var ok1, ok2 bool
	ns, ok1 = str()
	key, ok2 = str()
	return op, ns, key, body, ok1 && ok2 && (op == opPut || op == opDelete)
}

func recordSize(ns, key string, value []byte) int64 {
	return int64(headerSize + 1 + 2*binary.MaxVarintLen64 + len(ns) + len(key) + len(value))
}

// set applies a record to memory; value nil deletes.
func (s *Store) set(ns, key string, value []byte) {
	m := s.data[ns]
	if old, ok := m[key]; ok {
		s.live -= recordSize(ns, key, old)
		delete(m, key)
	}
	if value == nil {
		return
	}
	if m == nil {
		m = map[string][]byte{}
		s.data[ns] = m
	}
	m[key] = value
	s.live += recordSize(ns, key, value)
}

// rewrite replaces the log with one holding the records of data (which
// the caller no longer changes), synced, and makes it the log appended
// to.
func (s *Store) rewrite(data map[string]map[string][]byte) error {
	tmp := s.path() + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("store: rewrite log: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var buf []byte
	for ns, m := range data {
		for key, v := range m {
			buf = encode(buf[:0], ns, key, v)
			w.Write(buf)
		}
	}
	end, _ := f.Seek(0, io.SeekCurrent)
	end += int64(w.Buffered())
	// In order: the new log replaces the old one only once it is whole
	// and synced.
	err = w.Flush()
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, s.path())
	}
	if err == nil {
		err = syncDir(s.dir)
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("store: rewrite log: %w", err)
	}
	if s.f != nil {
		s.f.Close()
	}
	s.f, s.end, s.alloc = f, end, end
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// commit writes and syncs what the writers queued until Close. While
// writers come concurrently (the last sync answered more than one), it
// waits for more of them before each sync (see commitStep), as
// PostgreSQL's commit_delay does: a sync costs the same for one record or
// many. A lone writer never waits.
func (s *Store) commit() {
	defer close(s.done)
	concurrent := false
	for {
		select {
		case <-s.kick:
		case <-s.stop:
			s.close()
			return
		}
		if concurrent && !s.gather() {
			s.close()
			return
		}
		concurrent = s.flush() > 1
	}
}

// gather waits while writers keep coming, one step at a time; false if
// the store is closing.
func (s *Store) gather() bool {
	t := time.NewTimer(commitStep)
	defer t.Stop()
	for waited := commitStep; ; waited += commitStep {
		before := s.queued()
		select {
		case <-t.C:
		case <-s.stop:
			return false
		}
		if waited >= maxCommitDelay || s.queued() == before {
			return true
		}
		t.Reset(commitStep)
	}
}

// queued is the number of writers waiting for the next sync.
func (s *Store) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waiters)
}

// close syncs the writes queued before Close and closes the log.
func (s *Store) close() {
	s.flush()
	s.f.Close()
}

// flush writes the queued records in one append and one sync, answers
// their writers (it returns how many), and compacts the log when it is
// due.
func (s *Store) flush() int {
	s.mu.Lock()
	buf, waiters := s.pending, s.waiters
	s.pending, s.waiters = nil, nil
	compact := s.end > compactAt && s.end > 2*s.live
	var snapshot map[string]map[string][]byte
	if compact {
		// The snapshot holds every record queued so far: the rewritten
		// log makes them durable.
		snapshot = make(map[string]map[string][]byte, len(s.data))
		for ns, m := range s.data {
			snapshot[ns] = maps.Clone(m)
		}
	}
	s.mu.Unlock()
	if len(waiters) == 0 && !compact {
		return 0
	}
	var err error
	if compact {
		err = s.rewrite(snapshot)
	} else {
		err = s.append(buf)
	}
	if err != nil {
		s.mu.Lock()
		s.failed = fmt.Errorf("store: log: %w", err)
		err = s.failed
		s.mu.Unlock()
	}
	for _, w := range waiters {
		w <- err
	}
	return len(waiters)
}

// append writes buf at the end of the log and syncs it.
func (s *Store) append(buf []byte) error {
	if need := s.end + int64(len(buf)); need > s.alloc && s.prealloc {
		grow := max(growStep, need-s.alloc)
		if err := unix.Fallocate(int(s.f.Fd()), 0, s.alloc, grow); err != nil {
			s.prealloc = false // the file grows with each write instead
		} else if err := s.f.Sync(); err != nil { // the new size
			return err
		} else {
			s.alloc += grow
		}
	}
	if _, err := s.f.WriteAt(buf, s.end); err != nil {
		return err
	}
	s.end += int64(len(buf))
	s.alloc = max(s.alloc, s.end)
	s.syncs.Add(1)
	return unix.Fdatasync(int(s.f.Fd()))
}

// write queues a record and waits until it is durable.
func (s *Store) write(ns, key string, fn func([]byte) ([]byte, error)) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.failed != nil {
		s.mu.Unlock()
		return s.failed
	}
	old, had := s.data[ns][key]
	v, err := fn(slices.Clone(old))
	if err != nil || (v == nil && !had) {
		s.mu.Unlock()
		return err
	}
	if v != nil {
		v = slices.Clip(slices.Clone(v))
	}
	s.set(ns, key, v)
	s.pending = encode(s.pending, ns, key, v)
	done := make(chan error, 1)
	s.waiters = append(s.waiters, done)
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default: // the committer is already due to run
	}
	return <-done
}

// Get implements store.Store.
func (s *Store) Get(_ context.Context, ns, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.data[ns][key]
	if !ok {
		return nil, store.ErrNotFound
	}
	return slices.Clone(v), nil
}

// Put implements store.Store.
func (s *Store) Put(_ context.Context, ns, key string, value []byte) error {
	if value == nil {
		value = []byte{}
	}
	return s.write(ns, key, func([]byte) ([]byte, error) { return value, nil })
}

// Delete implements store.Store.
func (s *Store) Delete(_ context.Context, ns, key string) error {
	return s.write(ns, key, func([]byte) ([]byte, error) { return nil, nil })
}

// List implements store.Store.
func (s *Store) List(_ context.Context, ns string) ([]string, error) {
	s.mu.Lock()
	keys := make([]string, 0, len(s.data[ns]))
	for k := range s.data[ns] {
		keys = append(keys, k)
	}
	s.mu.Unlock()
	slices.Sort(keys)
	return keys, nil
}

// Update implements store.Store.
func (s *Store) Update(_ context.Context, ns, key string, fn func([]byte) ([]byte, error)) error {
	return s.write(ns, key, fn)
}

// Close waits for the queued writes and closes the log.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	return nil
}
