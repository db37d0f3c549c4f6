//! The gateway store.
