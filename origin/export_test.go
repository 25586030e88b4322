package origin

import "net/http"

// PanicHandler is an API route whose handler panics, wrapped like every
// route, so tests can see the recovery answer 500 internal.
func PanicHandler(s *Server) http.Handler {
	return s.instrument("test panic", func(http.ResponseWriter, *http.Request) error { panic("boom") })
}

// ErrorHandler is an API route that returns err, so tests can see how the
// one error mapping answers errors no real input produces.
func ErrorHandler(s *Server, err error) http.Handler {
	return s.instrument("test error", func(http.ResponseWriter, *http.Request) error { return err })
}
