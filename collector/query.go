package collector

import (
	"errors"
	"fmt"
	"time"
)

// ErrInvalidRange is a stats query whose from, to or interval cannot be
// answered: unparsable, from after to, or more than MaxIntervals
// intervals. The origin answers it 400 invalid_range.
var ErrInvalidRange = errors.New("invalid_range")

// RangeError says why a range was refused; it wraps ErrInvalidRange.
type RangeError struct {
	Field string // "from", "to" or "interval"
	Msg   string
}

func (e *RangeError) Error() string { return e.Msg }
func (e *RangeError) Unwrap() error { return ErrInvalidRange }

// MaxIntervals bounds the series of one query.
const MaxIntervals = 10000

// DefaultRange is the range of a query without from and to.
const DefaultRange = 7 * 24 * time.Hour

// Interval is a rollup granularity.
type Interval int

// The intervals, finest first.
const (
	Minute Interval = iota
	Hour
	Day
	numLevels
)

var intervalNames = [numLevels]string{"minute", "hour", "day"}

func (i Interval) String() string { return intervalNames[i] }

// Duration is the length of one interval.
func (i Interval) Duration() time.Duration {
	switch i {
	case Minute:
		return time.Minute
	case Hour:
		return time.Hour
	default:
		return 24 * time.Hour
	}
}

// floor is the start (Unix seconds, UTC) of the interval holding unix.
func (i Interval) floor(unix int64) int64 {
	d := int64(i.Duration() / time.Second)
	f := unix - unix%d
	if unix < 0 && unix%d != 0 {
		f -= d
	}
	return f
}

// Range is a validated stats query range: [From, To) aligned outward to
// whole intervals.
type Range struct {
	From, To time.Time
	Interval Interval
}

// Buckets is the number of intervals in the range.
func (r Range) Buckets() int {
	return int(r.To.Sub(r.From) / r.Interval.Duration())
}

// defaultInterval picks the interval of a query that names none: minute
// up to 6 hours, hour up to 31 days, day beyond.
func defaultInterval(d time.Duration) Interval {
	switch {
	case d <= 6*time.Hour:
		return Minute
	case d <= 31*24*time.Hour:
		return Hour
	default:
		return Day
	}
}

// earliest and latest bound the times a query may name.
var (
	earliest = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	latest   = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

// ParseRange validates the from, to and interval parameters of a stats
// query ("" when absent). from and to are RFC 3339; the default is the
// DefaultRange up to now. interval is "minute", "hour" or "day"; the
// default depends on the range's length (see defaultInterval). The range
// is aligned outward to whole intervals; a range of more than
// MaxIntervals intervals, or from after to, is refused.
func ParseRange(from, to, interval string, now time.Time) (Range, error) {
	var r Range
	parse := func(field, v string) (time.Time, error) {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return time.Time{}, &RangeError{field, fmt.Sprintf("%s must be an RFC 3339 time, e.g. 2026-01-02T15:04:05Z", field)}
		}
		if t.Before(earliest) || !t.Before(latest) {
			return time.Time{}, &RangeError{field, fmt.Sprintf("%s must lie in [2000, 2200)", field)}
		}
		return t.UTC(), nil
	}
	end := now.UTC()
	if to != "" {
		t, err := parse("to", to)
		if err != nil {
			return r, err
		}
		end = t
	}
	start := end.Add(-DefaultRange)
	if from != "" {
		t, err := parse("from", from)
		if err != nil {
			return r, err
		}
		start = t
	}
	if start.After(end) {
		return r, &RangeError{"from", "from must not be after to"}
	}
	switch interval {
	case "":
		r.Interval = defaultInterval(end.Sub(start))
	case "minute":
		r.Interval = Minute
	case "hour":
		r.Interval = Hour
	case "day":
		r.Interval = Day
	default:
		return r, &RangeError{"interval", `interval must be "minute", "hour" or "day"`}
	}
	d := int64(r.Interval.Duration() / time.Second)
	f := r.Interval.floor(start.Unix())
	t := r.Interval.floor(end.Unix())
	if t < end.Unix() || end.Nanosecond() > 0 || t == f {
		t += d
	}
	if (t-f)/d > MaxIntervals {
		return r, &RangeError{"interval", fmt.Sprintf("the range holds %d %s intervals; at most %d are allowed", (t-f)/d, r.Interval, MaxIntervals)}
	}
	r.From, r.To = time.Unix(f, 0).UTC(), time.Unix(t, 0).UTC()
	return r, nil
}
