//! Kernel events: ring-buffer records decoded ([`decode`]) and enriched into
//! the decision record every sink receives ([`enrich`]).

pub mod decode;
pub mod enrich;
mod names;
mod procs;
