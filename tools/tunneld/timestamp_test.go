package tunneld

import (
	"encoding/json"
	"math"
	"strconv"
	"testing"
	"time"
)

// timestampAnswers are createdAt values of a control plane's answer, as the
// console reads them, and the time each gives (the zero time: refused).
var timestampAnswers = []struct {
	in   string
	want time.Time
}{
	{"1700000000", time.Unix(1700000000, 0).UTC()},
	{"1700000000.123", time.UnixMilli(1700000000123).UTC()},
	{"1.7000000001239E9", time.UnixMilli(1700000000124).UTC()},
	{"0", time.Unix(0, 0).UTC()},
	{"-1.5", time.UnixMilli(-1500).UTC()},
	{"253402300799.999", time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC)},
	{"253402300799.9996", time.Time{}}, // 10000-01-01 in milliseconds
	{`"1700000000"`, time.Time{}},
	{`"2026-01-01T00:00:00Z"`, time.Time{}},
	{"true", time.Time{}},
	{"1e400", time.Time{}},
	// Past the year 9999: time.Time's own JSON refuses such a time, and
	// milliseconds past the int64 range became whatever the CPU's float
	// conversion gives (the year -292275055 on amd64).
	{"253402300800", time.Time{}},
	{"-62167219200", time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)},
	{"-62167219200.001", time.Time{}},
	{"1e300", time.Time{}},
	{"-9.3e15", time.Time{}},
}

func TestTimestampUnmarshal(t *testing.T) {
	for _, tc := range timestampAnswers {
		var got Timestamp
		err := got.UnmarshalJSON([]byte(tc.in))
		if tc.want.IsZero() {
			if err == nil {
				t.Errorf("UnmarshalJSON(%s) = %v, want an error", tc.in, got.Time)
			}
			continue
		}
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("UnmarshalJSON(%s) = %v, %v, want %v", tc.in, got.Time, err, tc.want)
		}
	}
	// null leaves the time as it was, as encoding/json leaves a field.
	was := Timestamp{time.Unix(1700000000, 0)}
	if err := json.Unmarshal([]byte(`{"createdAt":null}`), &struct {
		CreatedAt *Timestamp `json:"createdAt"`
	}{&was}); err != nil || !was.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("createdAt null: %v, %v; want the time unchanged", was.Time, err)
	}
}

// FuzzTimestamp reads any JSON value as an answer's timestamp: one accepted
// is the number's milliseconds and writes back as the same time (MarshalJSON);
// a refusal, or null, leaves the time as it was.
func FuzzTimestamp(f *testing.F) {
	for _, tc := range timestampAnswers {
		f.Add([]byte(tc.in))
	}
	f.Add([]byte("null"))
	f.Fuzz(func(t *testing.T, b []byte) {
		was := time.Unix(1, 2)
		ts := Timestamp{was}
		err := ts.UnmarshalJSON(b)
		var f *float64
		if err != nil || json.Unmarshal(b, &f) != nil || f == nil { // refused, or null
			if !ts.Equal(was) {
				t.Fatalf("UnmarshalJSON(%q) = %v (%v), want the time unchanged", b, ts.Time, err)
			}
			return
		}
		if ms := math.Round(*f * 1000); float64(ts.UnixMilli()) != ms {
			t.Fatalf("UnmarshalJSON(%q) = %v, %d ms, want %s ms", b, ts.Time, ts.UnixMilli(), strconv.FormatFloat(ms, 'f', -1, 64))
		}
		enc, err := ts.MarshalJSON()
		if err != nil {
			t.Fatalf("MarshalJSON(%v) = %v", ts.Time, err)
		}
		var back Timestamp
		if err := back.UnmarshalJSON(enc); err != nil || !back.Equal(ts.Time) {
			t.Fatalf("UnmarshalJSON(%q) = %v, written %s, read back as %v, %v", b, ts.Time, enc, back.Time, err)
		}
	})
}
