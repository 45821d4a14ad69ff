package main

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ten := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i + 1)
	}
	tests := []struct {
		name    string
		samples []time.Duration
		p       float64
		want    time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample", []time.Duration{7}, 99, 7},
		{"minimum", ten, 0, 1},
		{"median of even count is the lower middle", ten, 50, 5},
		{"p99 of ten is the maximum", ten, 99, 10},
		{"maximum", ten, 100, 10},
		{"p50 of hundred", hundred, 50, 50},
		{"p99 of hundred", hundred, 99, 99},
		{"p99.9 of hundred rounds up", hundred, 99.9, 100},
		{"above 100 clamps", ten, 150, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.samples, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.samples, tt.p, got, tt.want)
			}
		})
	}
}

func TestSortedCopyLeavesInputAlone(t *testing.T) {
	in := []time.Duration{3, 1, 2}
	out := sortedCopy(in)
	if in[0] != 3 || in[1] != 1 || in[2] != 2 {
		t.Errorf("input changed: %v", in)
	}
	if out[0] != 1 || out[1] != 2 || out[2] != 3 {
		t.Errorf("sortedCopy = %v, want [1 2 3]", out)
	}
}

func TestMessageBodyRoundTrip(t *testing.T) {
	sentAt := time.Unix(1700000000, 123456789)
	key, got, ok := parseMessageBody(messageBody(15, 4242, sentAt))
	if !ok || key != newMessageKey(15, 4242) || !got.Equal(sentAt) {
		t.Errorf("round trip = %v %v %v", key, got, ok)
	}
	for _, bad := range []string{"", "history 1 of room 2", "1:2", "a:2:3", "1:-2:3", "1:2:3:4"} {
		if _, _, ok := parseMessageBody(bad); ok {
			t.Errorf("parseMessageBody(%q) accepted", bad)
		}
	}
}
