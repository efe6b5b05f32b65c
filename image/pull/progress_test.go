package pull

import (
	"context"
	"path/filepath"
	"testing"
)

// TestPullProgress: a pull reports its totals first, then monotonic bytes
// and every layer, and ends with all the manifest's bytes read.
func TestPullProgress(t *testing.T) {
	e := newEnv(t)
	e.reg.Push(t, appImage(t), "cocoon/app:v1", nil)
	var got []Progress
	o := Options{Progress: func(p Progress) { got = append(got, p) }}
	if _, err := e.puller(o).Pull(context.Background(), "example.com/cocoon/app:v1", filepath.Join(e.parent, "b")); err != nil {
		t.Fatal(err)
	}
	if len(got) < 4 {
		t.Fatalf("%d reports, want the start, one per layer and the end: %+v", len(got), got)
	}
	first, last := got[0], got[len(got)-1]
	if first.Layers != 2 || first.Total <= 0 || first.Done != 0 || first.Finished {
		t.Fatalf("first report %+v", first)
	}
	if !last.Finished || last.LayersDone != 2 || last.Done != last.Total || last.Total != first.Total {
		t.Fatalf("last report %+v (first %+v)", last, first)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Done < got[i-1].Done || got[i].LayersDone < got[i-1].LayersDone || got[i].Elapsed < got[i-1].Elapsed {
			t.Fatalf("report %d went back: %+v after %+v", i, got[i], got[i-1])
		}
	}
}
