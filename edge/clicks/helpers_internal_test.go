package clicks

import (
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/proto/linkpb"
)

func marshalForTest(b *linkpb.ClickBatch) ([]byte, error) { return link.MarshalClickBatch(b) }
