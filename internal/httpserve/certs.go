package httpserve

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// reloadCheck is how often the certificate's files are looked at again.
const reloadCheck = 10 * time.Second

// certReloader serves the key pair of its files and reads them again when
// either changed (a renewed certificate: cert-manager's, a Kubernetes
// Secret volume's update, a file replaced by hand), so that a long-running
// server never outlives its certificate. A pair that does not load (the
// certificate written, its key not yet) keeps the previous one served.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamps  [2]fileStamp
	checked time.Time
}

// fileStamp tells a file's versions apart: a Secret volume's update swaps
// a symlink, so the path names another inode.
type fileStamp struct {
	mod, size int64
	ino       uint64
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	stamps, err := r.stat()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	r.cert, r.stamps, r.checked = &cert, stamps, time.Now()
	return r, nil
}

func (r *certReloader) stat() ([2]fileStamp, error) {
	var stamps [2]fileStamp
	for i, f := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return stamps, err
		}
		stamps[i] = fileStamp{mod: fi.ModTime().UnixNano(), size: fi.Size()}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			stamps[i].ino = st.Ino
		}
	}
	return stamps, nil
}

// GetCertificate is tls.Config's: the current pair, reloaded first when
// its files changed since the last look (at most every reloadCheck).
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) >= reloadCheck {
		r.checked = time.Now()
		if err := r.reload(); err != nil {
			r.log.Warn("TLS certificate not reloaded; serving the previous one", "error", err)
		}
	}
	return r.cert, nil
}

func (r *certReloader) reload() error {
	stamps, err := r.stat()
	if err != nil || stamps == r.stamps {
		return err
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("%s, %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert, r.stamps = &cert, stamps
	r.log.Info("TLS certificate reloaded", "file", r.certFile)
	return nil
}
