package model

import (
	"testing"
	"time"
)

func TestSameMesh(t *testing.T) {
	base := func() *Snapshot {
		return &Snapshot{
			Namespaces: []Namespace{{Name: "shop"}},
			Services:   []Service{{Namespace: "shop", Name: "product", Ports: []ServicePort{{Port: 80}}}},
		}
	}
	observed := base()
	observed.ObservedAt = time.Now()
	other := base()
	other.Services[0].Ports[0].Port = 81
	otherObserved := base()
	otherObserved.Services[0].Ports[0].Port = 81
	otherObserved.ObservedAt = observed.ObservedAt
	for _, tt := range []struct {
		name string
		a, b *Snapshot
		want bool
	}{
		{"equal", base(), base(), true},
		{"equal but observed at different times", base(), observed, true},
		{"a different port", base(), other, false},
		{"a different port, observed at the same time", observed, otherObserved, false},
		{"one is nil", base(), nil, false},
		{"both nil", nil, nil, true},
	} {
		if got := tt.a.SameMesh(tt.b); got != tt.want {
			t.Errorf("%s: SameMesh = %v, want %v", tt.name, got, tt.want)
		}
		if got := tt.b.SameMesh(tt.a); got != tt.want {
			t.Errorf("%s, the other way round: SameMesh = %v, want %v", tt.name, got, tt.want)
		}
	}
	if observed.ObservedAt.IsZero() {
		t.Error("SameMesh changed the snapshot it was given")
	}
}
