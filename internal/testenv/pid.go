package testenv

// PID is the process id, for reading its CPU time (make loadtest).
func (s *Sidecar) PID() int { return s.cmd.Process.Pid }

// PID is the process id.
func (e *Envoy) PID() int { return e.cmd.Process.Pid }
