//! A durable, size-bounded, acknowledged on-disk queue.
