package bus

import (
	"context"
	"errors"
	"testing"
	"time"
)

type ctxKey struct{}

func TestCallContext(t *testing.T) {
	parent, cancelParent := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
	defer cancelParent()

	t.Run("lazy done and release", func(t *testing.T) {
		c := newCallContext(parent, time.Minute)
		if d, ok := c.Deadline(); !ok || time.Until(d) < 50*time.Second {
			t.Fatalf("deadline %v %v", d, ok)
		}
		if c.Value(ctxKey{}) != "v" {
			t.Fatal("value of the parent not seen")
		}
		if c.Err() != nil {
			t.Fatal(c.Err())
		}
		done := c.Done()
		select {
		case <-done:
			t.Fatal("done before release")
		default:
		}
		c.release()
		<-done
		if !errors.Is(c.Err(), context.Canceled) {
			t.Fatalf("err after release %v", c.Err())
		}
	})
	t.Run("deadline fixed when first asked", func(t *testing.T) {
		c := newCallContext(parent, time.Minute)
		d1, _ := c.Deadline()
		d2, _ := c.Deadline()
		if !d1.Equal(d2) {
			t.Fatalf("deadline moved from %v to %v", d1, d2)
		}
		inner, _ := c.Done(), c.Err()
		if d, ok := c.inner.Deadline(); !ok || !d.Equal(d1) || inner == nil {
			t.Fatalf("Done's context has deadline %v %v, want %v", d, ok, d1)
		}
		c.release()
	})
	t.Run("release without done", func(t *testing.T) {
		c := newCallContext(parent, time.Minute)
		c.release()
		if !errors.Is(c.Err(), context.Canceled) {
			t.Fatalf("err %v", c.Err())
		}
		<-c.Done() // a late Done is closed at once
	})
	t.Run("deadline", func(t *testing.T) {
		c := newCallContext(parent, 10*time.Millisecond)
		select {
		case <-c.Done():
		case <-time.After(testTimeout):
			t.Fatal("deadline never fired")
		}
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Fatalf("err %v", c.Err())
		}
		c.release()
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Fatalf("err after release %v", c.Err())
		}
	})
	t.Run("deadline without done", func(t *testing.T) {
		c := newCallContext(parent, time.Millisecond)
		waitFor(t, "the deadline", func() bool { return errors.Is(c.Err(), context.DeadlineExceeded) })
		c.release()
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Fatalf("err after release %v", c.Err())
		}
	})
	t.Run("child context", func(t *testing.T) {
		c := newCallContext(parent, time.Minute)
		child, cancel := context.WithTimeout(c, time.Hour)
		defer cancel()
		if d, _ := child.Deadline(); time.Until(d) > time.Minute {
			t.Fatal("child does not inherit the deadline")
		}
		c.release()
		select {
		case <-child.Done():
		case <-time.After(testTimeout):
			t.Fatal("child not cancelled by release")
		}
	})
	t.Run("parent cancelled", func(t *testing.T) {
		p, cancel := context.WithCancel(context.Background())
		c := newCallContext(p, time.Minute)
		done := c.Done()
		cancel()
		<-done
		c2 := newCallContext(p, time.Minute)
		if !errors.Is(c2.Err(), context.Canceled) {
			t.Fatalf("err %v", c2.Err())
		}
	})
}
