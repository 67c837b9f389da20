package processor

import (
	"compress/gzip"
	"errors"
	"io"
)

// inflater decompresses a gzip body chunk by chunk as Envoy passes it on.
// compress/gzip wants a reader it can block on, so it runs in a goroutine
// fed one chunk at a time; Write returns as soon as the decompressor asks
// for more input, with everything that chunk decoded to. Nothing is ever
// decompressed twice, and only the decompressor's window is held.
type inflater struct {
	in     chan []byte
	need   chan struct{}
	out    chan []byte
	done   chan error
	stop   chan struct{}
	hungry bool // the decompressor is waiting for input
	ended  bool
}

func newInflater() *inflater {
	z := &inflater{in: make(chan []byte), need: make(chan struct{}), out: make(chan []byte),
		done: make(chan error, 1), stop: make(chan struct{})}
	go z.run()
	return z
}

// feed is the reader the decompressor blocks on. It implements
// io.ByteReader so gzip reads exactly what it needs and no further.
type feed struct {
	z   *inflater
	cur []byte
}

func (f *feed) fill() error {
	for len(f.cur) == 0 {
		select {
		case f.z.need <- struct{}{}:
		case <-f.z.stop:
			return io.ErrUnexpectedEOF
		}
		var ok bool
		select {
		case f.cur, ok = <-f.z.in:
			if !ok {
				return io.EOF
			}
		case <-f.z.stop:
			return io.ErrUnexpectedEOF
		}
	}
	return nil
}

func (f *feed) Read(p []byte) (int, error) {
	if err := f.fill(); err != nil {
		return 0, err
	}
	n := copy(p, f.cur)
	f.cur = f.cur[n:]
	return n, nil
}

func (f *feed) ReadByte() (byte, error) {
	if err := f.fill(); err != nil {
		return 0, err
	}
	b := f.cur[0]
	f.cur = f.cur[1:]
	return b, nil
}

func (z *inflater) run() {
	zr, err := gzip.NewReader(&feed{z: z})
	if err != nil {
		z.done <- err
		return
	}
	buf := make([]byte, 16<<10)
	for {
		n, err := zr.Read(buf)
		if n > 0 {
			select {
			case z.out <- append([]byte(nil), buf[:n]...):
			case <-z.stop:
				z.done <- errors.New("inflater stopped")
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			z.done <- err
			return
		}
	}
}

// Write decodes chunk and returns the plain bytes it yielded.
func (z *inflater) Write(chunk []byte) ([]byte, error) {
	if z.ended || len(chunk) == 0 {
		return nil, nil
	}
	if !z.hungry && !z.wait(nil) {
		return nil, z.finish()
	}
	z.hungry = false
	z.in <- chunk
	var plain []byte
	if !z.wait(&plain) {
		return plain, z.finish()
	}
	return plain, nil
}

// wait collects output until the decompressor asks for input (true) or
// ends (false).
func (z *inflater) wait(plain *[]byte) bool {
	for {
		select {
		case b := <-z.out:
			if plain != nil {
				*plain = append(*plain, b...)
			}
		case <-z.need:
			z.hungry = true
			return true
		case err := <-z.done:
			z.ended = true
			z.done <- err // keep it for finish
			return false
		}
	}
}

func (z *inflater) finish() error {
	err := <-z.done
	close(z.stop)
	return err
}

// Close ends the input and returns what the decompressor still yields.
func (z *inflater) Close() ([]byte, error) {
	if z.ended {
		return nil, nil
	}
	z.ended = true
	if !z.hungry {
		var plain []byte
		if !z.wait(&plain) {
			return plain, z.finish()
		}
	}
	close(z.in)
	var plain []byte
	for {
		select {
		case b := <-z.out:
			plain = append(plain, b...)
		case <-z.need: // cannot happen after EOF; keep draining
		case err := <-z.done:
			close(z.stop)
			return plain, err
		}
	}
}

// Abandon stops the goroutine without waiting for the rest of the input.
func (z *inflater) Abandon() {
	if !z.ended {
		z.ended = true
		close(z.stop)
	}
}
