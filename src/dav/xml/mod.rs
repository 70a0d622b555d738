//! Streaming XML: href rewriting between the local tree and upstream, and inspection of
//! client request bodies.
