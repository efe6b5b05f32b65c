package agent

import (
	"errors"
	"slices"
	"testing"
)

func TestParsePCIPath(t *testing.T) {
	if s, err := parsePCIPath("10/00"); err != nil || !slices.Equal(s, []int{0x10, 0}) {
		t.Fatalf("%v %v", s, err)
	}
	for _, bad := range []string{"", "10/", "1/00", "20/00", "0x/00", "10/00/00/00/00/00/00/00/00", "../00", "+1/00"} {
		if _, err := parsePCIPath(bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// FuzzParsePCIPath: a storage's source comes from the host.
func FuzzParsePCIPath(f *testing.F) {
	f.Add("10/00")
	f.Add("1f/1f/00")
	f.Fuzz(func(t *testing.T, p string) {
		slots, err := parsePCIPath(p)
		if err != nil {
			return
		}
		for _, s := range slots {
			if s < 0 || s > 0x1f {
				t.Fatalf("%q: slot %d", p, s)
			}
		}
	})
}
