// Package sample is the attester of the "sample" TEE: it signs nothing and
// proves nothing. It lets the whole protocol run where no TEE exists.
package sample

import (
	"context"
	"encoding/base64"
	"encoding/json"

	"github.com/cocoon-cc/cocoon/protocol"
)

// Attester implements attester.Attester.
type Attester struct {
	// SVN is reported as the security version; "1" when empty.
	SVN string
}

// Tee implements attester.Attester.
func (Attester) Tee() protocol.Tee { return protocol.TeeSample }

// Evidence implements attester.Attester.
func (a Attester) Evidence(_ context.Context, reportData []byte) (json.RawMessage, error) {
	svn := a.SVN
	if svn == "" {
		svn = "1"
	}
	return json.Marshal(map[string]string{"svn": svn, "report_data": base64.StdEncoding.EncodeToString(reportData)})
}
