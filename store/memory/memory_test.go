package memory

import (
	"testing"

	"github.com/cocoon-cc/cocoon/store"
	"github.com/cocoon-cc/cocoon/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return New() })
}
