// Package proto holds linkpop's wire schema (linkpop.proto). The generated
// Go lives in proto/linkpb; `make generate` rebuilds it.
package proto

//go:generate protoc --proto_path=. --go_out=. --go_opt=module=github.com/linkpop/linkpop/proto linkpop.proto
